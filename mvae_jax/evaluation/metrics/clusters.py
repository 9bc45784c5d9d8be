"""Clusters of a model with a cluster prior on its shared latent (CMVAE, Palumbo et al. 2024), the post-hoc
selection of their number, and their agreement with the classes.

- **Assignment** (the paper's Sec. 3.3; MultiVae's ``CMVAE.predict_clusters``):
  each modality m draws z_m ~ q(z | x_m) and votes for argmax_c q(c | z_m); an
  example's cluster is the most frequent vote (ties: the lowest index).
- **Selection without labels** (the paper's "post-hoc cluster selection";
  MultiVae's ``prune_clusters``): starting from all C clusters, on training
  examples, compute

      h(k) = beta * mean_{n, m} H(q(c | z_m)) / log |{c : q(c | z_m) > 0}|  -  mean_{n, m} log p_k(z_m) / D

  (the normalised entropy of the cluster posterior, penalised by the prior's
  log-density per latent coordinate, p_k the prior over the k clusters kept,
  pi renormalised), then drop the cluster that the fewest examples are
  assigned to, and again down to 2 clusters. The number kept is the k of the
  lowest h(k). One z_m per example and modality serves every k (MultiVae draws
  it again at every k: the same criterion with less noise between the k).
- **Scores against the classes**, on the evaluated split: accuracy under the
  best one-to-one matching of clusters to classes (Hungarian algorithm,
  ``scipy.optimize.linear_sum_assignment``; clusters left unmatched count as
  wrong, as DEC's ``cluster_acc``) and normalised mutual information
  (scikit-learn, arithmetic mean).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax import distributions
from mvae_jax.evaluation.metrics.common import batches
from mvae_jax.models.base import Model, per_model_jit


@per_model_jit(static_argnums=(0, 3))
def _draw(model: Model, params, batch, name: str, rng):
    """z ~ q(z | x_name): one per example, (batch, latent), of the posterior's family (the prior's)."""
    mus, logvars = model.posterior(params, batch, (name,))
    mu, logvar = mus[0], logvars[0]
    if model.latent_prior == "laplace":  # the moments of Laplace(mu, s): variance 2 s^2
        return distributions.sample_laplace(rng, mu, jnp.sqrt(jnp.exp(logvar) / 2.0))
    return distributions.sample_gaussian(rng, mu, logvar)


def shared_codes(model: Model, params, data: Mapping[str, np.ndarray], rng: jax.Array, batch_size: int = 1000):
    """z_m ~ q(z | x_m) for every modality m and example: (M, n, latent)."""
    if model.prior_mixture is None:
        raise ValueError(f"{model.name} has no cluster prior (Model.prior_mixture): clusters need one, as cmvae's")
    n = len(data[model.names[0]])
    out = []
    for i, name in enumerate(model.names):
        key = jax.random.fold_in(rng, i)
        parts = [
            np.asarray(_draw(model, params, {name: jnp.asarray(data[name][s])}, name, jax.random.fold_in(key, j)))
            for j, s in enumerate(batches(n, batch_size))
        ]
        out.append(np.concatenate(parts))
    return np.stack(out)


def cluster_log_densities(model: Model, params, codes: np.ndarray) -> np.ndarray:
    """log p(z | c) of every code and cluster: (..., C) from codes (..., latent), float64."""
    _, locations, scales = (np.asarray(a, np.float64) for a in model.prior_mixture(params))
    z = np.asarray(codes, np.float64)[..., None, :]
    if model.latent_prior == "laplace":
        return -np.sum(np.log(2.0 * scales) + np.abs(z - locations) / scales, axis=-1)
    return -0.5 * np.sum(np.log(2 * np.pi * scales**2) + ((z - locations) / scales) ** 2, axis=-1)


def _posterior(model: Model, params, densities: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q(c | z) (..., C), log p(z) (...,)) with pi renormalised over the ``keep`` clusters."""
    weights = np.asarray(model.prior_mixture(params)[0], np.float64)
    log_pi = np.full(weights.shape, -np.inf)
    log_pi[keep] = np.log(weights[keep] / weights[keep].sum())
    log_joint = densities + log_pi
    top = np.max(log_joint, axis=-1, keepdims=True)
    log_pz = top[..., 0] + np.log(np.sum(np.exp(log_joint - top), axis=-1))
    return np.exp(log_joint - log_pz[..., None]), log_pz


