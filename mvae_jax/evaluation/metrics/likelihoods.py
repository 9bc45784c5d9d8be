"""Importance-weighted log-likelihoods log p(x_m) and log p(x_1..x_M) (Burda et al. 2016)."""

from __future__ import annotations

from collections.abc import Mapping
import math

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax import distributions
from mvae_jax.evaluation.metrics.common import Progress, batches
from mvae_jax.models import Model
from mvae_jax.models.base import per_model_jit


@per_model_jit(static_argnums=(0, 3, 4, 5, 6))
def iw_log_likelihood(
    model: Model,
    params,
    batch,
    proposal: tuple[str, ...],
    targets: tuple[str, ...],
    num_samples: int,
    chunk: int,
    rng: jax.Array,
) -> jax.Array:
    """Importance-weighted estimate of log p(x_targets) per example: (batch,). Burda et al. 2016, Eq. (8).

        log p(x_T) ~ log (1/K) sum_k p(x_T | z_k) p(z_k) / q(z_k | x_P),   z_k ~ q(z | x_P)

    with q = ``model.posterior`` of the ``proposal`` modalities (a mixture for
    MMVAE and MoPoE: each z_k picks a component uniformly, and q is the
    mixture density). The K samples are drawn ``chunk`` at a time in a
    ``lax.map``, so memory grows with ``chunk``, not K.
    """
    mus, logvars = model.posterior(params, batch, proposal)  # (C, B, latent)
    size = mus.shape[1]
    chunks = -(-num_samples // chunk)

    def log_weights(index):
        z = distributions.sample_mixture(jax.random.fold_in(rng, index), mus, logvars, (chunk,))  # (chunk, B, latent)
        log_q = distributions.mixture_log_density(z, mus[:, None], logvars[:, None])
        log_prior = distributions.gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
        logits = model.decode(params, z, targets)  # only the decoders of the targets: log p(w) needs w's alone
        log_lik = sum(m.log_likelihood(logits[m.name], batch[m.name]) for m in model.modalities if m.name in targets)
        lw = log_lik + log_prior - log_q  # (chunk, B)
        valid = (index * chunk + jnp.arange(chunk)) < num_samples
        return jnp.where(valid[:, None], lw, -jnp.inf)

    lw = jax.lax.map(log_weights, jnp.arange(chunks)).reshape(chunks * chunk, size)
    return jax.nn.logsumexp(lw, axis=0) - math.log(num_samples)


def log_likelihoods(
    model: Model,
    params,
    data: Mapping[str, np.ndarray],
    rng: jax.Array,
    num_samples: int = 1000,
    proposal: str = "own",
    batch_size: int = 100,
    max_elements: int = 2**22,
    progress: Progress = None,
) -> dict[str, float]:
    """Mean IW estimates over ``data`` of log p(x_m) for each modality m and of the joint log p(x_1..x_M).

    ``proposal="own"`` draws z from q(z | x_m) for log p(x_m) (and from
    q(z | all) for the joint); ``"joint"`` draws every estimate's z from
    q(z | all), the estimator of Suzuki et al. 2016's log p(x) (JMVAE Sec. 4.3).
    Both are unbiased for p; with finite K they are lower bounds in
    expectation, tighter the closer q is to the true posterior. Test points go
    ``batch_size`` at a time, and K in chunks of about ``max_elements`` / (batch
    * widest decoder output) samples.
    """
    if proposal not in ("own", "joint"):
        raise ValueError(f"proposal={proposal!r}; allowed: own, joint")
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples={num_samples!r}; allowed: an integer >= 1")
    widest = max(max(m.size for m in model.modalities), 512)
    chunk = max(1, min(num_samples, max_elements // (batch_size * widest)))
    estimates = {m.name: ((m.name,) if proposal == "own" else model.names, (m.name,)) for m in model.modalities}
    estimates["joint"] = (model.names, model.names)
    n = len(data[model.names[0]])
    out = {}
    for i, (key, (present, targets)) in enumerate(estimates.items()):
        total = 0.0
        for j, s in enumerate(batches(n, batch_size)):
            batch = {k: jnp.asarray(data[k][s]) for k in model.names}
            step_rng = jax.random.fold_in(jax.random.fold_in(rng, i), j)
            total += float(
                jnp.sum(iw_log_likelihood(model, params, batch, present, targets, num_samples, chunk, step_rng))
            )
            if progress is not None:
                progress(s.stop - s.start)
        out[key] = total / n
    return out
