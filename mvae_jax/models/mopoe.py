"""MoPoE-VAE (Sutter, Daunhawer & Vogt 2021, "Generalized Multimodal ELBO", arXiv:2105.02470).

Generative model p(z) prod_m p(x_m | z). One inference network per modality
gives an expert q(z | x_m); every non-empty subset S gets the product of its
experts, and the joint posterior is the uniform mixture of these products
over the subsets (the paper's MoPoE, its Sec. 3):

    q(z | x_S) = PoE({q(z | x_m)}_{m in S}) ~ prod_{m in S} q(z | x_m)
    q(z | x_1..x_M) = (1 / (2^M - 1)) sum_{S non-empty} q(z | x_S)

Objective: the ELBO of the mixture, with the mixture's KL replaced by the
mean of the components' KLs, the upper bound the paper uses (KL is convex), so
that the objective is a lower bound on the ELBO:

    L = E_q(z|x_1..x_M)[sum_m lambda_m log p(x_m | z)]
        - beta (1 / (2^M - 1)) sum_S KL(q(z|x_S) || p(z))

The expectation over the mixture is estimated with one sample per example
from a subset drawn uniformly per example (unbiased, and one decoder pass per
example, as the paper's code does by splitting the batch among the subsets);
the sample reconstructs all M modalities. The KLs are exact. ``lambda_m`` is
``--likelihood_weights`` (default 1). The posterior of a subset T of the
modalities is, the same way, the mixture over the non-empty subsets of T:
``posterior`` returns it, ``encode`` its mean and variance.

Incomplete data (``--missing``): an example with only the modalities P takes
the objective of the model on P: the mixture over the non-empty subsets of P,
its sample drawn from one of them, the likelihoods of P, the mean of their KLs
(as MultiVae's MoPoE does with its masks).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mvae_jax import distributions, losses
from mvae_jax.modality import Modality
from mvae_jax.models.base import (
    KL_WARMUP_EPOCHS,
    LIKELIHOOD_WEIGHTS,
    Experts,
    Model,
    check_present,
    presence,
    subsets,
)

OPTIONS = (LIKELIHOOD_WEIGHTS, KL_WARMUP_EPOCHS)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """MoPoE with MLP networks of widths ``config.hidden_dims``, latent ``config.latent_dim``."""
    names = tuple(m.name for m in modalities)
    beta = float(config.beta)
    weights = config.likelihood_weight(names)
    experts = Experts(config, modalities)

    def products(mus, logvars, present):
        """PoE of every non-empty subset of ``present``: (subsets, batch, latent) each; experts of ``present``."""
        indices = [np.array([present.index(n) for n in s]) for s in subsets(present)]
        parts = [distributions.product_of_experts(mus[i], logvars[i]) for i in indices]
        return jnp.stack([p[0] for p in parts]), jnp.stack([p[1] for p in parts])

    def mixture(params, batch, present):
        present = check_present(present, names)
        return products(*experts.encode_stack(params, batch, present), present)

    def encode(params, batch, present):
        return distributions.mixture_moments(*mixture(params, batch, present))

    def loss(params, batch, rng, epoch=0, beta=beta):
        kl_beta = losses.kl_weight(beta, epoch, config.kl_warmup_epochs)
        all_subsets = subsets(names)
        members = [[names.index(n) for n in s] for s in all_subsets]
        mus, logvars = products(*experts.encode_stack(params, batch, names), names)  # (subsets, batch, latent)
        # The expectation over the mixture: each example's z from one subset's posterior drawn uniformly
        # (unbiased for the mean over subsets, one decoder pass per example, as the paper's code does).
        present = presence(batch, names)  # None: a complete batch
        # Subsets within each example's modalities: (subsets, batch) 0/1, or all of them.
        within = None if present is None else jnp.stack([jnp.prod(present[np.array(ix)], axis=0) for ix in members])
        z = distributions.sample_mixture(rng, mus, logvars, weights=within)
        lls = losses.reconstruction_log_likelihoods(experts.decode(params, z), batch, modalities)
        # KL of the mixture, bounded above by the mean of the subsets' KLs.
        kls = distributions.kl_standard_normal(mus, logvars)  # (subsets, batch)
        terms = {f"log_likelihood_{n}": ll for n, ll in lls.items()}
        terms.update({f"kl_{','.join(s)}": kl for s, kl in zip(all_subsets, kls)})
        if present is None:
            terms["kl"] = jnp.mean(kls, axis=0)
        else:
            terms["kl"] = jnp.sum(within * kls, axis=0) / jnp.sum(within, axis=0)
            lls = {n: present[i] * ll for i, (n, ll) in enumerate(lls.items())}
        terms["elbo"] = sum(weights[n] * ll for n, ll in lls.items()) - kl_beta * terms["kl"]
        terms["loss"] = -terms["elbo"]
        return terms

    return Model("mopoe", tuple(modalities), experts.init_from, loss, encode, experts.decode, mixture=mixture)
