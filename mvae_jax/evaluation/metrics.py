"""Evaluation of a trained model: coherence, latent accuracy, importance-weighted likelihoods.

Every function takes the model (pure functions), its parameters and data as
dicts of arrays keyed by modality name; image modalities are scored by
classifiers passed in as functions (see :mod:`mvae_jax.classifiers`), so a
test can pass exact ones. Long loops report to an optional ``progress(n)``
callback (a tqdm bar's ``update``); the library itself never prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax import distributions
from mvae_jax.models import Model, check_present, subsets
from mvae_jax.models.base import per_model_jit

Classify = Callable[[np.ndarray], np.ndarray]  # images (n, *shape) in [0, 1] -> classes (n,)
Progress = Callable[[int], object] | None


def subset_key(present: Sequence[str]) -> str:
    """ "x,y" for the subset ("x", "y")."""
    return ",".join(present)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@per_model_jit(static_argnums=(0, 3))
def _posterior_mean(model: Model, params, batch, present):
    return model.encode(params, batch, present)[0]


def posterior_means(
    model: Model, params, data: Mapping[str, np.ndarray], present: Sequence[str], batch_size: int = 1000
) -> np.ndarray:
    """Means of q(z | present) for every example of ``data``: (n, latent).

    For mixture posteriors (MMVAE, MoPoE) the mean of the mixture.
    """
    present = check_present(present, model.names)
    n = len(data[present[0]])
    out = [
        np.asarray(_posterior_mean(model, params, {k: jnp.asarray(data[k][s]) for k in present}, present))
        for s in _batches(n, batch_size)
    ]
    return np.concatenate(out)


@per_model_jit(static_argnums=(0, 3, 4))
def _conditional_means(model: Model, params, batch, present, targets):
    """{t: E[x_t | z] at z = the mean of q(z | present)}: pixel or class probabilities (``Modality.mean``)."""
    mu = model.encode(params, batch, present)[0]
    logits = model.decode(params, mu)
    return {m.name: m.mean(logits[m.name]) for m in model.modalities if m.name in targets}


def classify_outputs(model: Model, outputs: Mapping[str, np.ndarray], classify: Mapping[str, Classify]):
    """{t: classes (n,)} of decoded outputs: argmax for categorical modalities, ``classify[t]`` for images."""
    kinds = {m.name: m.likelihood for m in model.modalities}
    out = {}
    for t, value in outputs.items():
        if kinds[t] == "categorical":
            out[t] = np.asarray(np.argmax(value, axis=-1))
        elif t in classify:
            out[t] = np.asarray(classify[t](np.asarray(value)))
    return out


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
) -> dict[str, float]:
    """Cross-modal coherence: accuracy of the class of x_t generated from x_S against the true class.

    For every non-empty subset S and modality t outside it, key ``"S->t"``
    (``"x,y->w"``): encode S (the posterior mean), decode t (its mean: pixel
    probabilities or class logits), classify it (``classify[t]`` for images,
    argmax for labels) and compare with ``labels``. Keys ``"joint->t"``:
    the same from all modalities to each of them (reconstruction). Image
    modalities without a classifier are left out.
    """
    labels = np.asarray(labels)
    pairs = coherence_pairs(model, classify)
    correct = {}
    for present, targets in pairs:
        for s in _batches(len(labels), batch_size):
            batch = {k: jnp.asarray(data[k][s]) for k in present}
            outputs = jax.device_get(_conditional_means(model, params, batch, present, targets))
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


@per_model_jit(static_argnums=(0, 3, 4))
def _prior_means(model: Model, params, rng, num_samples: int, latent: int):
    z = jax.random.normal(rng, (num_samples, latent))
    logits = model.decode(params, z)
    return {m.name: m.mean(logits[m.name]) for m in model.modalities}


def model_latent(model: Model, params) -> int:
    """Size of z, read from the parameters by one abstract encoding."""
    one = {m.name: jax.ShapeDtypeStruct((1, *m.shape), jnp.float32) for m in model.modalities}
    return jax.eval_shape(lambda p, b: model.encode(p, b, model.names)[0], params, one).shape[-1]


def prior_coherence(
    model: Model,
    params,
    rng: jax.Array,
    classify: Mapping[str, Classify],
    num_samples: int = 10_000,
    batch_size: int = 1000,
) -> float:
    """Fraction of z ~ p(z) whose decoded modalities all get the same class (every scorable modality)."""
    agree, done = 0, 0
    latent = model_latent(model, params)
    for i, s in enumerate(_batches(num_samples, batch_size)):
        outputs = jax.device_get(_prior_means(model, params, jax.random.fold_in(rng, i), s.stop - s.start, latent))
        classes = list(classify_outputs(model, outputs, classify).values())
        if len(classes) < 2:
            raise ValueError(f"prior coherence needs two scorable modalities, {model.name} has {len(classes)}")
        agree += int(np.sum(np.all([c == classes[0] for c in classes[1:]], axis=0)))
        done += s.stop - s.start
    return agree / done


def latent_accuracy(
    model: Model,
    params,
    train: Mapping[str, np.ndarray],
    train_labels: np.ndarray,
    test: Mapping[str, np.ndarray],
    test_labels: np.ndarray,
    progress: Progress = None,
    seed: int = 0,
) -> dict[str, float]:
    """{"S": test accuracy} of a logistic regression on the means of q(z | S), fit on ``train``, per subset S.

    scikit-learn's multinomial ``LogisticRegression`` (lbfgs) on standardised
    means: how linearly the latent space separates the classes.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    for present in subsets(model.names):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
        classifier.fit(posterior_means(model, params, train, present), np.asarray(train_labels))
        out[subset_key(present)] = float(
            classifier.score(posterior_means(model, params, test, present), np.asarray(test_labels))
        )
        if progress is not None:
            progress(1)
    return out


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
        for j, s in enumerate(_batches(n, batch_size)):
            batch = {k: jnp.asarray(data[k][s]) for k in model.names}
            step_rng = jax.random.fold_in(jax.random.fold_in(rng, i), j)
            total += float(
                jnp.sum(iw_log_likelihood(model, params, batch, present, targets, num_samples, chunk, step_rng))
            )
            if progress is not None:
                progress(s.stop - s.start)
        out[key] = total / n
    return out


