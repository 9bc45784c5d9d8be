"""Your own data set, model, scorer or eval section, from your own module: registered by its import path.

A plugin is a Python module importable by name (on ``PYTHONPATH``, beside your script, or in an installed
package) that registers what it defines when it is imported::

    # my_lab/halves.py
    from mvae_jax import plugins
    plugins.register_dataset(SPEC)                     # a data.DatasetSpec (its modalities, labels, scorers)
    plugins.register_model("poe", build, check=None)   # build(config, modalities) -> models.Model
    plugins.register_section(Section("mean", fn, keys=("mean",)))   # an evaluation.sections.Section
    plugins.register_source("digits", load)            # load(data_dir) -> {"train": (images, labels), "test": ...}

    python train.py --plugins=my_lab.halves --model=poe --dataset=halves
    python eval.py --workdir=runs/poe_beta1.0

``--plugins`` (``Config.plugins``) is saved in config.json, and every process that reads the run imports
those modules first (``load``): resuming, ``training.restore_model``, ``eval.py``, ``api.evaluate`` and
scripts/results.py find what they registered. eval.py also takes ``--plugins`` for sections of its own.

What a plugin registers reads the settings mvae_jax has (``latent_dim``, ``hidden_dims``, ``beta``, ...,
the fields of ``config.Config``) or its own constants: ``Config`` is one frozen dataclass whose fields are
fixed when ``mvae_jax.config`` is imported, so a plugin cannot add settings. A name already registered
(a built-in, or another plugin's) is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import importlib

SOURCES: dict[str, Callable] = {}
"""Name -> load(data_dir) -> {"train": (images (n, H, W, C) float32 in [0, 1], labels (n,) int), "test": ...}:
the image classification sets that plugins register, whose CNNs a ``Scorer(name)`` scores with."""


class PluginError(ValueError):
    """A plugin cannot be imported, or registers a name already taken."""


def load(names: Iterable[str]) -> None:
    """Import the plugin modules ``names`` (each once; importing one again is a no-op), in order.

    PluginError naming the module and why, when one cannot be imported.
    """
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise PluginError(f"plugins: {name!r} is not a module's import path (e.g. my_lab.halves)")
        try:
            importlib.import_module(name)
        except PluginError:
            raise
        except Exception as e:  # ModuleNotFoundError, or the plugin's own error while it registers
            raise PluginError(
                f"plugins: cannot import {name!r} ({type(e).__name__}: {e}); a plugin must be importable by that "
                "name: on PYTHONPATH, beside the script, or installed"
            ) from e


def _claim(kind: str, name: str, registry) -> None:
    if not isinstance(name, str) or not name:
        raise PluginError(f"a {kind} needs a name (a non-empty string), got {name!r}")
    if name in registry:
        raise PluginError(f"{kind} {name!r} is already registered; choose another name")


def register_model(name: str, build: Callable, check: Callable | None = None, incomplete: bool = False) -> None:
    """Register ``build(config, modalities) -> Model`` as ``--model=name``; ``check(config)``: ValueError for
    settings that contradict each other (as ``models.CHECKS``). The model reads existing settings only.
    ``incomplete``: its loss reads a batch's presence mask (``models.PRESENT``), so ``--missing`` may train it."""
    from mvae_jax import models

    _claim("model", name, models.MODELS)
    if not callable(build):
        raise PluginError(f"model {name!r}: build must be a function build(config, modalities) -> Model")
    models.MODELS[name], models.OPTIONS[name] = build, ()
    if check is not None:
        models.CHECKS[name] = check
    if incomplete:
        models.INCOMPLETE.append(name)


def register_dataset(spec) -> None:
    """Register the data set ``spec`` (a ``data.DatasetSpec``) as ``--dataset=spec.name``. Its ``options`` may
    only be settings mvae_jax has (the shared ``"validation"``, or another data set's Option)."""
    from mvae_jax.config import OPTIONS
    from mvae_jax.data import DATASETS, DatasetSpec

    if not isinstance(spec, DatasetSpec):
        raise PluginError(f"register_dataset takes a data.DatasetSpec, got {type(spec).__name__}")
    _claim("data set", spec.name, DATASETS)
    new = [o.name for o in spec.options if OPTIONS.get(o.name) is not o]
    if new:
        raise PluginError(
            f"data set {spec.name!r} declares options {new}, which are not settings of mvae_jax (Config's fields "
            "are fixed when mvae_jax.config is imported); read existing settings or constants of your module"
        )
    DATASETS[spec.name] = spec


def register_section(section) -> None:
    """Register an eval section (an ``evaluation.sections.Section``), run after the built-in ones by default.
    Its ``options`` may only be options an existing section declares (eval.py's flags are built from them)."""
    from mvae_jax.evaluation import sections

    if not isinstance(section, sections.Section):
        raise PluginError(f"register_section takes an evaluation.sections.Section, got {type(section).__name__}")
    _claim("section", section.name, sections.SECTIONS)
    known = sections.options()
    new = [o.name for o in section.options if known.get(o.name) is not o]
    if new:
        raise PluginError(f"section {section.name!r} declares options {new}, which no built-in section reads")
    sections.SECTIONS[section.name] = section


def register_source(name: str, load_splits: Callable) -> None:
    """Register an image classification set for ``Scorer(name)``: ``load_splits(data_dir)`` returns
    {"train": (images (n, H, W, C) float32 in [0, 1], labels (n,) int), "test": ...}; its CNN is trained once
    on "train", tested on "test" and cached (``classifiers.load_or_train``)."""
    from mvae_jax.data import sources

    if name in sources.SIZES:
        raise PluginError(f"source {name!r} is a built-in classification set; choose another name")
    _claim("source", name, SOURCES)
    SOURCES[name] = load_splits
