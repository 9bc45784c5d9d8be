"""Coherence: how often generated values carry the class of what they were generated from (Shi et al. 2019; per
number of inputs as in Sutter et al. 2021), from the prior, and from the label alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.evaluation.metrics.common import (
    Classify,
    Progress,
    batches,
    classify_outputs,
    conditional_means,
    decoded_means,
    model_prior,
    private_key,
    sampled_means,
    subset_key,
)
from mvae_jax.evaluation.metrics.samplers import LatentSampler
from mvae_jax.models import Model, subsets


def scorable(model: Model, classify: Mapping[str, Classify]) -> tuple[str, ...]:
    """The modalities whose decoded values get a class: categorical ones (argmax) and those in ``classify``."""
    return tuple(m.name for m in model.modalities if m.likelihood == "categorical" or m.name in classify)


def coherence_pairs(model: Model, classify: Mapping[str, Classify]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(present, targets) pairs scored by ``coherence``: every non-empty subset and the modalities it lacks,
    then all modalities and each of them (reconstruction); targets limited to those that can be classified."""
    scored = scorable(model, classify)
    pairs = []
    for present in subsets(model.names):
        targets = tuple(t for t in scored if t not in present)
        if targets:
            pairs.append((present, targets))
    pairs.append((model.names, scored))
    return pairs


def coherence(
    model: Model,
    params,
    data: Mapping[str, np.ndarray],
    labels: np.ndarray,
    classify: Mapping[str, Classify],
    batch_size: int = 1000,
    progress: Progress = None,
    rng: jax.Array | None = None,
) -> dict[str, float]:
    """Cross-modal coherence: accuracy of the class of x_t generated from x_S against the true class.

    For every non-empty subset S and modality t outside it, key ``"S->t"``
    (``"x,y->w"``): encode S (the posterior mean), decode t (its mean: pixel
    probabilities or class logits), classify it (``classify[t]`` for images,
    argmax for labels) and compare with ``labels``. Keys ``"joint->t"``:
    the same from all modalities to each of them (reconstruction). Image
    modalities without a classifier are left out.

    With ``rng``, the papers' test-time generation instead (MoPoE's and MMVAE+'s code, MultiVae's
    ``CoherenceEvaluator``): one z ~ q(z | x_S) per example, and a model's private latents drawn from their
    prior p(w_m) (``Model.generate``), where without it they sit at the prior's mean.
    """
    labels = np.asarray(labels)
    pairs = coherence_pairs(model, classify)
    correct = {}
    for i, (present, targets) in enumerate(pairs):
        for j, s in enumerate(batches(len(labels), batch_size)):
            batch = {k: jnp.asarray(data[k][s]) for k in present}
            if rng is None:
                means = conditional_means(model, params, batch, present, targets)
            else:
                key = jax.random.fold_in(jax.random.fold_in(rng, i), j)
                means = sampled_means(model, params, batch, present, targets, key, private=True)
            outputs = jax.device_get(means)
            for t, pred in classify_outputs(model, outputs, classify).items():
                key = f"{'joint' if present == model.names else subset_key(present)}->{t}"
                correct[key] = correct.get(key, 0) + int(np.sum(pred == labels[s]))
        if progress is not None:
            progress(1)
    return {k: v / len(labels) for k, v in correct.items()}


def coherence_by_inputs(scores: Mapping[str, float]) -> dict[str, float]:
    """The conditional coherences of ``coherence`` averaged by the number of inputs: {"1": ..., "mean": ...}.

    Key ``"k"``: the mean of ``scores["S->t"]`` over every subset S of k modalities
    and every scored target t outside S, as the MoPoE paper (Sutter et al. 2021,
    Fig. 4) and MVTCAE plot coherence against the number of input modalities.
    ``"mean"``: the mean over every such (S, t), all sizes together (each pair
    counts once). Reconstructions (``"joint->t"``) are left out.
    """
    by_size: dict[int, list[float]] = {}
    for key, value in scores.items():
        given, _, _ = key.partition("->")
        if given != "joint" and "->" in key:
            by_size.setdefault(len(given.split(",")), []).append(value)
    out = {str(k): float(np.mean(v)) for k, v in sorted(by_size.items())}
    if by_size:
        out["mean"] = float(np.mean([x for v in by_size.values() for x in v]))
    return out


def prior_coherence(
    model: Model,
    params,
    rng: jax.Array,
    classify: Mapping[str, Classify],
    num_samples: int = 10_000,
    batch_size: int = 1000,
    sampler: LatentSampler | None = None,
    private: bool = False,
) -> float:
    """Fraction of z ~ p(z) (or ~ ``sampler``: ``metrics.samplers``) whose decoded modalities all get the same
    class (every scorable modality). ``private``: a model's private latents drawn from their prior, each
    modality its own (``Model.generate``), else at the prior's mean."""
    agree, done = 0, 0
    sampler = sampler or model_prior(model, params)
    for i, s in enumerate(batches(num_samples, batch_size)):
        key = jax.random.fold_in(rng, i)
        z = sampler.sample(key, s.stop - s.start)
        private_rng = private_key(key, private)
        outputs = jax.device_get(decoded_means(model, params, z, model.names, private_rng))
        classes = list(classify_outputs(model, outputs, classify).values())
        if len(classes) < 2:
            raise ValueError(f"prior coherence needs two scorable modalities, {model.name} has {len(classes)}")
        agree += int(np.sum(np.all([c == classes[0] for c in classes[1:]], axis=0)))
        done += s.stop - s.start
    return agree / done


def label_samples(
    model: Model, params, label: str, classes: Sequence[int], per_class: int, targets: Sequence[str], rng: jax.Array
) -> dict[str, np.ndarray]:
    """{t: (len(classes) * per_class, *shape)} pixel means E[x_t | z], z ~ q(z | label = c), ``per_class``
    consecutive images per class c of ``classes``."""
    size = {m.name: m for m in model.modalities}[label].shape[-1]
    onehot = np.eye(size, dtype=np.float32)[np.repeat(np.asarray(classes), per_class)]
    means = sampled_means(model, params, {label: jnp.asarray(onehot)}, (label,), tuple(targets), rng)
    return {t: np.asarray(means[t]) for t in targets}


def label_coherence(
    model: Model,
    params,
    label: str,
    rng: jax.Array,
    classify: Mapping[str, Classify],
    samples: int = 100,
) -> dict[str, float]:
    """Coherence of samples given the label: {"<label>->t": mean over classes c of the fraction of ``samples``
    images x_t = E[x_t | z], z ~ q(z | label = c), that ``classify[t]`` assigns to c}.

    ``coherence`` decodes the posterior mean, one image per class for a label;
    this scores draws from q(z | w) instead: whether the samples match the
    query (the paper's Figures 3-6). With the same ``rng`` and ``samples`` the
    images are those of ``label_diversity``.
    """
    classes = {m.name: m for m in model.modalities}[label].shape[-1]
    targets = tuple(t for t in model.names if t in classify)
    hits = dict.fromkeys(targets, 0)
    for c in range(classes):
        means = label_samples(model, params, label, (c,), samples, targets, jax.random.fold_in(rng, c))
        for t in targets:
            hits[t] += int(np.sum(np.asarray(classify[t](means[t])) == c))
    return {f"{label}->{t}": n / (classes * samples) for t, n in hits.items()}  # as many samples per class