def predict_labels(model: Model, params, batch: Mapping[str, jax.Array], present: tuple[str, ...], target: str):
    """argmax_k p(target = k | z = the mean of q(z | present)): (batch,) int."""
    return jnp.argmax(_conditional_means(model, params, batch, present, (target,))[target], axis=-1)


def label_accuracy(
    model: Model,
    params,
    data: Mapping[str, np.ndarray],
    present: Sequence[str],
    target: str = "w",
    labels: np.ndarray | None = None,
    batch_size: int = 1000,
) -> float:
    """Fraction of examples whose class decoded from q(z | present) to the categorical ``target`` is the true class.

    ``labels`` default to the argmax of ``data[target]`` (the one-hot label).
    """
    present = check_present(present, model.names)
    kinds = {m.name: m.likelihood for m in model.modalities}
    if kinds.get(target) != "categorical":
        raise ValueError(
            f"target={target!r} must be a categorical modality of {model.name}: "
            f"{[n for n, k in kinds.items() if k == 'categorical']}"
        )
    if target in present:
        raise ValueError(f"target={target!r} is among the present modalities {present}")
    labels = np.argmax(data[target], axis=-1) if labels is None else np.asarray(labels)
    correct = 0
    for s in _batches(len(labels), batch_size):
        batch = {k: jnp.asarray(data[k][s]) for k in present}
        correct += int(np.sum(np.asarray(predict_labels(model, params, batch, present, target)) == labels[s]))
    return correct / len(labels)


