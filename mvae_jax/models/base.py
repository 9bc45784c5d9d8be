"""The interface every model implements: pure functions of explicit parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mvae_jax import distributions
from mvae_jax.modality import Modality

Params = Any
Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Model:
    """A multimodal VAE as pure, jittable functions.

    Attributes:
      name: registry name, e.g. ``"jmvae"``.
      modalities: the modalities it models, in a fixed order.
      init: rng -> params.
      loss: (params, batch, rng) -> {term: (batch,)}; the term ``"loss"`` is
        the per-example objective to minimise, the others are for logging.
      encode: (params, batch, present) -> (mu, logvar), each (batch, latent):
        the posterior q(z | the modalities in ``present``), any non-empty subset.
      decode: (params, z) -> {name: logits (batch, *shape)} for every modality.
    """

    name: str
    modalities: tuple[Modality, ...]
    init: Callable[[jax.Array], Params]
    loss: Callable[[Params, Batch, jax.Array], dict[str, jax.Array]]
    encode: Callable[[Params, Batch, tuple[str, ...]], distributions.Gaussian]
    decode: Callable[[Params, jax.Array], dict[str, jax.Array]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)


def check_present(present: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    """``present`` as a tuple in the order of ``names``; ValueError if empty, unknown or repeated."""
    present = tuple(present)
    unknown = [p for p in present if p not in names]
    if not present or unknown or len(set(present)) != len(present):
        raise ValueError(
            f"present={present!r} is not a non-empty subset of the modalities {tuple(names)}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    return tuple(n for n in names if n in present)


def flatten_inputs(batch: Batch, modalities: Sequence[Modality]) -> jax.Array:
    """Concatenate the flattened modalities into one input: (batch, sum of sizes)."""
    parts = [batch[m.name].reshape(batch[m.name].shape[0], -1) for m in modalities]
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
