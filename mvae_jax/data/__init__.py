"""Data sets as dicts of numpy arrays keyed by modality name.

This package is the only part of mvae_jax that imports TensorFlow or
tensorflow-datasets, lazily and with accelerators hidden from TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
from typing import Protocol

import numpy as np

from mvae_jax.data import celeba, mnist_label, trimodal
from mvae_jax.data.sources import DataNotFoundError
from mvae_jax.modality import Modality

VALIDATION_SEED = 0
"""Seed of the one permutation of the training pairs whose last N are the validation split (``--validation=N``)."""

SPLITS = ("train", "validation", "test")


def hold_out(train: dict[str, np.ndarray], num_validation: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, validation): the last ``num_validation`` training pairs of a fixed permutation held out.

    The permutation is ``numpy.random.default_rng(VALIDATION_SEED).permutation(n)``
    of the n training pairs, the same for every run, model and seed; both parts
    keep the pairs in file order. ``num_validation`` = 0 returns ``train`` unchanged
    and an empty validation split.
    """
    n = len(next(iter(train.values())))
    if not 0 <= num_validation < n:
        raise ValueError(
            f"validation={num_validation} is invalid; allowed: 0 to {n - 1} (the data set has {n} "
            "training pairs, and some must remain for training)"
        )
    if num_validation == 0:
        return train, {k: v[:0] for k, v in train.items()}
    order = np.random.default_rng(VALIDATION_SEED).permutation(n)
    keep, held = np.sort(order[: n - num_validation]), np.sort(order[n - num_validation :])
    return {k: v[keep] for k, v in train.items()}, {k: v[held] for k, v in train.items()}


class Stream(Protocol):
    """A split too large for memory, read batch by batch (``celeba.Stream``)."""

    def __len__(self) -> int: ...

    def batches(
        self,
        batch_size: int,
        seed: int | None = None,
        drop_remainder: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        skip: int = 0,
    ) -> Iterator[dict[str, np.ndarray]]: ...

    def take(self, n: int) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A paired multimodal data set: ``train``, ``test`` (and ``validation``) map modality name -> (n, *shape) float32.

    ``validation`` holds the training pairs set aside by ``--validation=N``
    (``hold_out``): the training split then lacks them; empty with N = 0.
    CelebA's is its official validation partition.

    Or, for data sets too large for memory (CelebA), each is a
    ``Stream`` that yields such dicts batch by batch (``is_streamed``).

    ``binarize`` names the modalities whose training values are probabilities
    to be resampled as Bernoulli draws at every step (dynamic binarization).
    """

    name: str
    modalities: tuple[Modality, ...]
    train: dict[str, np.ndarray] | Stream
    test: dict[str, np.ndarray] | Stream
    binarize: tuple[str, ...] = ()
    validation: dict[str, np.ndarray] | Stream | None = None

    def split(self, name: str):
        """The split ``name`` (train, validation or test); ValueError if this data set lacks it or it is empty."""
        if name not in SPLITS:
            raise ValueError(f"split={name!r} is invalid; allowed: {', '.join(SPLITS)}")
        data = getattr(self, name)
        if data is None or (isinstance(data, dict) and not len(next(iter(data.values())))):
            raise ValueError(
                f"this {self.name} run has no {name} split: train it with --validation=N (N > 0 "
                "training pairs held out), or evaluate --split=test"
            )
        return data

    @property
    def is_streamed(self) -> bool:
        return not isinstance(self.train, dict)

    @property
    def num_train(self) -> int:
        return len(self.train) if self.is_streamed else len(next(iter(self.train.values())))

    def labels(self, split: str = "test") -> np.ndarray:
        """Class of each example of ``split`` (argmax of the one-hot label modality): (n,)."""
        label = next(m.name for m in self.modalities if m.likelihood == "categorical")
        return np.argmax(self.split(split)[label], axis=-1)


DATASETS = {"trimodal": trimodal, "mnist_label": mnist_label, "celeba": celeba}
"""Name -> module with ``modalities(config)``, ``CLASSIFIED_BY`` ({image modality:
the classification set whose classifier scores it}), ``load(config) -> Dataset`` and,
for labelled sets, ``CLASS_NAMES`` (by label, for figures)."""


def load_dataset(config) -> Dataset:
    """The data set ``config.dataset``; ValueError naming the choices if unknown."""
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset={config.dataset!r} is unknown; allowed: {sorted(DATASETS)}")
    return DATASETS[config.dataset].load(config)


__all__ = ["DATASETS", "DataNotFoundError", "Dataset", "SPLITS", "hold_out", "load_dataset"]
