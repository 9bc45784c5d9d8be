"""Image classifiers that score generated images (coherence), trained once and cached with orbax.

A classifier is trained on the classification set an image modality comes
from (MNIST for x, Fashion-MNIST for y), or, for a data set whose contract
says so (``contract.OWN_SPLIT``: PolyMNIST), on that modality of the data set's
own training pairs (``OwnSplit``); never on the model's outputs. The
cache holds one folder per (data set, recipe): ``<dir>/<name>-e<epochs>-s<seed>/``
with the orbax checkpoint of the parameters in ``params/`` and ``info.json``,
written last, so a folder without ``info.json`` (an interrupted training) is
never read and is trained again.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
from pathlib import Path
import shutil
from typing import Any

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from mvae_jax.files import atomic_write_bytes, atomic_write_text
from mvae_jax.networks import Classifier

log = logging.getLogger(__name__)

INFO_FILE = "info.json"
VERSION = 2  # bump when the architecture or the recipe changes: old caches are then not reused.


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a classifier is trained: Adam with a cosine decay of the learning rate, on the cross-entropy."""

    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0


# Epochs that reach the accuracy we score with (MNIST >= 0.99, Fashion-MNIST >= 0.90 on test):
# measured 0.9908 for MNIST after 5 epochs; Fashion-MNIST reached 0.8982 after 5, so it gets 10.
# CelebA's attribute CNN (mvae_jax.attributes): 2 epochs of its 162,770 training faces, not measured here (CelebA
# is not on this machine); its info.json and eval.py's metrics.json record its test accuracy per attribute.
DEFAULT_EPOCHS = {"mnist": 5, "fashion_mnist": 10, "celeba/image": 2}


class _LabelledImages:
    """Images and their classes, split into train and test: what a class scorer is fit on (``fit``) and tested on
    (``evaluate``). Subclasses give ``splits()``; ``fingerprint`` None keys the cache by the scorer's name only."""

    fingerprint: str | None = None

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    @functools.cached_property
    def _splits(self):
        return self.splits()

    def fit(self, recipe: "Recipe", on_epoch=None):
        """Parameters of a ``Classifier`` trained on the training split (``train_classifier``)."""
        images, labels = self._splits["train"]
        return train_classifier(images, labels, recipe, on_epoch)

    def evaluate(self, params) -> dict:
        """The entries of info.json that describe the scorer ``params`` and its test accuracy."""
        (train_images, train_labels), (test_images, test_labels) = self._splits["train"], self._splits["test"]
        return {
            "classes": int(train_labels.max()) + 1,
            "input_shape": list(train_images.shape[1:]),
            "test_accuracy": accuracy(params, test_images, test_labels),
        }


