"""The workdir around the checkpoints: its checks before a run starts (settings, writable, disk space) and its
metrics file after a crash (lines without a checkpoint dropped, never silently rewriting history)."""

from __future__ import annotations

from collections.abc import Sequence
import json
import logging
import math
from pathlib import Path
import shutil
import time

import jax

from mvae_jax import config as config_lib
from mvae_jax import errors
from mvae_jax.files import atomic_write_text, unwritable
from mvae_jax.models import get_model
from mvae_jax.training.checkpoints import CHECKPOINT_DIR
from mvae_jax.training.state import create_train_state, make_optimizers

log = logging.getLogger("mvae_jax.training")

UNSAVED_EPOCHS = 2  # metrics lines a kill can leave past the latest checkpoint (line e+1 waits on save e)


def truncate_metrics(path: Path, epoch: int) -> Path | None:
    """Drop metric lines of epochs after ``epoch`` (written before a crash, their checkpoint lost), lines cut short,
    and all but the last line of an epoch written twice (two runs in one workdir, before the workdir lock).

    A kill leaves at most a last line cut short and the lines of ``UNSAVED_EPOCHS`` epochs whose checkpoint was
    still being written: those go silently (they are recomputed). Anything else rewrites history: a damaged line
    in the middle, or lines of epochs well past the latest checkpoint (an emptied checkpoints/). Then the file
    as it was is kept beside it as ``metrics.jsonl.replaced-<time>`` and a warning says what was dropped.
    Returns the path of that copy, or None.
    """
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    last = {epoch_of(line): i for i, line in enumerate(lines)}
    kept = [line for i, line in enumerate(lines) if (epoch_of(line) or math.inf) <= epoch and last[epoch_of(line)] == i]
    if len(kept) == len(lines):
        return None
    damaged = [i + 1 for i, line in enumerate(lines[:-1]) if epoch_of(line) is None]
    later = sorted({e for e in map(epoch_of, lines) if e is not None and e > epoch})
    lost = [e for e in later if e > epoch + UNSAVED_EPOCHS]
    copy = None
    if damaged or lost:
        copy = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
        shutil.copy2(path, copy)
        what = []
        if damaged:
            what.append(f"damaged line{'s' if len(damaged) > 1 else ''} {', '.join(map(str, damaged))}")
        if lost:
            what.append(
                f"the lines of epochs {later[0]}-{later[-1]}, which have no checkpoint "
                f"({'none is left' if epoch == 0 else f'the latest is of epoch {epoch}'})"
            )
        log.warning("%s: dropped %s; the file as it was is kept in %s", path, " and ".join(what), copy)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return copy


def epoch_of(line: str) -> int | None:
    """The epoch of a metrics line; None for a line cut short by a killed process."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return None


def check_workdir(config: config_lib.Config) -> Path:
    """Check, creating nothing, that the workdir can be written and holds no run with other settings."""
    workdir = Path(config.workdir).absolute()
    reason = unwritable(workdir)
    if reason is not None:
        raise PermissionError(f"workdir={config.workdir!r} is not writable: {reason}")
    if not (workdir / config_lib.CONFIG_FILE).exists() and (workdir / CHECKPOINT_DIR).is_dir():
        log.warning(
            "%s has a %s folder but no %s: the settings given (flags and defaults) are taken as the run's and "
            "checked against the checkpoints",
            workdir,
            CHECKPOINT_DIR,
            config_lib.CONFIG_FILE,
        )
    if (workdir / config_lib.CONFIG_FILE).exists():
        saved = config_lib.load_config(workdir)
        diffs = saved.differences(config)
        if diffs:
            listed = ", ".join(f"{k}: saved {a!r}, asked {b!r}" for k, (a, b) in sorted(diffs.items()))
            raise ValueError(
                f"workdir={str(workdir)!r} holds a run with other settings ({listed}). "
                "Use another --workdir, or drop the differing flags to resume it."
            )
    return workdir


def check_disk_space(configs: Sequence[config_lib.Config], workdirs: Sequence[Path]) -> None:
    """CheckpointError before any work if the workdirs' disk cannot hold two checkpoints of every run."""
    from mvae_jax.data import DATASETS

    config = configs[0]
    modalities = DATASETS[config.dataset].modalities(config)
    model = get_model(config, modalities)
    tx, adversary = make_optimizers(config, modalities)
    shapes = jax.eval_shape(lambda: create_train_state(model, tx, config.seed, adversary))
    size = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))
    existing = next(p for p in (workdirs[0], *workdirs[0].parents) if p.exists())
    free, need = shutil.disk_usage(existing).free, 2 * size * len(configs)
    if free < need:
        raise errors.CheckpointError(
            f"{existing} has {free / 2**20:.1f} MiB free, but a checkpoint of this run takes about "
            f"{size / 2**20:.1f} MiB and training keeps room for 2 per run ({need / 2**20:.1f} MiB): "
            "free some space or pick another --workdir"
        )
