"""MVTCAE (Hwang, Kim, Kim & Park 2021, "Multi-View Representation Learning via Total Correlation Objective",
NeurIPS 2021).

Generative model p(z) prod_m p(x_m | z). One inference network per modality
gives an expert q(z | x_m); the posterior of a subset S is the product of its
experts, **without** a prior expert (the authors' ``ivw_fusion``: precisions add):

    q(z | x_S) ~ prod_{m in S} q(z | x_m)

Objective (maximised), per example, with alpha = ``--tc_alpha`` and M modalities:
a variational bound on the total correlation of the views, written as a
weighted ELBO of the joint posterior plus conditional information bottlenecks
(the paper's objective, in the form the authors' code computes it,
gr8joo/MVTCAE ``run_epochs.py``, ``modality_ivw``):

    L = (M - alpha) / M * E_q(z|X)[sum_m lambda_m log p(x_m | z)]
        - beta * [ (1 - alpha) KL(q(z|X) || p(z)) + (alpha / M) sum_m KL(q(z|X) || q(z|x_m)) ]

with X = x_1..x_M and z ~ q(z|X) (one reparameterised sample). ``lambda_m`` is
``--likelihood_weights`` (default 1). alpha = 0 is a PoE VAE of the joint
posterior alone (no prior expert); alpha = 1 drops the prior KL and keeps only
the unimodal bottlenecks. The default alpha = 5/6 and beta = 2.5 are the
authors' PolyMNIST recipe (``main_mmnist.py``: ``TC_RATIO = 5.0/6.0``,
``BETA = 2.5``). MultiVae (``models/mvtcae``) computes the same objective,
summed over the batch where this module averages it; its default alpha is 0.1.

``encode`` returns q(z | x_S) for any non-empty S: the product of the experts
of S, as the authors' and MultiVae's conditional generation do.

Incomplete data (``--missing``): an example with only the modalities P takes
the objective above with X = x_P and M = |P| (the product, the reconstructions
and the unimodal KLs over P only), as MultiVae's MVTCAE does with its masks.
"""

from __future__ import annotations

import jax.numpy as jnp

from mvae_jax import distributions, losses
from mvae_jax import options as opt
from mvae_jax.modality import Modality
from mvae_jax.models.base import KL_WARMUP_EPOCHS, LIKELIHOOD_WEIGHTS, Experts, Model, check_present, presence

TC_ALPHA = opt.Option(
    "tc_alpha",
    "float",
    5 / 6,
    "alpha of MVTCAE's total-correlation objective: weight (1 - alpha) of KL(q(z|X) || p(z)) against alpha / M "
    "of each KL(q(z|X) || q(z|x_m)), reconstructions weighted (M - alpha) / M (default 5/6: the authors' "
    "PolyMNIST recipe)",
    "a number from 0 to 1",
    lambda a: opt.is_number(a) and 0.0 <= a <= 1.0,
)

OPTIONS = (LIKELIHOOD_WEIGHTS, TC_ALPHA, KL_WARMUP_EPOCHS)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """MVTCAE with the data set's networks (``Experts``) and latent ``config.latent_dim``."""
    names = tuple(m.name for m in modalities)
    beta, alpha, count = float(config.beta), float(config.tc_alpha), len(modalities)
    weights = config.likelihood_weight(names)
    experts = Experts(config, modalities)

    def encode(params, batch, present):
        present = check_present(present, names)
        return distributions.product_of_experts(*experts.encode_stack(params, batch, present))

    def loss(params, batch, rng, epoch=0, beta=beta):
        kl_beta = losses.kl_weight(beta, epoch, config.kl_warmup_epochs)
        mus, logvars = experts.encode_stack(params, batch, names)  # (M, batch, latent)
        present = presence(batch, names)  # None: a complete batch
        mu, logvar = distributions.product_of_experts(mus, logvars, present)
        z = distributions.sample_gaussian(rng, mu, logvar)
        lls = losses.reconstruction_log_likelihoods(experts.decode(params, z), batch, modalities)
        kl_prior = distributions.kl_standard_normal(mu, logvar)
        kl_views = distributions.kl_gaussians(mu[None], logvar[None], mus, logvars)  # (M, batch)
        terms = {f"log_likelihood_{n}": ll for n, ll in lls.items()}
        terms.update({f"kl_joint_to_{n}": kl for n, kl in zip(names, kl_views)})
        terms["kl"] = kl_prior
        views = count
        if present is not None:  # the objective of each example's own modalities
            lls = {n: present[i] * ll for i, (n, ll) in enumerate(lls.items())}
            kl_views, views = present * kl_views, jnp.sum(present, axis=0)
        reconstruction = sum(weights[n] * ll for n, ll in lls.items())
        divergence = (1.0 - alpha) * kl_prior + (alpha / views) * kl_views.sum(axis=0)
        terms["objective"] = (views - alpha) / views * reconstruction - kl_beta * divergence
        terms["elbo"] = reconstruction - kl_beta * kl_prior  # the joint posterior's ELBO, for comparison
        terms["loss"] = -terms["objective"]
        return terms

    return Model("mvtcae", tuple(modalities), experts.init_from, loss, encode, experts.decode)
