"""Model registry: each model's objective in its own module, chosen by name."""

from __future__ import annotations

from mvae_jax.models import jmvae, mmvae, mopoe, mvae, pemvae, telbo
from mvae_jax.models.base import Model, check_present, subsets

MODELS = {
    "jmvae": jmvae.build,
    "telbo": telbo.build,
    "mvae": mvae.build,
    "pemvae": pemvae.build,
    "mmvae": mmvae.build,
    "mopoe": mopoe.build,
}
"""Registry name -> build(config, modalities) -> Model."""


def get_model(config, modalities) -> Model:
    """Build the model ``config.model`` for ``modalities``; ValueError naming the choices if unknown."""
    if config.model not in MODELS:
        raise ValueError(f"model={config.model!r} is unknown; allowed: {sorted(MODELS)}")
    return MODELS[config.model](config, tuple(modalities))


__all__ = ["MODELS", "Model", "check_present", "get_model", "subsets"]