def _vote(q: np.ndarray) -> np.ndarray:
    """The most frequent of the modalities' argmax_c q(c | z_m) (ties: the lowest cluster): (n,) from (M, n, C)."""
    votes = np.argmax(q, axis=-1)  # (M, n)
    counts = np.stack([np.sum(votes == c, axis=0) for c in range(q.shape[-1])], axis=-1)  # (n, C)
    return np.argmax(counts, axis=-1)


def cluster_posterior(model: Model, params, codes: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """q(c | z) = pi_c p(z | c) / p(z): (..., C) from codes (..., latent), float64. ``keep``: optional (C,)
    booleans; the others are pruned (pi renormalised over the kept clusters, as MultiVae's ``prune_clusters``
    sets a pruned cluster's logit to -inf), so their q(c | z) is 0."""
    densities = cluster_log_densities(model, params, codes)
    keep = np.ones(densities.shape[-1], bool) if keep is None else np.asarray(keep, bool)
    return _posterior(model, params, densities, keep)[0]


def assign(model: Model, params, codes: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Each example's cluster from its codes (M, n, latent), among the ``keep`` clusters (default: all)."""
    return _vote(cluster_posterior(model, params, codes, keep))


def selection(model: Model, params, codes: np.ndarray, beta: float) -> tuple[np.ndarray, dict[int, float]]:
    """(the kept clusters (C,) booleans, {k: h(k)}) of the post-hoc selection on training ``codes``."""
    densities = cluster_log_densities(model, params, codes)  # (M, n, C): the same for every k
    num, latent = densities.shape[-1], codes.shape[-1]
    keep = np.ones(num, bool)
    kept, criterion = {}, {}
    while keep.sum() >= 2:
        q, log_pz = _posterior(model, params, densities, keep)
        entropy = -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=-1)  # (M, n)
        support = np.maximum(np.sum(q > 0, axis=-1), 2)  # a one-hot posterior: entropy 0 (not 0 / log 1)
        k = int(keep.sum())
        criterion[k] = float(beta * np.mean(entropy / np.log(support)) - np.mean(log_pz / latent))
        kept[k] = keep.copy()
        mass = np.where(keep, np.bincount(_vote(q), minlength=num), np.inf)
        keep[int(np.argmin(mass))] = False
    best = min(criterion, key=criterion.get)
    return kept[best], criterion


def accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy under the best one-to-one map of clusters to classes (Hungarian); unmatched clusters are wrong."""
    from scipy.optimize import linear_sum_assignment

    labels, clusters = np.asarray(labels, int), np.asarray(clusters, int)
    size = max(labels.max(), clusters.max()) + 1
    counts = np.zeros((size, size), np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(labels))


def cluster_scores(
    model: Model,
    params,
    train: Mapping[str, np.ndarray],
    data: Mapping[str, np.ndarray],
    labels: np.ndarray,
    rng: jax.Array,
    beta: float,
) -> dict:
    """The selection on ``train``, then the clusters of ``data`` against ``labels``: {"selected": k,
    "accuracy", "nmi" (with the k kept), "accuracy_all", "nmi_all" (with all C), "criterion": {k: h(k)}}."""
    from sklearn.metrics import normalized_mutual_info_score

    train_codes = shared_codes(model, params, train, jax.random.fold_in(rng, 0))
    keep, criterion = selection(model, params, train_codes, beta)
    codes = shared_codes(model, params, data, jax.random.fold_in(rng, 1))
    labels = np.asarray(labels)
    chosen, every = assign(model, params, codes, keep), assign(model, params, codes)
    return {
        "selected": int(keep.sum()),
        "kept": [int(c) for c in np.flatnonzero(keep)],
        "accuracy": accuracy(labels, chosen),
        "nmi": float(normalized_mutual_info_score(labels, chosen)),
        "accuracy_all": accuracy(labels, every),
        "nmi_all": float(normalized_mutual_info_score(labels, every)),
        "criterion": {str(k): criterion[k] for k in sorted(criterion)},
        "train_points": int(train_codes.shape[1]),
        "test_points": int(codes.shape[1]),
    }
