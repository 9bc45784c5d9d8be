"""What the metrics share: posterior and conditional means in batches, scoring generated values, the prior's
latent, prior images."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.models import Model, check_present
from mvae_jax.models.base import per_model_jit

Classify = Callable[[np.ndarray], np.ndarray]  # images (n, *shape) in [0, 1] -> classes (n,)


Progress = Callable[[int], object] | None


def subset_key(present: Sequence[str]) -> str:
    """ "x,y" for the subset ("x", "y")."""
    return ",".join(present)


def batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@per_model_jit(static_argnums=(0, 3))
def posterior_mean(model: Model, params, batch, present):
    return model.encode(params, batch, present)[0]


def posterior_means(
    model: Model, params, data: Mapping[str, np.ndarray], present: Sequence[str], batch_size: int = 1000
) -> np.ndarray:
    """Means of q(z | present) for every example of ``data``: (n, latent).

    For mixture posteriors (MMVAE, MoPoE) the mean of the mixture.
    """
    present = check_present(present, model.names)
    n = len(data[present[0]])
    out = [
        np.asarray(posterior_mean(model, params, {k: jnp.asarray(data[k][s]) for k in present}, present))
        for s in batches(n, batch_size)
    ]
    return np.concatenate(out)


@per_model_jit(static_argnums=(0, 3, 4))
def conditional_means(model: Model, params, batch, present, targets):
    """{t: E[x_t | z] at z = the mean of q(z | present)}: pixel or class probabilities (``Modality.mean``)."""
    mu = model.encode(params, batch, present)[0]
    logits = model.decode(params, mu)
    return {m.name: m.mean(logits[m.name]) for m in model.modalities if m.name in targets}


def classify_outputs(model: Model, outputs: Mapping[str, np.ndarray], classify: Mapping[str, Classify]):
    """{t: classes (n,)} of decoded outputs: argmax for categorical modalities, ``classify[t]`` for images."""
    kinds = {m.name: m.likelihood for m in model.modalities}
    out = {}
    for t, value in outputs.items():
        if kinds[t] == "categorical":
            out[t] = np.asarray(np.argmax(value, axis=-1))
        elif t in classify:
            out[t] = np.asarray(classify[t](np.asarray(value)))
    return out


def model_latent(model: Model, params) -> int:
    """Size of z, read from the parameters by one abstract encoding."""
    one = {m.name: jax.ShapeDtypeStruct((1, *m.shape), jnp.float32) for m in model.modalities}
    return jax.eval_shape(lambda p, b: model.encode(p, b, model.names)[0], params, one).shape[-1]


@per_model_jit(static_argnums=(0, 3))
def decoded_means(model: Model, params, z, targets, private_rng=None):
    """{t: E[x_t | z]} for z (n, latent); with ``private_rng``, a model's private latents drawn from their prior
    (``Model.generate``), else at its mean."""
    logits = model.generate(params, z, targets, private_rng)
    return {m.name: m.mean(logits[m.name]) for m in model.modalities if m.name in targets}


PRIVATE_STREAM = 1 << 21  # folded into a generation's key for its private latents' draws


def private_key(rng: jax.Array, private: bool) -> jax.Array | None:
    """The key of a generation's private-latent draws (``decoded_means``), or None to leave them at the mean."""
    return jax.random.fold_in(rng, PRIVATE_STREAM) if private else None


@per_model_jit(static_argnums=(0, 3, 4), static_argnames=("private",))
def sampled_means(model: Model, params, batch, present, targets, rng, private: bool = False):
    """{t: E[x_t | z]} at one z ~ q(z | present) per example (a mixture's component drawn as in training);
    ``private``: a model's private latents drawn from their prior too (``Model.generate``)."""
    return decoded_means(
        model, params, model.draw(params, batch, present, rng, 1)[0], targets, private_key(rng, private)
    )


def prior_images(model: Model, params, rng: jax.Array, num_samples: int = 16, sampler=None) -> dict[str, np.ndarray]:
    """{image modality: (num_samples, H, W, C) pixel means} decoded from z ~ p(z) (``Model.latent_prior``), or
    z ~ ``sampler`` (a ``samplers.LatentSampler``)."""
    sampler = sampler or model_prior(model, params)
    return image_means(model, params, sampler.sample(rng, num_samples))


def model_prior(model: Model, params):
    """The model's own p(z) as a ``samplers.LatentSampler``: N(0, I), or Laplace(0, 1) (``Model.latent_prior``),
    or the learned mixture of a model with a cluster prior (``Model.prior_mixture``, CMVAE)."""
    from mvae_jax.evaluation.metrics import samplers

    if model.prior_mixture is not None:
        weights, locations, scales = (np.asarray(a, np.float64) for a in model.prior_mixture(params))
        trils = np.einsum("kj,ij->kij", scales, np.eye(scales.shape[-1]))
        return samplers.LatentSampler("prior", weights, locations, trils, model.latent_prior)
    return samplers.prior(model_latent(model, params), model.latent_prior)


def image_means(model: Model, params, z: jax.Array) -> dict[str, np.ndarray]:
    """{image modality: E[x | z]} for z (n, latent): (n, H, W, C) each."""
    images = tuple(m for m in model.modalities if len(m.shape) == 3)
    logits = model.decode(params, z, tuple(m.name for m in images))
    return {m.name: np.asarray(m.mean(logits[m.name])) for m in images}
