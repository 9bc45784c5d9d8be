"""MNIST image + label, the two-modality benchmark of Suzuki et al. 2016 (JMVAE, Sec. 4.1).

x = a binarized MNIST digit, w = its class (one-hot). As in the paper's
log-likelihood experiments (and MultiVae's reproduction of them), the
training images are binarized dynamically: every step draws each pixel from
Bernoulli(gray level) afresh (``Dataset.binarize``). The test images are
binarized once, with a fixed seed (``TEST_BINARIZATION_SEED``), so every
evaluation scores the same binary test set. A validation split
(``--validation=N``, held out of the training images by
``mvae_jax.data.hold_out``) is binarized once in the same way, with
``VALIDATION_BINARIZATION_SEED``.
"""

from __future__ import annotations

import numpy as np

from mvae_jax.data import sources
from mvae_jax.data.contract import VALIDATION, DatasetSpec, Scorer
from mvae_jax.modality import Modality

MODALITIES = (
    Modality("x", (28, 28, 1), "bernoulli"),
    Modality("w", (sources.NUM_CLASSES,), "categorical"),
)
CLASS_NAMES = tuple(str(c) for c in range(sources.NUM_CLASSES))
TEST_BINARIZATION_SEED = 0
VALIDATION_BINARIZATION_SEED = 1


def modalities(config) -> tuple[Modality, ...]:
    """``MODALITIES`` (the same for every run)."""
    return MODALITIES


def load(config):
    """Train (gray levels, binarized per step in training) and test (binarized once) splits."""
    from mvae_jax.data import Dataset, hold_out

    mnist = sources.load_image_classification("mnist", config.data_dir)
    splits = {}
    for split, (images, labels) in mnist.items():
        splits[split] = {
            "x": np.asarray(images, np.float32) / 255.0,
            "w": np.eye(sources.NUM_CLASSES, dtype=np.float32)[labels],
        }
    splits["train"], splits["validation"] = hold_out(splits["train"], getattr(config, "validation", 0))
    for split, seed in (("test", TEST_BINARIZATION_SEED), ("validation", VALIDATION_BINARIZATION_SEED)):
        gray = splits[split]["x"]
        rng = np.random.default_rng(seed)
        splits[split]["x"] = (rng.random(gray.shape, dtype=np.float32) < gray).astype(np.float32)
    return Dataset(
        "mnist_label", MODALITIES, splits["train"], splits["test"], binarize=("x",), validation=splits["validation"]
    )


SPEC = DatasetSpec(
    "mnist_label",
    modalities,
    load,
    labels="w",
    scorers={"x": Scorer("mnist")},
    class_names=CLASS_NAMES,
    options=(VALIDATION,),
)
