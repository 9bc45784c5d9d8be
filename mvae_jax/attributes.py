"""Attribute scorers: a multi-label CNN that tells which binary attributes an image carries (CelebA's faces).

A data set whose contract declares ``Scorer(OWN_SPLIT, targets=<vector modality>)`` (CelebA:
``image`` scored for its ``attributes``) gets one CNN trained on its own training split: the image
modality against the entries of the target modality, one sigmoid output per entry, on the mean binary
cross-entropy. It is trained once and cached like the class scorers (``classifiers.load_or_train``), its
cache keyed by the data's fingerprint and the entries it predicts.

``eval.py --query=Female,Heavy_Makeup`` uses it to report how often the faces generated from a query carry
the queried attributes (``query_agreement``), beside the same rate for faces generated from the prior:
the measure of the seed paper's CelebA claim that too large a beta generates faces that no longer match
the query (Vedantam et al. 2018 score their CelebA queries the same way, with an attribute classifier).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mvae_jax import classifiers
from mvae_jax.networks import Classifier

EVAL_BATCH = 1000  # images per batch when the test split is scored


def batches(split, batch_size: int, seed: int | None) -> Iterator[dict[str, np.ndarray]]:
    """Batches of a split in memory (a dict of arrays) or streamed (``data.Stream``): shuffled by ``seed`` and
    the last partial one dropped, or (``seed`` None) in file order, all of them."""
    if not isinstance(split, dict):
        yield from split.batches(batch_size, seed=seed, drop_remainder=seed is not None)
        return
    n = len(next(iter(split.values())))
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    stop = n if seed is None else n - n % batch_size
    for i in range(0, stop, batch_size):
        yield {k: v[order[i : i + batch_size]] for k, v in split.items()}


def train_attribute_classifier(
    train,
    image: str,
    targets: str,
    recipe: classifiers.Recipe,
    on_epoch: Callable[[int, float], None] | None = None,
):
    """Parameters of a ``Classifier`` with one logit per entry of ``targets``, trained on the split ``train``
    (in memory or streamed): images ``train[image]`` (n, H, W, C) in [0, 1] against ``train[targets]`` (n, k)
    in {0, 1}, on the mean sigmoid cross-entropy, with the recipe's Adam and cosine decay. Each epoch a fresh
    order (seed ``recipe.seed`` * 1000 + epoch); ``on_epoch(epoch, mean loss)`` after each."""
    n = len(train) if not isinstance(train, dict) else len(train[image])
    if n < 1:
        raise ValueError("no training images")
    batch_size = min(recipe.batch_size, n)
    steps = n // batch_size
    first = next(batches(train, batch_size, None))
    network = Classifier(first[targets].shape[-1])
    params = network.init(jax.random.PRNGKey(recipe.seed), jnp.asarray(first[image][:1]))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(recipe.learning_rate, recipe.epochs * steps))
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, images, values):
        def loss_fn(p):
            return optax.sigmoid_binary_cross_entropy(network.apply({"params": p}, images), values).mean()

        return classifiers.adam_update(tx, loss_fn, params, opt_state)

    for e in range(recipe.epochs):
        total, done = jnp.float32(0.0), 0
        for batch in batches(train, batch_size, recipe.seed * 1000 + e):
            params, opt_state, loss = step(params, opt_state, batch[image], batch[targets])
            total, done = total + loss, done + 1
        if on_epoch is not None:
            on_epoch(e + 1, float(total) / max(done, 1))
    return params


@functools.partial(jax.jit, static_argnums=0)
def _carried(classes: int, params, images):
    return Classifier(classes).apply({"params": params}, images) > 0


def predict_attributes(params, images, batch_size: int = 2000) -> np.ndarray:
    """Whether each image (n, H, W, C) in [0, 1] carries each attribute (logit > 0): (n, k) bool."""
    classes = params["dense_1"]["bias"].shape[0]
    return classifiers._in_batches(_carried, params, images, batch_size, np.zeros((0, classes), bool))


def query_agreement(carried: np.ndarray, values: np.ndarray, named: np.ndarray, names: Sequence[str]) -> dict:
    """How often images carry what a query asked: ``carried`` (n, k) bool from ``predict_attributes``,
    ``values``/``named`` (k,) from ``evaluation.parse_query`` over the attributes ``names``.

    {"<attribute>=<0|1>": the fraction of the n images whose predicted attribute is the queried value, for
    each named one; "all": the fraction that match every named one}.
    """
    carried, values, named = np.asarray(carried, bool), np.asarray(values) > 0.5, np.asarray(named) > 0
    columns = np.flatnonzero(named)
    match = carried[:, columns] == values[columns]
    out = {f"{names[c]}={int(values[c])}": float(match[:, j].mean()) for j, c in enumerate(columns)}
    out["all"] = float(match.all(axis=1).mean())
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class AttributeSplit:
    """The image modality ``modality`` of a data set's training split against the binary entries ``names`` of
    its vector modality ``targets``, and its test split: what an attribute scorer is fit on and tested on.

    ``fingerprint`` keys its cache: the data set's own checksum of the modality (``Dataset.fingerprints``;
    CelebA's is that of its attribute and partition files), the modalities and the entries; or, for a data
    set in memory without one, a SHA-256 of the arrays. A streamed data set must declare one.
    """

    dataset: Any
    modality: str
    targets: str
    names: tuple[str, ...]

    @functools.cached_property
    def fingerprint(self) -> str:
        key = f"{self.modality}<-{self.targets}:{','.join(self.names)}"
        if self.dataset.fingerprints is not None and self.modality in self.dataset.fingerprints:
            return hashlib.sha256(f"{self.dataset.fingerprints[self.modality]}/{key}".encode()).hexdigest()
        if self.dataset.is_streamed:
            raise ValueError(
                f"data set {self.dataset.name} is streamed and declares no fingerprint of {self.modality!r} "
                "(Dataset.fingerprints), which keys the cache of its attribute scorer"
            )
        digest = hashlib.sha256(key.encode())
        for split in ("train", "test"):
            for name in (self.modality, self.targets):
                digest.update(np.ascontiguousarray(getattr(self.dataset, split)[name], np.float32).tobytes())
        return digest.hexdigest()

    def fit(self, recipe: classifiers.Recipe, on_epoch=None):
        return train_attribute_classifier(self.dataset.train, self.modality, self.targets, recipe, on_epoch)

    def evaluate(self, params) -> dict:
        """info.json's entries: the mean over the attributes of the test accuracy, each attribute's, and each
        attribute's majority rate on test (the accuracy of always answering its more frequent value)."""
        right, ones, n, shape = 0, 0, 0, None
        for batch in batches(self.dataset.split("test"), EVAL_BATCH, None):
            truth = batch[self.targets] > 0.5
            right = right + (predict_attributes(params, batch[self.modality]) == truth).sum(0)
            ones, n, shape = ones + truth.sum(0), n + len(truth), batch[self.modality].shape[1:]
        if n == 0:
            raise ValueError(f"data set {self.dataset.name} has no test examples to test its attribute scorer on")
        accuracy, majority = right / n, np.maximum(ones, n - ones) / n
        return {
            "classes": len(self.names),
            "input_shape": list(shape),
            "targets": self.targets,
            "test_accuracy": float(accuracy.mean()),
            "test_examples": int(n),
            "attribute_accuracy": {a: float(v) for a, v in zip(self.names, accuracy)},
            "attribute_majority": {a: float(v) for a, v in zip(self.names, majority)},
        }
