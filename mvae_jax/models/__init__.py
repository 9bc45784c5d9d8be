"""Model registry: each model's objective in its own module, chosen by name."""

from __future__ import annotations

from mvae_jax import options as opt
from mvae_jax.models import cmvae, dmvae, jmvae, jnf, mmvae, mmvaeplus, mopoe, mvae, mvtcae, pemvae, telbo
from mvae_jax.models.base import INCOMPLETE_MODELS, PRESENT, Model, check_present, subsets

MODELS = {
    "jmvae": jmvae.build,
    "telbo": telbo.build,
    "mvae": mvae.build,
    "pemvae": pemvae.build,
    "mmvae": mmvae.build,
    "mopoe": mopoe.build,
    "mvtcae": mvtcae.build,
    "mmvaeplus": mmvaeplus.build,
    "dmvae": dmvae.build,
    "cmvae": cmvae.build,
    "jnf": jnf.build,
    "jnfdcca": jnf.build_dcca,
}
"""Registry name -> build(config, modalities) -> Model."""

OPTIONS = {
    "jmvae": jmvae.OPTIONS,
    "telbo": telbo.OPTIONS,
    "mvae": mvae.OPTIONS,
    "pemvae": pemvae.OPTIONS,
    "mmvae": mmvae.OPTIONS,
    "mopoe": mopoe.OPTIONS,
    "mvtcae": mvtcae.OPTIONS,
    "mmvaeplus": mmvaeplus.OPTIONS,
    "dmvae": dmvae.OPTIONS,
    "cmvae": cmvae.OPTIONS,
    "jnf": jnf.OPTIONS,
    "jnfdcca": jnf.DCCA_OPTIONS,
}
"""Registry name -> the options (``mvae_jax.options.Option``) that model reads beyond the run's own, declared
beside its build."""

INCOMPLETE = INCOMPLETE_MODELS
"""The models that train on incomplete data (``--missing``), each from the modalities an example has."""

CHECKS = {"pemvae": pemvae.check, "jnf": jnf.check, "jnfdcca": jnf.check}
"""Registry name -> check(config): ValueError for settings of that model that contradict each other."""


def model_options() -> dict[str, tuple[str, ...]]:
    """{option name: the models that read it}, for every model's own option."""
    return opt.owners(OPTIONS)


def get_model(config, modalities) -> Model:
    """Build the model ``config.model`` for ``modalities``; ValueError naming the choices if unknown."""
    if config.model not in MODELS:
        raise ValueError(f"model={config.model!r} is unknown; allowed: {sorted(MODELS)}")
    return MODELS[config.model](config, tuple(modalities))


__all__ = [
    "CHECKS",
    "INCOMPLETE",
    "MODELS",
    "OPTIONS",
    "PRESENT",
    "Model",
    "check_present",
    "get_model",
    "model_options",
    "subsets",
]
