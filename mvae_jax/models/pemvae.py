"""PEMVAE, the paper's parameter-efficient multimodal VAE: one encoder for every subset of modalities.

Generative model p(z) prod_m p(x_m | z), decoders as JMVAE's. JMVAE and TELBO
train a joint encoder plus a second set of unimodal encoders; this model
trains no unimodal encoders. Its one encoder
(:class:`mvae_jax.networks.FusionEncoder`) has a feature map per modality, a
sum, and a fusion head: with all modalities present it is exactly JMVAE's
joint encoder; from a subset S the absent modalities' features are replaced by
learned mask tokens, one per modality. Its parameters are those of JMVAE
without unimodal encoders plus M x hidden[0] mask-token scalars.

Training, in two stages (``--warmup_epochs``, default 1):

1. epochs < warmup_epochs: the joint ELBO, the paper's Eq. (1), as JMVAE:
       L_1 = E_q(z|x_1..x_M)[sum_m log p(x_m | z)] - beta KL(q(z|x_1..x_M) || p(z))
2. then the same encoder also learns to serve subsets: for each example and
   each of ``--num_subsets`` (default 1) random proper subsets S (uniform over
   the 2^M - 2 non-empty subsets that leave a modality out),
       L_2 = L_1 + sum_S [ E_q(z|x_S)[sum_{m in S} log p(x_m | z)] - beta KL(q(z|x_S) || p(z))
                           - KL(sg[q(z|x_1..x_M)] || q(z|x_S)) ]
   where sg (stop_gradient) holds the joint posterior fixed as the target, and
   the decoders are held fixed in the subset ELBO (only the encoder learns to
   infer from S; p(x | z) keeps being fitted by the joint ELBO, which stays in
   the objective so the joint posterior does not drift).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from mvae_jax import distributions, losses
from mvae_jax.modality import Modality
from mvae_jax.models.base import Experts, Model, check_present, compute_dtype, conv_widths, random_subset_masks
from mvae_jax.networks import FusionEncoder

log = logging.getLogger(__name__)


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """PEMVAE with MLP networks of widths ``config.hidden_dims``, latent ``config.latent_dim``."""
    names = tuple(m.name for m in modalities)
    beta, num_subsets, warmup = float(config.beta), int(config.num_subsets), int(config.warmup_epochs)
    if warmup >= config.epochs:
        log.warning("warmup_epochs=%d >= epochs=%d: pemvae will only train the joint ELBO, and cannot yet "
                    "infer from subsets; resume with more epochs", warmup, config.epochs)
    encoder = FusionEncoder(names, tuple(config.hidden_dims), config.latent_dim, conv_widths(config, modalities),
                            compute_dtype(config))
    experts = Experts(config, modalities, encoders=False)

    def given(batch, present):
        return {n: batch[n] for n in present}

    def init(rng: jax.Array):
        k_enc, k_dec = jax.random.split(rng)
        one = {m.name: jnp.zeros((1, *m.shape), jnp.float32) for m in modalities}
        return {"encoder": encoder.init(k_enc, one)["params"], **experts.init(None, k_dec)}

    def encode(params, batch, present):
        present = check_present(present, names)
        return encoder.apply({"params": params["encoder"]}, given(batch, present))

    def loss(params, batch, rng, epoch=0, beta=beta):
        kl_beta = losses.kl_weight(beta, epoch, config.kl_warmup_epochs)
        k_joint, k_subsets = jax.random.split(rng)
        joint = encode(params, batch, names)
        elbo, terms = losses.multimodal_elbo(k_joint, joint, lambda z: experts.decode(params, z), batch, modalities, kl_beta)
        terms["elbo_joint"] = elbo

        def joint_only():
            return {f"elbo_subset_{j}": jnp.zeros_like(elbo) for j in range(num_subsets)} | {
                f"kl_joint_to_subset_{j}": jnp.zeros_like(elbo) for j in range(num_subsets)}

        def subsets():
            target = jax.lax.stop_gradient(joint)
            fixed = {"decoders": jax.lax.stop_gradient(params["decoders"])}
            out = {}
            for j, key in enumerate(jax.random.split(k_subsets, num_subsets)):
                k_mask, k_z = jax.random.split(key)
                mask = dict(zip(names, random_subset_masks(k_mask, len(names), elbo.shape[0], proper=True)))
                posterior = encoder.apply({"params": params["encoder"]}, given(batch, names), mask)
                out[f"elbo_subset_{j}"], _ = losses.multimodal_elbo(
                    k_z, posterior, lambda z: experts.decode(fixed, z), batch, modalities, kl_beta, mask=mask)
                out[f"kl_joint_to_subset_{j}"] = distributions.kl_gaussians(*target, *posterior)
            return out

        terms.update(jax.lax.cond(epoch < warmup, joint_only, subsets))
        subset_terms = sum(terms[f"elbo_subset_{j}"] - terms[f"kl_joint_to_subset_{j}"] for j in range(num_subsets))
        terms["loss"] = -(elbo + subset_terms)
        return terms

    return Model("pemvae", tuple(modalities), init, loss, encode, experts.decode)
