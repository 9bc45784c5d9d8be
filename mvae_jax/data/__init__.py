"""Data sets as dicts of numpy arrays keyed by modality name.

This package is the only part of mvae_jax that imports TensorFlow or
tensorflow-datasets, lazily and with accelerators hidden from TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
from typing import Protocol

import numpy as np

from mvae_jax.data import celeba, mnist_label, polymnist, trimodal
from mvae_jax.data.contract import FROM_FILES, OWN_SPLIT, DatasetSpec, Scorer
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

    ``class_labels`` ({split: (n,) int}) holds the classes of a data set whose
    labels come with its files (``contract.FROM_FILES``), ``label_modality`` the
    modality whose argmax is the class; ``load_dataset`` fills it from the spec.
    ``fingerprints``: {modality: a checksum of its data} (PolyMNIST's manifests),
    which key the scorers trained on the data set's own split; None: computed from the arrays.
    """

    name: str
    modalities: tuple[Modality, ...]
    train: dict[str, np.ndarray] | Stream
    test: dict[str, np.ndarray] | Stream
    binarize: tuple[str, ...] = ()
    validation: dict[str, np.ndarray] | Stream | None = None
    class_labels: dict[str, np.ndarray] | None = None
    label_modality: str | None = None
    fingerprints: dict[str, str] | None = None

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

    @property
    def labelled(self) -> bool:
        return self.class_labels is not None or self.label_modality is not None

    def labels(self, split: str = "test") -> np.ndarray:
        """Class of each example of ``split``: (n,) int, from the files or the argmax of the label modality.

        ValueError naming the data set if it has no class labels.
        """
        data = self.split(split)
        if self.class_labels is not None:
            return self.class_labels[split]
        if self.label_modality is None:
            raise ValueError(f"the {self.name} data set has no class labels (its contract declares none)")
        return np.argmax(data[self.label_modality], axis=-1)

    def first_training_examples(self, n: int) -> "Dataset":
        """This data set with only the first ``n`` training examples (``--train_examples``); ValueError if it is
        streamed or has fewer."""
        if self.is_streamed:
            raise ValueError(f"train_examples={n}: the {self.name} data set is streamed from disk; allowed: 0 (all)")
        if not 1 <= n <= self.num_train:
            raise ValueError(
                f"train_examples={n} is invalid; allowed: 1 to {self.num_train} (the {self.name} training split "
                "after the validation hold-out), or 0 for all"
            )
        labels = self.class_labels
        if labels is not None:
            labels = {**labels, "train": labels["train"][:n]}
        return dataclasses.replace(self, train={k: v[:n] for k, v in self.train.items()}, class_labels=labels)

    def training_pairs(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(data, labels) of every training pair, those held out for validation included (scorers train on them)."""
        held = self.validation
        parts = ["train"] + (["validation"] if isinstance(held, dict) and len(next(iter(held.values()))) else [])
        data = {m.name: np.concatenate([getattr(self, s)[m.name] for s in parts]) for m in self.modalities}
        return data, np.concatenate([self.labels(s) for s in parts])


DATASETS: dict[str, DatasetSpec] = {
    "trimodal": trimodal.SPEC,
    "mnist_label": mnist_label.SPEC,
    "celeba": celeba.SPEC,
    "polymnist": polymnist.SPEC,
}
"""Name -> the data set's contract (``contract.DatasetSpec``): its modalities, labels, scorers, splits."""


def spec(name: str) -> DatasetSpec:
    """The contract of data set ``name``; ValueError naming the choices if unknown."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; allowed: {sorted(DATASETS)}")
    return DATASETS[name]


def load_dataset(config) -> Dataset:
    """The data set ``config.dataset``, its labels as its contract declares them."""
    declared = spec(config.dataset)
    dataset = declared.load(config)
    if declared.labels == FROM_FILES and dataset.class_labels is None:
        raise ValueError(f"data set {declared.name} declares labels from its files, but its load gave none")
    return dataclasses.replace(dataset, label_modality=declared.label_modality)


__all__ = [
    "DATASETS",
    "FROM_FILES",
    "OWN_SPLIT",
    "DataNotFoundError",
    "Dataset",
    "DatasetSpec",
    "SPLITS",
    "Scorer",
    "hold_out",
    "load_dataset",
    "spec",
]
