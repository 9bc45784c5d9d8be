"""Attribute queries (CelebA): parse a query, impute the attributes not named by pseudo-Gibbs steps, decode images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax import distributions
from mvae_jax.evaluation.metrics.common import image_means
from mvae_jax.models import Model
from mvae_jax.models.base import per_model_jit


def parse_query(
    text: str,
    attributes: Sequence[str],
    known: Sequence[str] = (),
    aliases: Mapping[str, tuple[str, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """("Female,Heavy_Makeup", the run's attributes) -> (values, named), each (len(attributes),) float32.

    Items are comma separated: ``Name`` (has it), ``Name=1``, ``Name=0`` (has
    not), or an alias, {alias: (name, value)} ("Female" = Male=0; the data
    set's, e.g. ``celeba.QUERY_ALIASES``). ``named`` is 1 for the attributes
    the query names; the others are missing (not false). ``known``: every
    attribute of the data set (default: the run's). ValueError for unknown
    names (listing the valid ones), attributes the run does not model, bad
    values, contradictions and empty queries.
    """
    attributes = tuple(attributes)
    known, aliases = tuple(known) or attributes, dict(aliases or {})
    values, named = np.zeros(len(attributes), np.float32), np.zeros(len(attributes), np.float32)
    given = {}
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"query={text!r} names no attribute; e.g. --query=Female,Heavy_Makeup")
    for item in items:
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if value not in ("", "0", "1"):
            raise ValueError(f"query item {item!r}: the value must be 0 or 1 (Name=0, Name=1, or Name for 1)")
        bit = 1 if value in ("", "1") else 0
        if name in aliases:
            name, alias_bit = aliases[name]
            bit = alias_bit if bit else 1 - alias_bit
        if name not in known:
            raise ValueError(
                f"query item {item!r}: unknown attribute {name!r}; valid: "
                f"{', '.join(attributes)} and the aliases {', '.join(aliases)}"
            )
        if name not in attributes:
            raise ValueError(
                f"query item {item!r}: this run does not model {name!r}; it models {', '.join(attributes)}"
            )
        if given.get(name, bit) != bit:
            raise ValueError(f"query={text!r} asks for {name}=1 and {name}=0")
        given[name] = bit
        i = attributes.index(name)
        values[i], named[i] = bit, 1.0
    return values, named


@per_model_jit(static_argnames=("name", "num_samples", "steps"))
def query_latents(
    model: Model, params, rng: jax.Array, values: jax.Array, named: jax.Array, name: str, num_samples: int, steps: int
) -> jax.Array:
    """z (num_samples, latent) drawn given only the ``named`` entries of the vector modality ``name``.

    Missing entries are imputed by the model itself, by the pseudo-Gibbs chain
    of Rezende et al. 2014 (Sec. 5.2): start them at 1/2, then ``steps`` times
    draw z ~ q(z | x), x_missing ~ p(x_missing | z), keeping the named entries
    fixed; finally z ~ q(z | x). Each sample runs its own chain.
    """
    modality = next(m for m in model.modalities if m.name == name)
    values = jnp.broadcast_to(values, (num_samples, *values.shape))
    named = jnp.broadcast_to(named, values.shape) > 0

    def sample_z(key, x):
        mu, logvar = model.encode(params, {name: x}, (name,))
        return distributions.sample_gaussian(key, mu, logvar)

    def body(i, x):
        k_z, k_x = jax.random.split(jax.random.fold_in(rng, i))
        probs = modality.mean(model.decode(params, sample_z(k_z, x), (name,))[name])
        return jnp.where(named, values, jax.random.bernoulli(k_x, probs).astype(values.dtype))

    x = jax.lax.fori_loop(0, steps, body, jnp.where(named, values, 0.5))
    return sample_z(jax.random.fold_in(rng, steps), x)


def query_images(
    model: Model,
    params,
    rng: jax.Array,
    values: np.ndarray,
    named: np.ndarray,
    num_samples: int = 64,
    steps: int = 10,
    given: str = "attributes",
) -> dict[str, np.ndarray]:
    """{image modality: (num_samples, H, W, C) pixel means} generated from the query (values, named) on ``given``."""
    z = query_latents(model, params, rng, jnp.asarray(values), jnp.asarray(named), given, num_samples, steps)
    return image_means(model, params, z)