def parse_query(
    text: str,
    attributes: Sequence[str],
    known: Sequence[str] = (),
    aliases: Mapping[str, tuple[str, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """("Female,Heavy_Makeup", the run's attributes) -> (values, named), each (len(attributes),) float32.

    Items are comma separated: ``Name`` (has it), ``Name=1``, ``Name=0`` (has
    not), or an alias, {alias: (name, value)} ("Female" = Male=0; the data
    set's, e.g. ``celeba.QUERY_ALIASES``). ``named`` is 1 for the attributes
    the query names; the others are missing (not false). ``known``: every
    attribute of the data set (default: the run's). ValueError for unknown
    names (listing the valid ones), attributes the run does not model, bad
    values, contradictions and empty queries.
    """
    attributes = tuple(attributes)
    known, aliases = tuple(known) or attributes, dict(aliases or {})
    values, named = np.zeros(len(attributes), np.float32), np.zeros(len(attributes), np.float32)
    given = {}
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"query={text!r} names no attribute; e.g. --query=Female,Heavy_Makeup")
    for item in items:
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if value not in ("", "0", "1"):
            raise ValueError(f"query item {item!r}: the value must be 0 or 1 (Name=0, Name=1, or Name for 1)")
        bit = 1 if value in ("", "1") else 0
        if name in aliases:
            name, alias_bit = aliases[name]
            bit = alias_bit if bit else 1 - alias_bit
        if name not in known:
            raise ValueError(
                f"query item {item!r}: unknown attribute {name!r}; valid: "
                f"{', '.join(attributes)} and the aliases {', '.join(aliases)}"
            )
        if name not in attributes:
            raise ValueError(
                f"query item {item!r}: this run does not model {name!r}; it models {', '.join(attributes)}"
            )
        if given.get(name, bit) != bit:
            raise ValueError(f"query={text!r} asks for {name}=1 and {name}=0")
        given[name] = bit
        i = attributes.index(name)
        values[i], named[i] = bit, 1.0
    return values, named


@per_model_jit(static_argnames=("name", "num_samples", "steps"))
def query_latents(
    model: Model, params, rng: jax.Array, values: jax.Array, named: jax.Array, name: str, num_samples: int, steps: int
) -> jax.Array:
    """z (num_samples, latent) drawn given only the ``named`` entries of the vector modality ``name``.

    Missing entries are imputed by the model itself, by the pseudo-Gibbs chain
    of Rezende et al. 2014 (Sec. 5.2): start them at 1/2, then ``steps`` times
    draw z ~ q(z | x), x_missing ~ p(x_missing | z), keeping the named entries
    fixed; finally z ~ q(z | x). Each sample runs its own chain.
    """
    modality = next(m for m in model.modalities if m.name == name)
    values = jnp.broadcast_to(values, (num_samples, *values.shape))
    named = jnp.broadcast_to(named, values.shape) > 0

    def sample_z(key, x):
        mu, logvar = model.encode(params, {name: x}, (name,))
        return distributions.sample_gaussian(key, mu, logvar)

    def body(i, x):
        k_z, k_x = jax.random.split(jax.random.fold_in(rng, i))
        probs = modality.mean(model.decode(params, sample_z(k_z, x), (name,))[name])
        return jnp.where(named, values, jax.random.bernoulli(k_x, probs).astype(values.dtype))

    x = jax.lax.fori_loop(0, steps, body, jnp.where(named, values, 0.5))
    return sample_z(jax.random.fold_in(rng, steps), x)


def query_images(
    model: Model,
    params,
    rng: jax.Array,
    values: np.ndarray,
    named: np.ndarray,
    num_samples: int = 64,
    steps: int = 10,
    given: str = "attributes",
) -> dict[str, np.ndarray]:
    """{image modality: (num_samples, H, W, C) pixel means} generated from the query (values, named) on ``given``."""
    z = query_latents(model, params, rng, jnp.asarray(values), jnp.asarray(named), given, num_samples, steps)
    return _image_means(model, params, z)


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


@per_model_jit(static_argnums=(0, 3))
def _decoded_means(model: Model, params, z, targets):
    """{t: E[x_t | z]} for z (n, latent)."""
    logits = model.decode(params, z, targets)
    return {m.name: m.mean(logits[m.name]) for m in model.modalities if m.name in targets}


@per_model_jit(static_argnums=(0, 3, 4))
def _sampled_means(model: Model, params, batch, present, targets, rng):
    """{t: E[x_t | z]} at one z ~ q(z | present) per example (a mixture's component drawn as in training)."""
    mus, logvars = model.posterior(params, batch, present)
    return _decoded_means(model, params, distributions.sample_mixture(rng, mus, logvars, (1,))[0], targets)


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
) -> dict[str, float]:
    """{"S->t": FID} of generated images of each modality t in ``features`` against the real ones of ``data``.

    For every non-empty subset S without t: x_t's pixel means at one
    z ~ q(z | x_S) per pair (cross-modal generation); "joint->t": z ~ q(z | all)
    (reconstruction); "prior->t": as many z ~ p(z). The real set is ``data[t]``;
    ``features[t]`` maps images to the feature space (``classifiers.features``).
    ``progress(1)`` after each of ``fid_pairs`` and after the prior samples.
    Modalities in ``binarize`` have binary real images (mnist_label's test
    digits): their generated pixel means are replaced by one Bernoulli draw
    each, so that binary images meet binary images.
    """
    draw_key = jax.random.fold_in(rng, 1 << 20)

    def image_features(t, means, i, j):
        if t in binarize:
            key = jax.random.fold_in(jax.random.fold_in(draw_key, i), j)
            means = jax.random.bernoulli(key, means).astype(np.float32)
        return features[t](np.asarray(means))

    n = len(data[model.names[0]])
    targets = tuple(t for t in model.names if t in features)
    generated = {t: {"prior": []} for t in targets}
    pairs = fid_pairs(model, targets)
    for i, (present, wanted) in enumerate(pairs):
        key = "joint" if present == model.names else subset_key(present)
        for j, s in enumerate(_batches(n, batch_size)):
            batch = {k: jnp.asarray(data[k][s]) for k in present}
            means = _sampled_means(
                model, params, batch, present, wanted, jax.random.fold_in(jax.random.fold_in(rng, i), j)
            )
            for t in wanted:
                generated[t].setdefault(key, []).append(image_features(t, means[t], i, j))
        if progress is not None:
            progress(1)
    latent, prior_rng = model_latent(model, params), jax.random.fold_in(rng, len(pairs))
    for j, s in enumerate(_batches(n, batch_size)):
        z = jax.random.normal(jax.random.fold_in(prior_rng, j), (s.stop - s.start, latent))
        for t, images in _decoded_means(model, params, z, targets).items():
            generated[t]["prior"].append(image_features(t, images, len(pairs), j))
    if progress is not None:
        progress(1)
    out = {}
    for t in targets:
        real = features[t](np.asarray(data[t]))
        for key, chunks in generated[t].items():
            out[f"{key}->{t}"] = frechet_distance(real, np.concatenate(chunks))
    return out


def label_samples(
    model: Model, params, label: str, classes: Sequence[int], per_class: int, targets: Sequence[str], rng: jax.Array
) -> dict[str, np.ndarray]:
    """{t: (len(classes) * per_class, *shape)} pixel means E[x_t | z], z ~ q(z | label = c), ``per_class``
    consecutive images per class c of ``classes``."""
    size = {m.name: m for m in model.modalities}[label].shape[-1]
    onehot = np.eye(size, dtype=np.float32)[np.repeat(np.asarray(classes), per_class)]
    means = _sampled_means(model, params, {label: jnp.asarray(onehot)}, (label,), tuple(targets), rng)
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


def prior_images(model: Model, params, rng: jax.Array, num_samples: int = 16) -> dict[str, np.ndarray]:
    """{image modality: (num_samples, H, W, C) pixel means} decoded from z ~ p(z)."""
    return _image_means(model, params, jax.random.normal(rng, (num_samples, model_latent(model, params))))


def _image_means(model: Model, params, z: jax.Array) -> dict[str, np.ndarray]:
    """{image modality: E[x | z]} for z (n, latent): (n, H, W, C) each."""
    images = tuple(m for m in model.modalities if len(m.shape) == 3)
    logits = model.decode(params, z, tuple(m.name for m in images))
    return {m.name: np.asarray(m.mean(logits[m.name])) for m in images}
