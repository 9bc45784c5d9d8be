"""What a modality is: its name, the shape of one example and its likelihood."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from mvae_jax import distributions

LIKELIHOODS = ("bernoulli", "categorical", "gaussian", "laplace")
LAPLACE_SCALE = 0.75  # MoPoE's and MMVAE+'s fixed scale of the image likelihood on PolyMNIST (DecoderImg)
NETWORKS = ("mlp", "conv", "mopoe")


@dataclasses.dataclass(frozen=True)
class Modality:
    """One modality of a data set, e.g. ``Modality("x", (28, 28, 1), "bernoulli")``.

    Attributes:
      name: the key of this modality in a batch dict.
      shape: the shape of one example, without the batch axis.
      likelihood: ``"bernoulli"`` (images in [0, 1], decoder gives logits per
        pixel), ``"categorical"`` (one-hot vectors, decoder gives class logits)
        ``"gaussian"`` (real values, decoder gives the mean of a unit-variance
        Gaussian) or ``"laplace"`` (images in [0, 1], decoder gives the
        location of a Laplace of scale ``LAPLACE_SCALE`` per value: MoPoE's and
        MMVAE+'s image likelihood on PolyMNIST; its mean for figures and
        scorers is the location clipped to [0, 1]).
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
        """An image (H, W, C) of values in [0, 1] (its ``mean``): what a discriminator can judge."""
        return len(self.shape) == 3 and self.likelihood in ("bernoulli", "laplace")

    @property
    def size(self) -> int:
        """Number of values in one example (the flattened input width)."""
        return math.prod(self.shape)

    def log_likelihood(self, logits: jax.Array, targets: jax.Array) -> jax.Array:
        """log p(targets | logits) per example: (batch,) from (batch, *shape)."""
        if self.likelihood == "bernoulli":
            return distributions.bernoulli_log_likelihood(logits, targets, event_ndims=len(self.shape))
        if self.likelihood == "laplace":
            return distributions.laplace_log_likelihood(logits, targets, LAPLACE_SCALE, event_ndims=len(self.shape))
        if self.likelihood == "gaussian":
            mean = logits.reshape(*logits.shape[: logits.ndim - len(self.shape)], -1)
            values = jnp.broadcast_to(targets, logits.shape).reshape(mean.shape)
            return distributions.gaussian_log_density(values, mean, jnp.zeros_like(mean))
        return distributions.categorical_log_likelihood(logits, targets)

    def mean(self, logits: jax.Array) -> jax.Array:
        """E[x | z] from decoder outputs: pixel probabilities, class probabilities, the Gaussian mean, or the
        Laplace location clipped to the images' range [0, 1] (as torchvision's save_image shows MoPoE's)."""
        if self.likelihood == "bernoulli":
            return jax.nn.sigmoid(logits)
        if self.likelihood == "laplace":
            return jnp.clip(logits, 0.0, 1.0)
        if self.likelihood == "categorical":
            return jax.nn.softmax(logits, axis=-1)
        return logits
