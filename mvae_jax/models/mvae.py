"""MVAE (Wu & Goodman 2018, "Multimodal Generative Models for Scalable Weakly-Supervised Learning", arXiv:1802.05335).

Generative model p(z) prod_m p(x_m | z). One inference network per modality
gives an expert q~(z | x_m); the posterior of any subset S is their product
with the prior expert (Sec. 2.1 of the paper):

    q(z | x_S) ~ p(z) prod_{m in S} q~(z | x_m)

computed in closed form for Gaussians (precisions add). The sub-sampled
training objective (Sec. 2.2) sums, per example, the ELBO of all modalities,
the ELBO of each single modality, and the ELBOs of ``num_subsets`` random
subsets (``--num_subsets``, default 1; each drawn per example, uniformly from
the 2^M - 1 non-empty subsets; 0 = none, which for M = 2 is the paper's
objective, every subset then being counted once):

    L = ELBO(x_1..x_M) + sum_m ELBO(x_m) + sum_{j=1..k} ELBO(x_{S_j}),
    ELBO(x_S) = E_q(z|x_S)[sum_{m in S} lambda_m log p(x_m | z)] - beta KL(q(z|x_S) || p(z))

Each ELBO reconstructs only the modalities of its subset. ``lambda_m`` is
``--likelihood_weights`` (default 1). The product is computed in log space and
always keeps the prior expert, which avoids the NaNs reported for the published
code (mhw32/multimodal-vae-public#3).

Incomplete data (``--missing``): an example that has only the modalities P
trains the same objective on P, as Wu & Goodman train on unpaired and partly
observed examples (Sec. 2.2, "weakly supervised"): the joint ELBO becomes
ELBO(x_P), the single-modality ELBOs are those of m in P, and the random
subsets are drawn uniformly from the non-empty subsets of P.
"""

from __future__ import annotations

import jax

from mvae_jax import distributions, losses
from mvae_jax.modality import Modality
from mvae_jax.models.base import (
    KL_WARMUP_EPOCHS,
    LIKELIHOOD_WEIGHTS,
    NUM_SUBSETS,
    Experts,
    Model,
    check_present,
    presence,
    random_present_subsets,
    random_subset_masks,
)

OPTIONS = (LIKELIHOOD_WEIGHTS, NUM_SUBSETS, KL_WARMUP_EPOCHS)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """MVAE with MLP networks of widths ``config.hidden_dims``, latent ``config.latent_dim``.

    Long because the model is its closures: init, encode and the loss share the networks built here."""
    names = tuple(m.name for m in modalities)
    beta, num_subsets = float(config.beta), int(config.num_subsets)
    weights = config.likelihood_weight(names)
    experts = Experts(config, modalities)

    def encode(params, batch, present):
        present = check_present(present, names)
        return distributions.product_of_experts(*experts.encode_stack(params, batch, present), prior_expert=True)

    def loss(params, batch, rng, epoch=0, beta=beta):
        kl_beta = losses.kl_weight(beta, epoch, config.kl_warmup_epochs)
        mus, logvars = experts.encode_stack(params, batch, names)
        batch_size = mus.shape[1]
        present = presence(batch, names)  # None: a complete batch
        k_joint, k_single, k_subsets = jax.random.split(rng, 3)
        elbo, terms = losses.multimodal_elbo(
            k_joint,
            distributions.product_of_experts(mus, logvars, present, prior_expert=True),
            lambda z: experts.decode(params, z),
            batch,
            modalities,
            kl_beta,
            weights,
            mask=None if present is None else dict(zip(names, present)),
        )
        terms["elbo_joint"] = elbo
        total = elbo
        for i, (m, key) in enumerate(zip(modalities, jax.random.split(k_single, len(modalities)))):
            elbo_m, _ = losses.multimodal_elbo(
                key,
                distributions.product_of_experts(mus[i : i + 1], logvars[i : i + 1], prior_expert=True),
                lambda z: experts.decode(params, z, (m.name,)),
                batch,
                (m,),
                kl_beta,
                weights,
            )
            if present is not None:
                elbo_m = present[i] * elbo_m
            terms[f"elbo_{m.name}"] = elbo_m
            total = total + elbo_m
        for j, key in enumerate(jax.random.split(k_subsets, num_subsets)):
            k_mask, k_z = jax.random.split(key)
            if present is None:
                mask = random_subset_masks(k_mask, len(modalities), batch_size)
            else:
                mask, _ = random_present_subsets(k_mask, present)
            elbo_s, _ = losses.multimodal_elbo(
                k_z,
                distributions.product_of_experts(mus, logvars, mask, prior_expert=True),
                lambda z: experts.decode(params, z),
                batch,
                modalities,
                kl_beta,
                weights,
                mask=dict(zip(names, mask)),
            )
            terms[f"elbo_subset_{j}"] = elbo_s
            total = total + elbo_s
        terms["loss"] = -total
        return terms

    return Model("mvae", tuple(modalities), experts.init_from, loss, encode, experts.decode)
