"""Numpy re-implementations used as references: forward passes of our MLPs and the textbook formulas.

Written independently of mvae_jax (float64, plain numpy), so a test compares
the library with the paper's formula, not the library with itself.
"""

from __future__ import annotations

import numpy as np

from mvae_jax.modality import Modality

MODALITIES = (
    Modality("x", (2, 3, 1), "bernoulli"),
    Modality("y", (4,), "bernoulli"),
    Modality("w", (3,), "categorical"),
)


def batch(rng: np.random.Generator, n: int = 3) -> dict[str, np.ndarray]:
    """A random batch of the tiny modalities: grey-level x and y, one-hot w."""
    return {
        "x": rng.random((n, 2, 3, 1)).astype(np.float32),
        "y": rng.random((n, 4)).astype(np.float32),
        "w": np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)],
    }


_JNF_FAST = {"jnf_flow_width": 8, "jnf_flow_depth": 1, "jnf_hmc_steps": 5, "jnf_leapfrog_steps": 3}
FAST = {"jnf": _JNF_FAST, "jnfdcca": {**_JNF_FAST, "jnf_dcca_dim": 3}}
"""Per model, settings that keep a tiny model's compilation and inference short (JNF's flows and HMC)."""


def tiny_model(name: str, **options):
    """(model, params) of ``name`` on the tiny modalities: MLPs 5-4, latent 2, init key 0."""
    import jax

    from mvae_jax.config import Config
    from mvae_jax.models import get_model

    model = get_model(Config(model=name, hidden_dims=(5, 4), latent_dim=2, **options), MODALITIES)
    return model, model.init(jax.random.PRNGKey(0))


def flat(batch: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64).reshape(len(v), -1) for k, v in batch.items()}


def dense_stack(params, h):
    """Dense layers dense_0..dense_n with ReLU between them (networks.MLP); h (..., in)."""
    layers = sorted(params, key=lambda k: int(k.split("_")[1]))
    for i, name in enumerate(layers):
        h = h @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"], np.float64)
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def mlp(params, h):
    """networks.GaussianEncoder / Decoder output before splitting or reshaping: params has an "mlp"."""
    return dense_stack(params["mlp"], h)


def gaussian(params, h):
    """(mu, logvar) of a GaussianEncoder."""
    return np.split(mlp(params, h), 2, axis=-1)


def kl(mu1, lv1, mu2, lv2):
    """KL(N(mu1, e^lv1) || N(mu2, e^lv2)), summed over the last axis."""
    return 0.5 * (lv2 - lv1 + (np.exp(lv1) + (mu1 - mu2) ** 2) / np.exp(lv2) - 1).sum(-1)


def kl_prior(mu, lv):
    return 0.5 * (mu**2 + np.exp(lv) - lv - 1).sum(-1)


def log_normal(z, mu, lv):
    """log N(z; mu, e^lv), summed over the last axis."""
    return -0.5 * (np.log(2 * np.pi) + lv + (z - mu) ** 2 / np.exp(lv)).sum(-1)


def bernoulli(targets, logits):
    """sum_i t_i log sigmoid(l_i) + (1 - t_i) log(1 - sigmoid(l_i)) over the last axis."""
    p = 1 / (1 + np.exp(-logits))
    return (targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(-1)


def categorical(targets, logits):
    return (targets * (logits - np.log(np.exp(logits).sum(-1, keepdims=True)))).sum(-1)


def log_likelihoods(decoders, z, flat_batch) -> dict[str, np.ndarray]:
    """{m: log p(x_m | z)} of the tiny modalities, decoders' params and z (..., latent)."""
    return {
        "x": bernoulli(flat_batch["x"], mlp(decoders["x"], z)),
        "y": bernoulli(flat_batch["y"], mlp(decoders["y"], z)),
        "w": categorical(flat_batch["w"], mlp(decoders["w"], z)),
    }


def product(mus, lvs, prior: bool):
    """Gaussian product of the experts (axis 0) [and N(0, I)]: precision-weighted, precisions add."""
    precision = np.exp(-np.asarray(lvs, np.float64)).sum(0) + (1.0 if prior else 0.0)
    mu = (np.asarray(mus, np.float64) * np.exp(-np.asarray(lvs, np.float64))).sum(0) / precision
    return mu, -np.log(precision)


def subset_bits(index, num_modalities: int = 3) -> np.ndarray:
    """(modalities, batch) 0/1: modality i is in subset ``index`` when its bit i is set."""
    index = np.asarray(index)
    return np.stack([(index >> i) & 1 for i in range(num_modalities)]).astype(np.float64)
