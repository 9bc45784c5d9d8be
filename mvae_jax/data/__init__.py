"""Data sets as dicts of numpy arrays keyed by modality name.

This package is the only part of mvae_jax that imports TensorFlow or
tensorflow-datasets, lazily and with accelerators hidden from TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mvae_jax.data import celeba, mnist_label, trimodal
from mvae_jax.data.sources import DataNotFoundError
from mvae_jax.modality import Modality


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A paired multimodal data set: ``train`` and ``test`` map modality name -> (n, *shape) float32.

    Or, for data sets too large for memory (CelebA), each is a
    ``celeba.Stream`` that yields such dicts batch by batch (``is_streamed``).

    ``binarize`` names the modalities whose training values are probabilities
    to be resampled as Bernoulli draws at every step (dynamic binarization).
    """

    name: str
    modalities: tuple[Modality, ...]
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    binarize: tuple[str, ...] = ()

    @property
    def is_streamed(self) -> bool:
        return isinstance(self.train, celeba.Stream)

    @property
    def num_train(self) -> int:
        return len(self.train) if self.is_streamed else len(next(iter(self.train.values())))

    def labels(self, split: str = "test") -> np.ndarray:
        """Class of each example of ``split`` (argmax of the one-hot label modality): (n,)."""
        label = next(m.name for m in self.modalities if m.likelihood == "categorical")
        return np.argmax(getattr(self, split)[label], axis=-1)


DATASETS = {"trimodal": trimodal, "mnist_label": mnist_label, "celeba": celeba}
"""Name -> module with ``modalities(config)``, ``CLASSIFIED_BY`` ({image modality:
the classification set whose classifier scores it}) and ``load(config) -> Dataset``."""


def load_dataset(config) -> Dataset:
    """The data set ``config.dataset``; ValueError naming the choices if unknown."""
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset={config.dataset!r} is unknown; allowed: {sorted(DATASETS)}")
    return DATASETS[config.dataset].load(config)


__all__ = ["DATASETS", "DataNotFoundError", "Dataset", "load_dataset"]