@dataclasses.dataclass(frozen=True, eq=False)
class SourceSet(_LabelledImages):
    """An image classification set (``mnist``, ``fashion_mnist``) from ``data_dir`` or tensorflow-datasets, or
    one a plugin registered (``plugins.register_source``)."""

    name: str
    data_dir: str | None = None

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{"train": (images (n, H, W, C) float32 in [0, 1], labels (n,)), "test": ...}."""
        from mvae_jax import plugins
        from mvae_jax.data import sources

        if self.name in plugins.SOURCES:  # registered by a plugin: images already float32 in [0, 1]
            splits = plugins.SOURCES[self.name](self.data_dir)
            return {s: (np.asarray(images, np.float32), np.asarray(labels)) for s, (images, labels) in splits.items()}
        splits = sources.load_image_classification(self.name, self.data_dir)
        return {s: (np.asarray(images, np.float32) / 255.0, labels) for s, (images, labels) in splits.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class OwnSplit(_LabelledImages):
    """One modality of a data set's own training pairs (validation included) and test split, with its classes:
    what a scorer of ``contract.OWN_SPLIT`` trains and is tested on. ``fingerprint`` keys its cache and its
    shipped weights: the data set's own for the modality (``Dataset.fingerprints``) or a SHA-256 of the arrays."""

    dataset: Any
    modality: str

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{"train": (images (n, H, W, C) float32 in [0, 1], labels (n,)), "test": ...}."""
        data, labels = self.dataset.training_pairs()
        test = self.dataset.split("test")
        return {"train": (data[self.modality], labels), "test": (test[self.modality], self.dataset.labels("test"))}

    @functools.cached_property
    def fingerprint(self) -> str:
        if self.dataset.fingerprints is not None:
            return hashlib.sha256(f"{self.dataset.fingerprints[self.modality]}/{self.modality}".encode()).hexdigest()
        digest = hashlib.sha256()
        for images, labels in self._splits.values():
            digest.update(repr(images.shape).encode())
            digest.update(np.ascontiguousarray(images, np.float32).tobytes())
            digest.update(np.asarray(labels, np.int64).tobytes())
        return digest.hexdigest()


def default_recipe(name: str) -> Recipe:
    """The recipe of the cached classifier of ``name`` that eval.py uses by default."""
    return Recipe(epochs=DEFAULT_EPOCHS.get(name, Recipe.epochs))


def default_directory() -> Path:
    """$MVAE_JAX_CACHE/classifiers, by default ~/.cache/mvae_jax/classifiers."""
    return Path(os.environ.get("MVAE_JAX_CACHE", Path.home() / ".cache" / "mvae_jax")) / "classifiers"


def adam_update(tx, loss_fn, params, opt_state):
    """(params, opt_state, loss) after one step of ``tx`` on ``loss_fn(params)`` (inside a jitted step)."""
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    recipe: Recipe = Recipe(),
    on_epoch: Callable[[int, float], None] | None = None,
):
    """Parameters of a ``Classifier`` trained on images (n, H, W, C) in [0, 1] and labels (n,) int.

    Whole epochs of a fresh permutation each (the last partial batch dropped;
    the batch shrinks to the data set if that is smaller),
    one jitted step per batch with the data on the device; ``on_epoch(epoch,
    mean loss)`` after each. A Python loop, not a ``lax.scan``: XLA's CPU
    convolutions run about 16 times slower inside a loop body (measured with
    jax 0.10.2, 2.2 s against 0.14 s per step of 128).
    """
    network = Classifier(int(labels.max()) + 1)
    rng = jax.random.PRNGKey(recipe.seed)
    init_rng, rng = jax.random.split(rng)
    params = network.init(init_rng, jnp.zeros((1, *images.shape[1:]), jnp.float32))["params"]
    n = len(labels)
    if n < 1:
        raise ValueError("no training images")
    batch_size = min(recipe.batch_size, n)
    steps = n // batch_size
    tx = optax.adam(optax.cosine_decay_schedule(recipe.learning_rate, recipe.epochs * steps))
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, images, labels, indices):
        def loss_fn(p):
            logits = network.apply({"params": p}, images[indices])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels[indices]).mean()

        return adam_update(tx, loss_fn, params, opt_state)

    images, labels = jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)
    for e in range(recipe.epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(rng, e), n))
        order = order[: steps * batch_size].reshape(steps, batch_size)
        total = jnp.float32(0.0)
        for indices in order:
            params, opt_state, loss = step(params, opt_state, images, labels, indices)
            total = total + loss
        if on_epoch is not None:
            on_epoch(e + 1, float(total) / steps)
    return params


@functools.partial(jax.jit, static_argnums=0)
def _logits(classes: int, params, images):
    return Classifier(classes).apply({"params": params}, images)


@functools.partial(jax.jit, static_argnums=0)
def _features(classes: int, params, images):
    _, state = Classifier(classes).apply(
        {"params": params}, images, capture_intermediates=lambda module, method: module.name == "dense_0"
    )
    return jax.nn.relu(state["intermediates"]["dense_0"]["__call__"][0])


def _in_batches(fn, params, images, batch_size: int, empty: np.ndarray) -> np.ndarray:
    """``fn(classes, params, batch)`` over ``images`` (n, H, W, C) ``batch_size`` at a time, concatenated."""
    classes = params["dense_1"]["bias"].shape[0]
    images = np.asarray(images, np.float32)
    out = [np.asarray(fn(classes, params, images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else empty


def features(params, images, batch_size: int = 2000) -> np.ndarray:
    """The CNN's penultimate layer (after its ReLU) for images (n, H, W, C) in [0, 1]: (n, 128) float32.

    The feature space of ``metrics.frechet_distance`` (eval.py's ``fid``), as
    FID uses Inception's pool layer.
    """
    empty = np.zeros((0, params["dense_0"]["bias"].shape[0]), np.float32)
    return _in_batches(_features, params, images, batch_size, empty)


def _predicted(classes: int, params, images):
    return jnp.argmax(_logits(classes, params, images), -1)


def predict(params, images, batch_size: int = 2000) -> np.ndarray:
    """argmax class of each image (n, H, W, C) in [0, 1]: (n,) int."""
    return _in_batches(_predicted, params, images, batch_size, np.zeros((0,), np.int64))


def accuracy(params, images, labels) -> float:
    """Fraction of ``images`` whose predicted class is ``labels``."""
    return float(np.mean(predict(params, images) == np.asarray(labels)))


def load_or_train(
    name: str,
    data_dir: str | None,
    directory: str | os.PathLike | None = None,
    recipe: Recipe = Recipe(),
    on_epoch: Callable[[int, float], None] | None = None,
    data=None,
):
    """(params, info) of the classifier of ``name`` (``mnist``, ``fashion_mnist``), trained now if not cached.

    With ``data`` (an ``OwnSplit``, or an ``attributes.AttributeSplit``: anything with ``fingerprint``, ``fit``
    and ``evaluate``), the scorer ``name`` (``polymnist/m0``, ``celeba/image``) of that data set's own split,
    its cache folder keyed by the data's fingerprint. ``info`` holds the data set, the recipe and the test
    accuracy measured when it was trained.
    """
    directory = Path(directory if directory is not None else default_directory()).absolute()
    data = data if data is not None else SourceSet(name, data_dir)
    fingerprint = data.fingerprint
    stem = name if fingerprint is None else f"{name.replace('/', '-')}-{fingerprint[:16]}"
    folder = directory / f"{stem}-v{VERSION}-e{recipe.epochs}-s{recipe.seed}"
    info_path = folder / INFO_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        template = _template(info["classes"], info["input_shape"], recipe.seed)
        params = ocp.StandardCheckpointer().restore(folder / "params", template)
        log.info("classifier %s from %s (test accuracy %.4f)", name, folder, info["test_accuracy"])
        return params, info

    log.info("training the %s classifier (%d epochs), cached in %s", name, recipe.epochs, folder)
    params = data.fit(recipe, on_epoch)
    info = {
        "dataset": name,
        **data.evaluate(params),
        "recipe": dataclasses.asdict(recipe),
        "version": VERSION,
        **({} if fingerprint is None else {"data_sha256": fingerprint}),
    }
    if folder.exists():  # an interrupted earlier training: nothing in it was marked complete
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(folder / "params", params)
    checkpointer.wait_until_finished()
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    log.info("classifier %s: test accuracy %.4f", name, info["test_accuracy"])
    return params, info


SHIPPED_DIR = Path(__file__).parent / "weights"  # the shipped scorers: <name>.npz and their record
SHIPPED_RECORD = "classifiers.json"  # per data set: recipe, test accuracy, SHA-256 of the .npz, how it was made


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_weights(params, path: str | os.PathLike) -> str:
    """Write ``params`` as one .npz of float32 arrays keyed by their path ('conv_0/kernel'); returns its SHA-256.

    The bytes depend on the values only (fixed key order, no timestamps), so
    the same parameters give the same checksum.
    """
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(flat[k], np.float32) for k in sorted(flat)})
    atomic_write_bytes(Path(path), buffer.getvalue())
    return sha256(path)


def load_weights(path: str | os.PathLike, expected_sha256: str | None = None):
    """The parameters a ``save_weights`` file holds; ValueError if its SHA-256 is not ``expected_sha256``."""
    path = Path(path)
    if expected_sha256 is not None and (actual := sha256(path)) != expected_sha256:
        raise ValueError(
            f"{path} has SHA-256 {actual}, not the recorded {expected_sha256}: the file is damaged or was "
            "changed; restore it (git checkout) or regenerate it with scripts/train_classifiers.py"
        )
    with np.load(path) as arrays:
        return traverse_util.unflatten_dict({k: jnp.asarray(arrays[k]) for k in arrays.files}, sep="/")


def shipped_record(directory: str | os.PathLike | None = None) -> dict:
    """{data set name: record} of the shipped scorers (empty if none are shipped)."""
    path = Path(directory if directory is not None else SHIPPED_DIR) / SHIPPED_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def load_shipped(name: str, directory: str | os.PathLike | None = None, data=None):
    """(params, info) of the scorer of ``name`` shipped with the package, checksum verified; None if none ships.

    A scorer of a data set's own split (``data``) ships for the data it was trained on: None, and a log line
    saying so, when ``data``'s fingerprint is another (a PolyMNIST built from other backgrounds).
    """
    directory = Path(directory if directory is not None else SHIPPED_DIR)
    info = shipped_record(directory).get(name)
    if info is None:
        return None
    if data is not None and info.get("data_sha256") != data.fingerprint:
        log.info(
            "classifier %s: the shipped one was trained on other data (%s); training one on this data",
            name,
            info.get("data_sha256", "unrecorded")[:16],
        )
        return None
    params = load_weights(directory / info["file"], info["sha256"])
    log.info("classifier %s: shipped weights %s (test accuracy %.4f)", name, info["file"], info["test_accuracy"])
    return params, info


def _template(classes: int, input_shape, seed: int):
    """Abstract parameters of a Classifier, the restore target."""
    x = jnp.zeros((1, *input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda: Classifier(classes).init(jax.random.PRNGKey(seed), x)["params"])
    return shapes
