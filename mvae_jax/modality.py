"""What a modality is: its name, the shape of one example and its likelihood."""

from __future__ import annotations

import dataclasses
import math

import jax

from mvae_jax import distributions

LIKELIHOODS = ("bernoulli", "categorical")


@dataclasses.dataclass(frozen=True)
class Modality:
    """One modality of a data set, e.g. ``Modality("x", (28, 28, 1), "bernoulli")``.

    Attributes:
      name: the key of this modality in a batch dict.
      shape: the shape of one example, without the batch axis.
      likelihood: ``"bernoulli"`` (images in [0, 1], decoder gives logits per
        pixel) or ``"categorical"`` (one-hot vectors, decoder gives class logits).
    """

    name: str
    shape: tuple[int, ...]
    likelihood: str

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood={self.likelihood!r} for modality {self.name!r}; allowed: {LIKELIHOODS}")
        if self.likelihood == "categorical" and len(self.shape) != 1:
            raise ValueError(f"categorical modality {self.name!r} needs shape (classes,), got {self.shape}")

    @property
    def size(self) -> int:
        """Number of values in one example (the flattened input width)."""
        return math.prod(self.shape)

    def log_likelihood(self, logits: jax.Array, targets: jax.Array) -> jax.Array:
        """log p(targets | logits) per example: (batch,) from (batch, *shape)."""
        if self.likelihood == "bernoulli":
            return distributions.bernoulli_log_likelihood(logits, targets, event_ndims=len(self.shape))
        return distributions.categorical_log_likelihood(logits, targets)
