"""Multimodal ELBO terms shared by every model: per-example arrays, no reduction.

Every model's objective is built from these and from the KL and likelihood
functions of :mod:`mvae_jax.distributions`; the training loop takes the mean
over the batch once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from mvae_jax import distributions
from mvae_jax.modality import Modality

Batch = Mapping[str, jax.Array]


def reconstruction_log_likelihoods(
    logits: Mapping[str, jax.Array], batch: Batch, modalities: Sequence[Modality]
) -> dict[str, jax.Array]:
    """log p(x_m | z) for each modality m: {name: (batch,)} from decoder logits {name: (batch, *shape)}."""
    return {m.name: m.log_likelihood(logits[m.name], batch[m.name]) for m in modalities}


def kl_weight(beta: float, epoch, warmup_epochs: int):
    """beta min(1, epoch / warmup_epochs): the KL warm-up of Sonderby et al. 2016 (Sec. 2.3), by completed epochs.

    ``epoch`` (epochs completed, may be traced) is 0 during the first epoch,
    whose KL weight is therefore 0; ``warmup_epochs`` = 0 means no warm-up.
    """
    if warmup_epochs <= 0:
        return beta
    return beta * jnp.minimum(1.0, jnp.asarray(epoch, jnp.float32) / warmup_epochs)


def multimodal_elbo(
    rng: jax.Array,
    posterior: distributions.Gaussian,
    decode: Callable[[jax.Array], Mapping[str, jax.Array]],
    batch: Batch,
    modalities: Sequence[Modality],
    beta: float = 1.0,
    weights: Mapping[str, float] | None = None,
    mask: Mapping[str, jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Paper Eq. (1) for M modalities: E_q(z|x_1..x_M)[sum_m lambda_m log p(x_m|z)] - beta KL(q(z|x_1..x_M) || N(0, I)).

    One reparameterised sample z ~ q estimates the expectation; the KL is exact.

    Args:
      rng: key for the sample of z.
      posterior: (mu, logvar) of q(z | x_1..x_M), each (batch, latent), or
        (..., batch, latent) for several posteriors at once (the targets broadcast).
      decode: z (batch, latent) -> logits {name: (batch, *shape)}, at least for ``modalities``.
      batch: {name: (batch, *shape)} targets.
      modalities: the modalities whose likelihoods enter the sum.
      beta: weight of the KL term (beta = 1 is the ELBO; Higgins et al. 2017).
      weights: lambda_m per modality name (Vedantam et al. 2018; Wu & Goodman 2018); 1 if None.
      mask: optional {name: (batch,) of 0/1}: per example, only modalities with 1
        enter the sum (the ELBO of that example's subset, Wu & Goodman 2018, Sec. 2.2).

    Returns:
      elbo (..., batch), and the terms {"log_likelihood_<m>": (..., batch), "kl": (..., batch)};
      the log-likelihood terms are unweighted and unmasked.
    """
    weights = {} if weights is None else weights
    unknown = sorted(set(weights) - set(batch) - {m.name for m in modalities})
    if unknown:  # a typo would otherwise be a weight of 1, silently
        raise ValueError(
            f"weights name {unknown}, which are not modalities of this batch ({', '.join(sorted(batch))}); "
            "give a weight per modality name, or none for 1"
        )
    mu, logvar = posterior
    z = distributions.sample_gaussian(rng, mu, logvar)
    log_likelihoods = reconstruction_log_likelihoods(decode(z), batch, modalities)
    kl = distributions.kl_standard_normal(mu, logvar)
    weighted = {n: weights.get(n, 1.0) * ll for n, ll in log_likelihoods.items()}
    if mask is not None:
        weighted = {n: mask[n] * ll for n, ll in weighted.items()}
    elbo = sum(weighted.values()) - beta * kl
    terms = {f"log_likelihood_{name}": ll for name, ll in log_likelihoods.items()}
    terms["kl"] = kl
    return elbo, terms


def importance_weighted_bound(log_weights: jax.Array) -> jax.Array:
    """IWAE bound log (1/K) sum_k exp(log_weights_k) over axis 0 (Burda et al. 2016, Eq. 8): (K, ...) -> (...)."""
    return jax.nn.logsumexp(log_weights, axis=0) - jnp.log(log_weights.shape[0])


def kl_to_experts(joint: distributions.Gaussian, experts: Mapping[str, distributions.Gaussian]) -> dict[str, jax.Array]:
    """KL(q(z|x_1..x_M) || q(z|x_m)) for each expert m: {name: (batch,)} (Suzuki et al. 2016, Sec. 3.3)."""
    mu, logvar = joint
    return {name: distributions.kl_gaussians(mu, logvar, e_mu, e_logvar) for name, (e_mu, e_logvar) in experts.items()}


def mean_terms(terms: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Batch means of per-example terms: the one reduction of a training step."""
    return {k: jnp.mean(v) for k, v in terms.items()}
