"""Recipes as files: ``train.py --config=configs/<name>.py``, flags overriding its settings.

A recipe is a Python file defining ``get_config()``, which returns a dict of
settings named as train.py's flags (``beta`` and ``seed`` may be tuples: a
sweep), as the ml_collections configs of Flax's examples and big_vision are.
Its docstring starts with the command that runs it, the result it gave and the
time it took. ``configs/`` holds the published ones.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

SWEEP_AXES = ("beta", "seed")  # settings a recipe (or a flag) may give several values of


def load(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of the recipe at ``path``; ValueError naming the file and the bad key or value, before
    anything is trained. Lists become tuples."""
    from mvae_jax import config as config_lib

    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.py"))
        raise ValueError(
            f"--config={path}: no such file"
            + (f"; the recipes in configs/ are {', '.join(shipped)}" if shipped else "")
        )
    spec = importlib.util.spec_from_file_location(f"_mvae_jax_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a syntax error or a failing import in the user's file
        raise ValueError(f"--config={path}: the file does not run ({type(e).__name__}: {e})") from e
    get = getattr(module, "get_config", None)
    if not callable(get):
        raise ValueError(f"--config={path}: defines no get_config() returning the settings")
    settings = get()
    if not isinstance(settings, dict):
        raise ValueError(f"--config={path}: get_config() returned a {type(settings).__name__}, not a dict of settings")
    unknown = sorted(set(settings) - set(config_lib.OPTIONS))
    if unknown:
        raise ValueError(f"--config={path}: unknown settings {unknown}; known: {', '.join(config_lib.OPTIONS)}")
    out = {}
    for key, value in settings.items():
        value = tuple(value) if isinstance(value, list) else value
        several = key in SWEEP_AXES and isinstance(value, tuple)
        for one in value if several else (value,):
            try:
                config_lib.check_type(key, list(one) if isinstance(one, tuple) else one)
            except ValueError as e:
                raise ValueError(f"--config={path}: {e}") from None
        if several and (not value or len(set(value)) != len(value)):
            raise ValueError(f"--config={path}: {key}={value!r} is invalid; allowed: one value or distinct ones")
        out[key] = value[0] if several and len(value) == 1 else value
    return out
