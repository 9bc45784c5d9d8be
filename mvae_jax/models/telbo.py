"""TELBO, the triple ELBO (Vedantam, Fischer, Huang & Murphy 2018, arXiv:1705.10762), for M modalities.

Generative model p(z) prod_m p(x_m | z); a joint encoder q(z | x_1..x_M) and
one unimodal encoder q(z | x_m) per modality. The objective (the paper's
triple ELBO, its Sec. 3, written for M modalities with the KL weight beta) is
the joint ELBO plus one ELBO per modality, each through its own encoder:

    L = E_q(z|x_1..x_M)[sum_m lambda_m log p(x_m | z)] - beta KL(q(z|x_1..x_M) || p(z))
        + sum_m ( E_q(z|x_m)[lambda_m log p(x_m | z)] - beta KL(q(z|x_m) || p(z)) )

Which parameters each term trains, as the paper and its code (google/joint_vae)
do it: all three kinds of ELBO are optimised together in one stage; the
unimodal ELBOs train only their encoders q(z | x_m): the decoders are held
fixed there (``stop_gradient``), so that p(x_m | z) is fitted by the joint
ELBO alone. Each unimodal KL uses the unimodal posterior's own mean and
variance (not the joint's, a slip in MultiVae's TELBO).

Inference from one modality uses its encoder; from a subset of two or more
short of all, the product of their experts and the prior
(q(z | x_S) ~ p(z) prod_{m in S} q(z | x_m), the paper's product of experts
for partially specified attributes).
``lambda_m`` is ``--likelihood_weights`` (default 1 for every modality).

Incomplete data (``--missing``): the joint ELBO needs every modality (its
encoder reads them all at once), so it is trained on the complete examples
only; each unimodal ELBO, which reads one modality, is trained on every
example that has it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvae_jax import losses
from mvae_jax.modality import Modality
from mvae_jax.models.base import KL_WARMUP_EPOCHS, LIKELIHOOD_WEIGHTS, Model, joint_and_experts, presence

OPTIONS = (LIKELIHOOD_WEIGHTS, KL_WARMUP_EPOCHS)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """TELBO with MLP networks of widths ``config.hidden_dims``, latent ``config.latent_dim``."""
    names = tuple(m.name for m in modalities)
    beta = float(config.beta)
    weights = config.likelihood_weight(names)
    joint, experts, init, encode = joint_and_experts(config, modalities, prior_expert=True)

    def loss(params, batch, rng, epoch=0, beta=beta):
        kl_beta = losses.kl_weight(beta, epoch, config.kl_warmup_epochs)
        keys = jax.random.split(rng, len(modalities) + 1)
        elbo, terms = losses.multimodal_elbo(
            keys[0],
            joint.encode(params, batch),
            lambda z: experts.decode(params, z),
            batch,
            modalities,
            kl_beta,
            weights,
        )
        present = presence(batch, names)  # None: a complete batch
        if present is not None:  # the joint ELBO of the complete examples only
            elbo = jnp.prod(present, axis=0) * elbo
        fixed = {"decoders": jax.lax.stop_gradient(params["decoders"])}
        total = elbo
        for m, key in zip(modalities, keys[1:]):
            elbo_m, terms_m = losses.multimodal_elbo(
                key,
                experts.encode(params, batch, m.name),
                lambda z: experts.decode(fixed, z, (m.name,)),
                batch,
                (m,),
                kl_beta,
                weights,
            )
            if present is not None:
                elbo_m = present[names.index(m.name)] * elbo_m
            total = total + elbo_m
            terms[f"elbo_{m.name}"] = elbo_m
            terms[f"kl_{m.name}"] = terms_m["kl"]
        terms["elbo_joint"] = elbo
        terms["loss"] = -total
        return terms

    return Model("telbo", tuple(modalities), init, loss, encode, experts.decode)
