"""Frechet distances (Heusel et al. 2017) in a scoring CNN's features, and the diversity of generated images."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.evaluation.metrics.coherences import label_samples
from mvae_jax.evaluation.metrics.common import (
    Progress,
    batches,
    decoded_means,
    model_prior,
    private_key,
    sampled_means,
    subset_key,
)
from mvae_jax.models import Model, subsets


def frechet_distance_gaussians(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)): the FID of Heusel et al. 2017 (arXiv:1706.08500, Sec. 4).

    In float64, with tr((C1 C2)^(1/2)) = tr((C1^(1/2) C2 C1^(1/2))^(1/2)): the
    square roots of symmetric positive semi-definite matrices, by eigenvalues
    (negative round-off clipped to 0), so no complex parts arise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    values, vectors = np.linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ cov2 @ root1), 0, None)).sum()
    distance = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)
    return max(distance, 0.0)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets (n, d) and (m, d): Gaussians fitted to each (mean, unbiased covariance)."""
    a, b = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"feature sets of shapes {a.shape} and {b.shape}: need (n >= 2, d) and (m >= 2, d)")
    return frechet_distance_gaussians(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def fid_pairs(model: Model, targets: Sequence[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(present, generated) of ``fid``: each proper subset and the ``targets`` it lacks, then all and ``targets``."""
    pairs = [(p, tuple(t for t in targets if t not in p)) for p in subsets(model.names) if p != model.names]
    return [(p, ts) for p, ts in pairs if ts] + [(model.names, tuple(targets))]


def fid(
    model: Model,
    params,
    data: Mapping[str, np.ndarray],
    rng: jax.Array,
    features: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    batch_size: int = 1000,
    progress: Progress = None,
    binarize: Sequence[str] = (),
    sampler=None,
    private: bool = False,
) -> dict[str, float]:
    """{"S->t": FID} of generated images of each modality t in ``features`` against the real ones of ``data``.

    For every non-empty subset S without t: x_t's pixel means at one
    z ~ q(z | x_S) per pair (cross-modal generation); "joint->t": z ~ q(z | all)
    (reconstruction); "prior->t": as many z ~ p(z) ("<name>->t" from ``sampler``, a ``samplers.LatentSampler``).
    The real set is ``data[t]``;
    ``features[t]`` maps images to the feature space (``classifiers.features``).
    ``progress(1)`` after each of ``fid_pairs`` and after the prior samples.
    Modalities in ``binarize`` have binary real images (mnist_label's test
    digits): their generated pixel means are replaced by one Bernoulli draw
    each, so that binary images meet binary images. ``private``: a model's private latents drawn from their
    prior (``Model.generate``; the papers' generation), else at the prior's mean.
    """
    draw_key = jax.random.fold_in(rng, 1 << 20)

    def image_features(t, means, i, j):
        if t in binarize:
            key = jax.random.fold_in(jax.random.fold_in(draw_key, i), j)
            means = jax.random.bernoulli(key, means).astype(np.float32)
        return features[t](np.asarray(means))

    n = len(data[model.names[0]])
    targets = tuple(t for t in model.names if t in features)
    sampler = sampler or model_prior(model, params)
    generated = {t: {sampler.name: []} for t in targets}
    pairs = fid_pairs(model, targets)
    for i, (present, wanted) in enumerate(pairs):
        key = "joint" if present == model.names else subset_key(present)
        for j, s in enumerate(batches(n, batch_size)):
            batch = {k: jnp.asarray(data[k][s]) for k in present}
            pair_rng = jax.random.fold_in(jax.random.fold_in(rng, i), j)
            means = sampled_means(model, params, batch, present, wanted, pair_rng, private=private)
            for t in wanted:
                generated[t].setdefault(key, []).append(image_features(t, means[t], i, j))
        if progress is not None:
            progress(1)
    prior_rng = jax.random.fold_in(rng, len(pairs))
    for j, s in enumerate(batches(n, batch_size)):
        key = jax.random.fold_in(prior_rng, j)
        z = sampler.sample(key, s.stop - s.start)
        private_rng = private_key(key, private)
        for t, images in decoded_means(model, params, z, targets, private_rng).items():
            generated[t][sampler.name].append(image_features(t, images, len(pairs), j))
    if progress is not None:
        progress(1)
    out = {}
    for t in targets:
        real = features[t](np.asarray(data[t]))
        for key, chunks in generated[t].items():
            out[f"{key}->{t}"] = frechet_distance(real, np.concatenate(chunks))
    return out


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance between distinct rows of ``features`` (n, d), n >= 2: sum_{i != j} ||f_i - f_j|| /
    (n (n - 1)), in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"mean_pairwise_distance needs (n >= 2, d) features, got shape {f.shape}")
    squares = np.sum(f**2, axis=1)
    d2 = np.maximum(squares[:, None] + squares[None, :] - 2 * f @ f.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    return float(np.sum(np.sqrt(d2)) / (len(f) * (len(f) - 1)))


def label_diversity(
    model: Model,
    params,
    label: str,
    rng: jax.Array,
    features: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    samples: int = 100,
    real: Mapping[str, np.ndarray] | None = None,
    real_labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Sample diversity given the label: {"<label>->t": mean over classes of the mean pairwise feature distance of
    ``samples`` images x_t = E[x_t | z], z ~ q(z | class)} for each modality t in ``features``.

    0 means one image per class (no diversity). With ``real`` and
    ``real_labels``, "real t" is the same statistic of the real images of each
    class (at most ``samples`` per class): the data's own diversity, for scale.
    """
    classes = {m.name: m for m in model.modalities}[label].shape[-1]
    targets = tuple(t for t in model.names if t in features)
    per_class = {t: [] for t in targets}
    for c in range(classes):
        means = label_samples(model, params, label, (c,), samples, targets, jax.random.fold_in(rng, c))
        for t in targets:
            per_class[t].append(mean_pairwise_distance(features[t](means[t])))
    out = {f"{label}->{t}": float(np.mean(v)) for t, v in per_class.items()}
    if real is not None and real_labels is not None:
        for t in targets:
            values = [
                mean_pairwise_distance(features[t](np.asarray(real[t])[np.flatnonzero(real_labels == c)[:samples]]))
                for c in range(classes)
                if np.sum(real_labels == c) >= 2
            ]
            out[f"real {t}"] = float(np.mean(values))
    return out
