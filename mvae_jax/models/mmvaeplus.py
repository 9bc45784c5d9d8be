"""MMVAE+ (Palumbo, Daunhawer & Vogt 2023, "MMVAE+: Enhancing the Generative Quality of Multimodal VAEs without
Compromises", ICLR 2023).

Each modality m has a shared latent z and a private one w_m. Its encoder gives
q(z | x_m) and q(w_m | x_m), Laplace distributions; the priors p(z) and p(w)
are Laplace(0, 1). The decoder of m reads (w_m, z). The posterior of z given a
subset S is the mixture (1/|S|) sum_{m in S} q(z | x_m) (MMVAE's, Shi et al.
2019). Per example, with one sample per modality (the authors' PolyMNIST
recipe: ``--obj elbo --K 1``), the objective (maximised) is the mean over the
encoding modality r of (the paper's objective with K = 1, as the authors'
``objectives._m_elbo`` computes it):

    z_r ~ q(z | x_r), w_r ~ q(w_r | x_r)
    L_r = sum_d lambda_d log p(x_d | w~_d, z_r)
          + beta [log p(z_r) + log p(w_r) - log (1/M) sum_m q(z_r | x_m) - log q(w_r | x_r)]
    w~_r = w_r;  w~_d ~ r_d(w_d) = Laplace(0, s_d) for d != r

so a modality is decoded from another's shared code with a private code drawn
from an auxiliary prior r_d whose scale s_d is learned (the paper's device to
keep shared information out of the private latents). Scales are
parameterised as the authors' code does: softmax(l) * D + eta over each
latent's D coordinates (the encoders' second output, and l_d of r_d,
initialised to 0, so r_d starts at Laplace(0, 1)).

Options: ``--latent_dim`` is z's size, ``--private_dim`` w's (the authors'
PolyMNIST recipe, ``run_polyMNIST_experiment.sh``: 32 each, beta 2.5, batch
128, with ``--image_likelihood=laplace``); ``--likelihood_weights`` lambda (default 1).

Where this module differs from the authors' code (srl-ethz/mmvaeplus):

- the networks are the data set's (MoPoE's conv networks on PolyMNIST, one
  trunk whose output holds both w's and z's parameters), not their two
  ResNet branches per encoder; MultiVae's reproduction used their ResNets;
- only K = 1 (their ``elbo`` objective); not the IWAE/DReG variants with K > 1;
- ``encode(params, batch, present)`` is the shared posterior q(z | x_S): its
  mixture's mean and variance (a Laplace's variance is 2 s^2), as the latent
  accuracy and the tSNE use it; ``posterior`` gives the components as
  Gaussians of those moments;
- ``decode(params, z)`` decodes with w at the mean of p(w), 0 (it takes no
  random key), where the authors draw w ~ p(w) for cross-modal and
  unconditional generation; ``Model.generate`` with a key draws it as they do
  (``decode_drawing``; ``eval.py --generation=sample``). eval.py's prior draws
  z ~ Laplace(0, 1) (``Model.latent_prior``).

Incomplete data (``--missing``): an example with only the modalities P takes
the objective on P, as MultiVae's MMVAE+ does with its masks: the mean of L_r
over r in P, each L_r with the likelihoods of d in P and the mixture
(1/|P|) sum_{m in P} q(z | x_m).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import jax
import jax.numpy as jnp

from mvae_jax import distributions
from mvae_jax.modality import Modality
from mvae_jax.models.base import (
    LIKELIHOOD_WEIGHTS,
    PRIVATE_DIM,
    Experts,
    Model,
    check_present,
    presence,
    private_drawing,
)

ETA = 1e-6  # added to every scale (the authors' Constants.eta): no scale is 0

OPTIONS = (LIKELIHOOD_WEIGHTS, PRIVATE_DIM)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


class SharedPrior(Protocol):
    """A learned p(z) in place of Laplace(0, 1): its parameters live under ``params["prior"]``."""

    def init(self, rng: jax.Array, latent: int) -> dict: ...

    def log_density(self, params: dict, z: jax.Array) -> jax.Array:
        """log p(z): (...,) from z (..., latent)."""

    def mixture(self, params: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
        """p(z) as a mixture of Laplace components: (weights (C,), locations (C, latent), scales (C, latent))."""


def scales(raw: jax.Array) -> jax.Array:
    """softmax(raw) * D + ETA over the last axis of D coordinates: positive scales that sum to about D."""
    return jax.nn.softmax(raw, axis=-1) * raw.shape[-1] + ETA


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """MMVAE+ with the data set's networks, shared latent ``config.latent_dim``, private ``config.private_dim``."""
    return make(config, modalities, "mmvaeplus")


