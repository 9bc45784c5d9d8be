"""The trimodal set: x = an MNIST digit, y = a Fashion-MNIST item of the same class, w = the class.

Pairing (deterministic for a given ``pair_seed``): within each class c, the
k-th MNIST image of class c (in file order) gets the Fashion-MNIST image
``perm_c[k mod n_c]``, where ``perm_c`` is a permutation of the n_c
Fashion-MNIST indices of class c drawn with ``numpy.random.default_rng(pair_seed)``
(classes in order 0..9). Every Fashion-MNIST image is used once before any is
reused. The test set pairs the two test splits the same way.

``--validation=N`` then holds out N of the 60,000 training pairs
(``mvae_jax.data.hold_out``): pairing comes first, so a pair is the same
whatever N is. Fashion-MNIST has 6,000 training images per class and MNIST up
to 6,742, so in the classes where MNIST has more the pairing reuses some
Fashion-MNIST images, and a few of those can sit in both the training and the
validation split (as two different pairs); the test split shares no image
with either.
"""

from __future__ import annotations

import numpy as np

from mvae_jax.data import sources
from mvae_jax.data.contract import VALIDATION, DatasetSpec, Scorer
from mvae_jax.modality import Modality

MODALITIES = (
    Modality("x", (28, 28, 1), "bernoulli"),
    Modality("y", (28, 28, 1), "bernoulli"),
    Modality("w", (sources.NUM_CLASSES,), "categorical"),
)
CLASS_NAMES = tuple(f"{c} {name}" for c, name in enumerate(sources.FASHION_MNIST_CLASSES))
"""Class c pairs the digit c with the Fashion-MNIST class c: '0 T-shirt/top', '1 Trouser', ..."""


def pair_by_class(labels_a: np.ndarray, labels_b: np.ndarray, seed: int) -> np.ndarray:
    """For each element of ``labels_a``, the index of an element of ``labels_b`` with the same label: (len(a),)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels_a), np.int64)
    for c in range(sources.NUM_CLASSES):
        members_a = np.flatnonzero(labels_a == c)
        members_b = np.flatnonzero(labels_b == c)
        if len(members_a) and not len(members_b):
            raise ValueError(f"class {c} has {len(members_a)} examples to pair but none to pair them with")
        if len(members_b):
            perm = rng.permutation(members_b)
            out[members_a] = perm[np.arange(len(members_a)) % len(perm)]
    return out


def make_trimodal(mnist: sources.Split, fashion: sources.Split, seed: int) -> dict[str, np.ndarray]:
    """{"x": (n, 28, 28, 1), "y": (n, 28, 28, 1), "w": (n, 10)} float32, images in [0, 1], w one-hot."""
    x_images, x_labels = mnist
    y_images, y_labels = fashion
    pairs = pair_by_class(x_labels, y_labels, seed)
    return {
        "x": np.asarray(x_images, np.float32) / 255.0,
        "y": np.asarray(y_images[pairs], np.float32) / 255.0,
        "w": np.eye(sources.NUM_CLASSES, dtype=np.float32)[x_labels],
    }


def modalities(config) -> tuple[Modality, ...]:
    """``MODALITIES`` (the same for every run)."""
    return MODALITIES


def load(config):
    """The trimodal train and test sets for ``config.data_dir`` and ``config.pair_seed``."""
    from mvae_jax.data import Dataset

    mnist = sources.load_image_classification("mnist", config.data_dir)
    fashion = sources.load_image_classification("fashion_mnist", config.data_dir)
    from mvae_jax.data import hold_out

    splits = {s: make_trimodal(mnist[s], fashion[s], config.pair_seed) for s in sources.SPLITS}
    train, validation = hold_out(splits["train"], getattr(config, "validation", 0))
    return Dataset("trimodal", MODALITIES, train, splits["test"], validation=validation)


SPEC = DatasetSpec(
    "trimodal",
    modalities,
    load,
    labels="w",
    scorers={"x": Scorer("mnist"), "y": Scorer("fashion_mnist")},
    class_names=CLASS_NAMES,
    options=(VALIDATION,),
)
