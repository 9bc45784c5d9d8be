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
