"""MNIST image + label, the two-modality benchmark of Suzuki et al. 2016 (JMVAE, Sec. 4.1).

x = a binarized MNIST digit, w = its class (one-hot). As in the paper's
log-likelihood experiments (and MultiVae's reproduction of them), the
training images are binarized dynamically: every step draws each pixel from
Bernoulli(gray level) afresh (``Dataset.binarize``). The test images are
binarized once, with a fixed seed (``TEST_BINARIZATION_SEED``), so every
evaluation scores the same binary test set.
"""

from __future__ import annotations

import numpy as np

from mvae_jax.data import sources
from mvae_jax.modality import Modality

MODALITIES = (
    Modality("x", (28, 28, 1), "bernoulli"),
    Modality("w", (sources.NUM_CLASSES,), "categorical"),
)
CLASSIFIED_BY = {"x": "mnist"}
TEST_BINARIZATION_SEED = 0


def modalities(config) -> tuple[Modality, ...]:
    """``MODALITIES`` (the same for every run)."""
    return MODALITIES


def load(config):
    """Train (gray levels, binarized per step in training) and test (binarized once) splits."""
    from mvae_jax.data import Dataset

    mnist = sources.load_image_classification("mnist", config.data_dir)
    splits = {}
    for split, (images, labels) in mnist.items():
        splits[split] = {
            "x": np.asarray(images, np.float32) / 255.0,
            "w": np.eye(sources.NUM_CLASSES, dtype=np.float32)[labels],
        }
    gray = splits["test"]["x"]
    rng = np.random.default_rng(TEST_BINARIZATION_SEED)
    splits["test"]["x"] = (rng.random(gray.shape, dtype=np.float32) < gray).astype(np.float32)
    return Dataset("mnist_label", MODALITIES, splits["train"], splits["test"], binarize=("x",))
