"""The validation objective after every epoch, and the checkpoint of the best one (model selection).

A run trained with ``--validation=N`` holds out N training pairs
(``mvae_jax.data.hold_out``). After each epoch the loop scores them with the
model's own per-example loss terms, with the weights of the *final* epoch (KL
warm-up and PEMVAE's joint-only warm-up over: the objective the run is asked
to minimise, so that epochs compare) and the same randomness every epoch
(common random numbers: a curve moves only because the parameters did). The
means go into metrics.jsonl as ``validation_<term>``; the epoch with the
lowest ``validation_loss`` is kept in ``<workdir>/best_checkpoint`` for
``eval.py --step=best``.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import math
from pathlib import Path

import jax

from mvae_jax.models.base import AFTER_WARMUPS, make_mean_loss_fn

__all__ = ["AFTER_WARMUPS", "PREFIX", "SELECTION_TERM", "best_record", "make_validation_fn", "read_records"]

make_validation_fn = make_mean_loss_fn  # the validation objective is the model's mean loss on the held-out pairs

VALIDATION_STREAM = 4  # folded into the run's base key: the validation randomness, the same every epoch
PREFIX = "validation_"  # metrics.jsonl: ``validation_<term>`` beside the training mean of ``<term>``
SELECTION_TERM = PREFIX + "loss"  # what model selection minimises


def validation_key(seed: int) -> jax.Array:
    """The key of the validation randomness of a run of ``seed`` (the same every epoch)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), VALIDATION_STREAM)


def best_record(records: Sequence[dict]) -> dict | None:
    """The metrics line with the lowest finite ``validation_loss`` (the earliest of ties); None if none has one."""
    best = None
    for record in records:
        value = record.get(SELECTION_TERM)
        if isinstance(value, (int, float)) and math.isfinite(value):
            if best is None or value < best[SELECTION_TERM]:
                best = record
    return best


def read_records(path: Path) -> list[dict]:
    """The complete lines of a metrics.jsonl (none if it is missing)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a killed process
            continue
    return records
