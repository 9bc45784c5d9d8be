"""What a modality is: its name, the shape of one example and its likelihood."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from mvae_jax import distributions

LIKELIHOODS = ("bernoulli", "categorical", "gaussian")
NETWORKS = ("mlp", "conv", "mopoe")


@dataclasses.dataclass(frozen=True)
class Modality:
    """One modality of a data set, e.g. ``Modality("x", (28, 28, 1), "bernoulli")``.

    Attributes:
      name: the key of this modality in a batch dict.
      shape: the shape of one example, without the batch axis.
      likelihood: ``"bernoulli"`` (images in [0, 1], decoder gives logits per
        pixel), ``"categorical"`` (one-hot vectors, decoder gives class logits)
        or ``"gaussian"`` (real values, decoder gives the mean of a unit-variance
        Gaussian).
      network: ``"mlp"`` (flattened input, MLP encoder and decoder of the
        run's ``hidden_dims``), ``"conv"`` (an image (H, W, C): DCGAN-style
        convolutional encoder and decoder of the run's ``conv_widths``) or
        ``"mopoe"`` (the image networks of MoPoE on PolyMNIST: 3x3 convolutions
        of 32, 64, 128 channels, ``models.base.MOPOE_CONV``).
    """

    name: str
    shape: tuple[int, ...]
    likelihood: str
    network: str = "mlp"

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood={self.likelihood!r} for modality {self.name!r}; allowed: {LIKELIHOODS}")
        if self.likelihood == "categorical" and len(self.shape) != 1:
            raise ValueError(f"categorical modality {self.name!r} needs shape (classes,), got {self.shape}")
        if self.network not in NETWORKS:
            raise ValueError(f"network={self.network!r} for modality {self.name!r}; allowed: {NETWORKS}")
        if self.network != "mlp" and len(self.shape) != 3:
            raise ValueError(f"conv modality {self.name!r} needs an image shape (H, W, C), got {self.shape}")

    @property
    def is_image(self) -> bool:
        """An image (H, W, C) with pixel probabilities: what a discriminator can judge."""
        return len(self.shape) == 3 and self.likelihood == "bernoulli"

    @property
    def size(self) -> int:
        """Number of values in one example (the flattened input width)."""
        return math.prod(self.shape)

    def log_likelihood(self, logits: jax.Array, targets: jax.Array) -> jax.Array:
        """log p(targets | logits) per example: (batch,) from (batch, *shape)."""
        if self.likelihood == "bernoulli":
            return distributions.bernoulli_log_likelihood(logits, targets, event_ndims=len(self.shape))
        if self.likelihood == "gaussian":
            mean = logits.reshape(*logits.shape[: logits.ndim - len(self.shape)], -1)
            values = jnp.broadcast_to(targets, logits.shape).reshape(mean.shape)
            return distributions.gaussian_log_density(values, mean, jnp.zeros_like(mean))
        return distributions.categorical_log_likelihood(logits, targets)

    def mean(self, logits: jax.Array) -> jax.Array:
        """E[x | z] from decoder outputs: pixel probabilities, class probabilities or the Gaussian mean."""
        if self.likelihood == "bernoulli":
            return jax.nn.sigmoid(logits)
        if self.likelihood == "categorical":
            return jax.nn.softmax(logits, axis=-1)
        return logits
