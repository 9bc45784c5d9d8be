"""mvae_jax: multimodal variational autoencoders in JAX and Flax.

The public API, at the top level (what the API reference documents):

    import mvae_jax

    config = mvae_jax.Config(model="pemvae", workdir="runs/p", epochs=3)
    state = mvae_jax.train(config)                    # train.py's run, from Python
    metrics = mvae_jax.evaluate("runs/p", step="best")  # eval.py's, from Python
    config, model, state = mvae_jax.restore_model("runs/p")

    model = mvae_jax.get_model(config, modalities)    # a model: pure functions (loss, encode, decode)
    mvae_jax.losses.multimodal_elbo, mvae_jax.distributions.product_of_experts  # the pieces, for your own loop

- ``Config``: a run's settings (validated, saved as config.json); ``MODELS``: the model registry;
  ``get_model``; ``register_model`` / ``register_dataset`` / ``register_section``: plugins.
- ``train`` (``api.train``: train.py's run, with a progress bar), ``train_and_evaluate`` (the same, silent),
  ``restore_model``, ``evaluate`` (``api.evaluate``: eval.py's).
- ``losses``, ``distributions``, ``networks``, ``models``, ``data``, ``training``, ``evaluation``,
  ``missing``: the modules.

Names are imported when first used, so ``import mvae_jax`` stays light (JAX loads with the first model,
TensorFlow only with a tensorflow-datasets source).
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# name -> (module, attribute or None for the module itself)
_PUBLIC = {
    "Config": ("mvae_jax.config", "Config"),
    "MODELS": ("mvae_jax.models", "MODELS"),
    "PRESENT": ("mvae_jax.models", "PRESENT"),
    "Model": ("mvae_jax.models", "Model"),
    "get_model": ("mvae_jax.models", "get_model"),
    "DATASETS": ("mvae_jax.data", "DATASETS"),
    "load_dataset": ("mvae_jax.data", "load_dataset"),
    "train": ("mvae_jax.api", "train"),
    "train_and_evaluate": ("mvae_jax.training", "train_and_evaluate"),
    "restore_model": ("mvae_jax.training", "restore_model"),
    "evaluate": ("mvae_jax.api", "evaluate"),
    "register_model": ("mvae_jax.plugins", "register_model"),
    "register_dataset": ("mvae_jax.plugins", "register_dataset"),
    "register_section": ("mvae_jax.plugins", "register_section"),
    "register_source": ("mvae_jax.plugins", "register_source"),
}
_MODULES = (
    "api",
    "config",
    "data",
    "distributions",
    "evaluation",
    "losses",
    "missing",
    "models",
    "networks",
    "plugins",
    "training",
)

__all__ = ["__version__", *_PUBLIC, *_MODULES]


def __getattr__(name: str):
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _MODULES:
        value = importlib.import_module(f"mvae_jax.{name}")
    else:
        raise AttributeError(f"module 'mvae_jax' has no attribute {name!r}")
    globals()[name] = value  # later lookups do not come here
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