def make(config, modalities: tuple[Modality, ...], name: str, shared_prior: SharedPrior | None = None) -> Model:
    """The MMVAE+ objective with p(z) = Laplace(0, 1), or ``shared_prior``'s p(z) (CMVAE's mixture).

    Long because the model is its closures: init, encode and the loss share the networks built here."""
    names = tuple(m.name for m in modalities)
    beta, shared, private = float(config.beta), int(config.latent_dim), int(config.private_dim)
    weights = config.likelihood_weight(names)
    experts = Experts(dataclasses.replace(config, latent_dim=private + shared), modalities)

    def init(rng):
        params = experts.init_from(rng)
        params["aux_scales"] = {n: jnp.zeros((private,), jnp.float32) for n in names}  # l_d of r_d
        if shared_prior is not None:
            params["prior"] = shared_prior.init(jax.random.fold_in(rng, 1), shared)
        return params

    def log_prior_z(params, z):
        if shared_prior is None:
            return distributions.laplace_log_density(z, 0.0, 1.0)
        return shared_prior.log_density(params["prior"], z)

    def split(params, batch, name):
        """((w loc, w scale), (z loc, z scale)) of modality ``name``'s encoder, each (batch, dim)."""
        loc, raw = experts.encode(params, batch, name)
        return (loc[..., :private], scales(raw[..., :private])), (loc[..., private:], scales(raw[..., private:]))

    def mixture(params, batch, present):
        present = check_present(present, names)
        z_parts = [split(params, batch, n)[1] for n in present]
        locs = jnp.stack([loc for loc, _ in z_parts])
        return locs, jnp.stack([distributions.laplace_log_variance(s) for _, s in z_parts])

    def encode(params, batch, present):
        return distributions.mixture_moments(*mixture(params, batch, present))

    def decode(params, z, targets=None):
        w = jnp.zeros((*z.shape[:-1], private), z.dtype)  # the mean of p(w)
        return experts.decode(params, jnp.concatenate([w, z], axis=-1), targets)

    # Each target with its own w ~ p(w) = Laplace(0, 1), as the authors' test-time generation
    # (self_and_cross_modal_generation_forward, generate_unconditional) draws it.
    decode_drawing = private_drawing(experts, private, jax.random.laplace)

    def loss(params, batch, rng, epoch=0, beta=beta):
        parts = {n: split(params, batch, n) for n in names}
        z_locs = jnp.stack([parts[n][1][0] for n in names])  # (M, batch, shared)
        z_scales = jnp.stack([parts[n][1][1] for n in names])
        present = presence(batch, names)  # None: a complete batch
        terms, total = {}, 0.0
        for r, (key, n) in enumerate(zip(jax.random.split(rng, len(names)), names)):
            k_z, k_w, k_aux = jax.random.split(key, 3)
            (w_loc, w_scale), (z_loc, z_scale) = parts[n]
            z = distributions.sample_laplace(k_z, z_loc, z_scale)
            w = distributions.sample_laplace(k_w, w_loc, w_scale)
            log_likelihood = 0.0
            for d, (k, m) in enumerate(zip(jax.random.split(k_aux, len(names)), modalities)):
                if d == r:
                    w_d = w
                else:  # a private code from the auxiliary prior r_d, whose scale learns
                    w_d = distributions.sample_laplace(k, jnp.zeros_like(w), scales(params["aux_scales"][m.name]))
                logits = experts.decode(params, jnp.concatenate([w_d, z], axis=-1), (m.name,))[m.name]
                ll = m.log_likelihood(logits, batch[m.name])
                terms[f"log_likelihood_{n}->{m.name}"] = ll
                if present is not None:
                    ll = present[d] * ll
                log_likelihood = log_likelihood + weights[m.name] * ll
            log_prior = log_prior_z(params, z) + distributions.laplace_log_density(w, 0.0, 1.0)
            log_q_each = distributions.laplace_log_density(z[None], z_locs, z_scales)  # (M, batch)
            if present is None:
                log_q_z = jax.nn.logsumexp(log_q_each, axis=0) - jnp.log(len(names))
            else:  # the mixture of the example's own modalities
                log_q_each = jnp.where(present > 0, log_q_each, -jnp.inf)
                log_q_z = jax.nn.logsumexp(log_q_each, axis=0) - jnp.log(jnp.sum(present, axis=0))
            log_q_w = distributions.laplace_log_density(w, w_loc, w_scale)
            elbo = log_likelihood + beta * (log_prior - log_q_z - log_q_w)
            if present is not None:
                elbo = present[r] * elbo
            terms[f"elbo_{n}"] = elbo
            total = total + elbo
        terms["elbo"] = total / (len(names) if present is None else jnp.sum(present, axis=0))
        terms["loss"] = -terms["elbo"]
        return terms

    prior_mixture = None if shared_prior is None else (lambda params: shared_prior.mixture(params["prior"]))
    return Model(
        name,
        tuple(modalities),
        init,
        loss,
        encode,
        decode,
        mixture=mixture,
        latent_prior="laplace",
        prior_mixture=prior_mixture,
        private_latents=True,
        decode_drawing=decode_drawing,
    )
