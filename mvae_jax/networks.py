"""Flax (linen) modules: encoders and decoders. Modules only; objectives live in models/."""

from __future__ import annotations

from collections.abc import Sequence
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Dense layers with ReLU between them; the last layer is linear."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.features):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            if i < len(self.features) - 1:
                x = nn.relu(x)
        return x


class GaussianEncoder(nn.Module):
    """q(z | inputs) = N(mu, diag(exp(logvar))): (batch, features) -> ((batch, latent), (batch, latent))."""

    hidden: Sequence[int]
    latent: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = MLP((*self.hidden, 2 * self.latent), name="mlp")(x)
        mu, logvar = jnp.split(h, 2, axis=-1)
        return mu, logvar


class FusionEncoder(nn.Module):
    """q(z | the present modalities) from one network: per-modality features, a sum, then a fusion head.

    h = relu(b + sum_m [W_m x_m if m is present, else t_m]) -> MLP(hidden[1:], 2 latent) -> (mu, logvar).
    The feature map of modality m is W_m (its block of the first layer of a
    joint MLP over all modalities concatenated: with every modality present
    this *is* that MLP, with the same parameter count). An absent modality
    contributes its learned mask token t_m instead, one vector of width
    hidden[0] per modality, initialised at 0.

    Call with ``inputs`` {name: (batch, size)} for the modalities given and
    ``mask`` {name: (batch,) of 0/1} (optional) to drop given ones per example;
    names not in ``inputs`` are absent for every example.
    """

    names: Sequence[str]
    hidden: Sequence[int]
    latent: int

    @nn.compact
    def __call__(self, inputs, mask=None) -> tuple[jax.Array, jax.Array]:
        width = self.hidden[0]
        tokens = self.param("mask_tokens", nn.initializers.zeros, (len(self.names), width))
        batch = next(iter(inputs.values())).shape[0]
        h = jnp.broadcast_to(self.param("bias", nn.initializers.zeros, (width,)), (batch, width))
        for i, name in enumerate(self.names):
            if name not in inputs:
                h = h + tokens[i]
                continue
            feature = nn.Dense(width, use_bias=False, name=f"features_{name}")(inputs[name])
            if mask is not None and name in mask:
                feature = jnp.where(mask[name][:, None] > 0, feature, tokens[i])
            h = h + feature
        out = MLP((*self.hidden[1:], 2 * self.latent), name="fusion")(nn.relu(h))
        mu, logvar = jnp.split(out, 2, axis=-1)
        return mu, logvar


class Decoder(nn.Module):
    """p(x | z): (batch, latent) -> logits (batch, *shape)."""

    hidden: Sequence[int]
    shape: Sequence[int]

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        logits = MLP((*self.hidden, math.prod(self.shape)), name="mlp")(z)
        return logits.reshape(z.shape[:-1] + tuple(self.shape))


def count_params(params) -> int:
    """Number of scalars in a parameter tree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


class Classifier(nn.Module):
    """A small CNN that scores generated images: (batch, H, W, C) in [0, 1] -> (batch, classes) logits.

    Two 3x3 convolutions (32, 64 channels, ReLU, 2x2 average pooling), a
    128-unit hidden layer and a linear output; the architecture of Flax's
    MNIST example, narrowed. H and W must be multiples of 4.
    """

    classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, channels in enumerate((32, 64)):
            x = nn.relu(nn.Conv(channels, (3, 3), name=f"conv_{i}")(x))
            b, h, w, c = x.shape
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))  # 2x2 average pooling
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128, name="dense_0")(x))
        return nn.Dense(self.classes, name="dense_1")(x)
