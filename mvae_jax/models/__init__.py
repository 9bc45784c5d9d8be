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

OPTIONS = {
    "jmvae": jmvae.OPTIONS,
    "telbo": telbo.OPTIONS,
    "mvae": mvae.OPTIONS,
    "pemvae": pemvae.OPTIONS,
    "mmvae": mmvae.OPTIONS,
    "mopoe": mopoe.OPTIONS,
}
"""Registry name -> the Config fields that model reads beyond the common ones (each declared beside its build)."""


def model_options() -> dict[str, tuple[str, ...]]:
    """{option: the models that read it}, for every model-specific Config field."""
    owners: dict[str, list[str]] = {}
    for name, options in OPTIONS.items():
        for option in options:
            owners.setdefault(option, []).append(name)
    return {option: tuple(models) for option, models in owners.items()}


def get_model(config, modalities) -> Model:
    """Build the model ``config.model`` for ``modalities``; ValueError naming the choices if unknown."""
    if config.model not in MODELS:
        raise ValueError(f"model={config.model!r} is unknown; allowed: {sorted(MODELS)}")
    return MODELS[config.model](config, tuple(modalities))


__all__ = ["MODELS", "OPTIONS", "Model", "check_present", "get_model", "model_options", "subsets"]
