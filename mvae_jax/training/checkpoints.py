"""Checkpoints: orbax checkpoints per epoch, the mid-epoch one, quarantine, resume and restore (the workdir's
checks and its metrics file: ``training.workdir``).

Nothing that may be recoverable is deleted: unreadable checkpoints go to
``corrupt_checkpoints/``, a sweep member's epochs past the sweep's common one to
``superseded_checkpoints/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import logging
import os
from pathlib import Path
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mvae_jax import config as config_lib
from mvae_jax import errors
from mvae_jax.models import Model, get_model
from mvae_jax.training.state import TrainState, create_train_state, make_optimizers

log = logging.getLogger("mvae_jax.training")

METRICS_FILE = config_lib.METRICS_FILE
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"  # unreadable checkpoints are moved here, never deleted
SUPERSEDED_DIR = "superseded_checkpoints"  # a sweep member's epochs past the sweep's common epoch, never deleted
INTERRUPTED_DIR = "interrupted"  # the mid-epoch checkpoint of a run stopped by SIGINT/SIGTERM
BEST_DIR = "best_checkpoint"  # the epoch of the lowest validation objective (``mvae_jax.training.validation``)


def open_manager(directory: Path, max_to_keep: int) -> ocp.CheckpointManager:
    """An orbax manager of ``directory`` (created if missing) keeping the latest ``max_to_keep`` steps.

    With several processes, naming all of them active makes orbax wait at its
    barriers on the coordination service (up to 300 s) rather than with a
    collective, which on CPU gives up after 30 s when one process is late;
    orbax then leaves the folder to us.
    """
    if jax.process_count() == 1:
        return ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        )
    directory.mkdir(parents=True, exist_ok=True)
    every = ocp.options.MultiprocessingOptions(active_processes=set(range(jax.process_count())))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False, multiprocessing_options=every)
    return ocp.CheckpointManager(directory, options=options)


class Checkpoints:
    """orbax checkpoints of the TrainState in ``workdir/checkpoints``, one per epoch, the latest ``keep`` kept.

    ``folder=BEST_DIR`` (keep 1) holds the best-validation epoch instead. orbax
    writes each into a temporary folder and renames it when complete, so a
    process killed during a save leaves no checkpoint that reads as good.
    """

    def __init__(self, workdir: str | os.PathLike, keep: int = 3, folder: str = CHECKPOINT_DIR):
        self.directory = Path(workdir).absolute() / folder
        self.manager = open_manager(self.directory, keep)
        self._pending = None  # the epoch whose save may still be running
        self._last = None  # the epoch of the latest save started
        self._reported = False  # a failed save was already raised as a CheckpointError

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, state: TrainState) -> int:
        """Start saving ``state`` as the checkpoint of its epoch (written in the background).

        CheckpointError if this save, or the previous one still in the background, fails.
        """
        epoch = int(state.epoch)
        try:
            self.manager.save(epoch, args=ocp.args.StandardSave(state))
        except Exception as e:
            raise self._failed(epoch if self._pending is None else self._pending, e) from e
        self._pending = self._last = epoch
        return epoch

    def wait(self) -> None:
        """Wait for the background save; CheckpointError if it failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._failed(self._pending, e) from e
        self._pending = None

    def _failed(self, epoch: int | None, error: Exception) -> errors.CheckpointError:
        self._reported = True
        try:
            self.manager.reload()
            kept = f"the checkpoints of epochs {self.all_steps()} are intact"
        except Exception:  # the disk may refuse even to be listed
            kept = "the checkpoints written before are untouched"
        return errors.CheckpointError(
            f"could not write the checkpoint of epoch {epoch} in {self.directory} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); {kept}. Free some space or fix the "
            "permissions, then run the same command to resume."
        )

    def restore(self, target: TrainState, epoch: int | None = None) -> TrainState:
        """The checkpoint of ``epoch`` (the latest by default), shaped and placed like ``target``."""
        epoch = self.latest() if epoch is None else epoch
        if epoch is None or epoch not in self.all_steps():
            raise FileNotFoundError(f"no checkpoint for epoch {epoch} in {self.directory}; have {self.all_steps()}")
        check_matches(self.directory / str(epoch), target, f"the checkpoint of epoch {epoch} in {self.directory}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        return self.manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

    def quarantine(self, epoch: int, folder: str = CORRUPT_DIR) -> Path:
        """Move the checkpoint of ``epoch`` out of the manager's folder, to ``<workdir>/<folder>/`` (never deleted)."""
        name = f"epoch{epoch}" if self.directory.name == CHECKPOINT_DIR else f"{self.directory.name}-epoch{epoch}"
        target = _quarantine(self.directory / str(epoch), self.directory.parent, name, folder)
        self.manager.reload()
        return target

    def close(self) -> None:
        """Wait for background saves (CheckpointError if one failed) and release the manager.

        After a failed save, orbax's own ``close()`` raises the stored error again (a bare
        ``RESOURCE_EXHAUSTED: Error writing ...``), and whether ``wait_until_finished`` or ``close`` is the
        one to raise it depends on timing. Once a failure has been reported it is only logged; otherwise it
        becomes the CheckpointError that names the epoch and the intact checkpoints.
        """
        try:
            self.wait()
        except errors.CheckpointError:
            self._close_manager()
            raise
        self._close_manager()

    def _close_manager(self) -> None:
        try:
            self.manager.close()
        except Exception as e:
            if self._reported:
                log.debug("orbax's close after the failed save in %s: %s", self.directory, e)
                return
            raise self._failed(self._last, e) from e

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


ITEM = "default"  # the folder orbax's manager gives the one item of a step


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
    """{dotted path: shape} of a pytree's arrays (of a TrainState, or of orbax's stored metadata: the same
    paths, ``params.encoders.x.mlp.dense_0.kernel``)."""

    def name(key) -> str:
        for attribute in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
            if hasattr(key, attribute):
                return str(getattr(key, attribute))
        return str(key)

    return {
        ".".join(name(k) for k in path): tuple(getattr(leaf, "shape", ()))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def stored_shapes(step_dir: Path, item: str | None = ITEM) -> dict[str, tuple[int, ...]] | None:
    """{path: shape} of the arrays orbax stored in ``step_dir`` (from its metadata, reading no array); None if
    the metadata cannot be read (a damaged checkpoint: restoring it then fails, and it is quarantined)."""
    try:
        return _flat_shapes(ocp.StandardCheckpointHandler().metadata(step_dir / item if item else step_dir))
    except Exception:  # orbax / tensorstore raise many types for damaged files
        return None


def check_matches(step_dir: Path, target, what: str, item: str | None = ITEM) -> None:
    """errors.ConfigMismatch naming the differences if the checkpoint in ``step_dir`` holds other arrays than
    ``target`` (the state the run's config builds): a config.json edited, replaced or deleted after training.

    A shape mismatch is not damage: the checkpoint is good and is never moved. Restoring it would fail, and
    treating that failure as corruption would move every good checkpoint aside and train afresh over the
    run's history (issue 26).
    """
    stored = stored_shapes(step_dir, item)
    if stored is None:
        return
    expected = _flat_shapes(target)
    order = lambda k: (not k.startswith("params."), k)  # the parameters first, then the optimizer's moments
    diffs = [
        f"{k} stored {stored[k]}, the settings give {expected[k]}"
        for k in sorted(set(stored) & set(expected), key=order)
        if stored[k] != expected[k]
    ]
    diffs += [f"{k} stored but not in these settings" for k in sorted(set(stored) - set(expected), key=order)]
    diffs += [f"{k} in these settings but not stored" for k in sorted(set(expected) - set(stored), key=order)]
    if diffs:
        shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        raise errors.ConfigMismatch(
            f"{what} does not match the run's settings ({len(diffs)} of its arrays differ: {shown}). The "
            f"checkpoint is not damaged and nothing was moved: {config_lib.CONFIG_FILE} (or the flags given) must "
            "be the settings the run was trained with. Restore config.json, or train a new run in another --workdir."
        )


def _quarantine(path: Path, workdir: Path, name: str, folder: str = CORRUPT_DIR) -> Path:
    """Move ``path`` to ``<workdir>/<folder>/<name>-<time>`` (never delete what may be recoverable)."""
    target = workdir / folder / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


class MidEpochCheckpoint:
    """The state of an epoch stopped part-way (SIGINT/SIGTERM), in ``<workdir>/interrupted``, until that epoch ends.

    Saved with a JSON record of the epoch's progress: its number, the step,
    and the means and count of the loss terms of the steps already taken.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.directory = Path(workdir).absolute() / INTERRUPTED_DIR

    def _manager(self) -> ocp.CheckpointManager:
        return open_manager(self.directory, 1)

    def save(self, state: TrainState, progress: Mapping[str, Any]) -> None:
        """Write ``state`` and ``progress`` and wait until they are complete; CheckpointError if that fails."""
        step = int(state.step)
        manager = self._manager()
        try:
            manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(dict(progress))),
            )
            manager.wait_until_finished()
        except Exception as e:
            raise errors.CheckpointError(
                f"could not write the checkpoint of step {step} in {self.directory} ({type(e).__name__}: {e}); "
                "the epoch checkpoints are intact, and a new run restarts this epoch from its start"
            ) from e
        finally:
            manager.close()

    def restore(self, target: TrainState) -> tuple[TrainState, dict] | None:
        """(state, progress) of the saved step, shaped and placed like ``target``; None if there is none."""
        if not self.directory.is_dir():
            return None
        manager = self._manager()
        try:
            step = manager.latest_step()
            if step is None:
                return None
            check_matches(self.directory / str(step), target, f"the mid-epoch checkpoint in {self.directory}", "state")
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore())
            )
            return restored.state, dict(restored.progress)
        finally:
            manager.close()

    def quarantine(self) -> Path:
        return _quarantine(self.directory, self.directory.parent, INTERRUPTED_DIR)

    def clear(self) -> None:
        """Remove it (its epoch is complete, or rolled back); process 0 does, once."""
        if jax.process_index() == 0 and self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)


def saved_epochs(workdir: str | os.PathLike, folder: str = CHECKPOINT_DIR) -> list[int]:
    """The epochs with a complete checkpoint in ``workdir`` (in ``folder``), creating nothing."""
    if not (Path(workdir) / folder).is_dir():
        return []
    with Checkpoints(workdir, folder=folder) as checkpoints:
        return checkpoints.all_steps()


@jax.jit
def all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def resume_epoch(checkpoints: Sequence[Checkpoints]) -> int | None:
    """The latest epoch every run has a checkpoint of; None for a fresh start; ValueError if they share none."""
    steps = [set(ck.all_steps()) for ck in checkpoints]
    if not any(steps):
        return None
    common = set.intersection(*steps)
    if not common:
        have = {str(ck.directory): sorted(s) for ck, s in zip(checkpoints, steps)}
        raise ValueError(
            f"the runs of this sweep have no checkpointed epoch in common ({have}); "
            "resume them one by one, or remove the stray workdirs"
        )
    start = max(common)
    for ck, have in zip(checkpoints, steps):
        for later in sorted(s for s in have if s > start):  # recomputed (identically) from ``start``
            target = ck.quarantine(later, SUPERSEDED_DIR)
            log.warning(
                "%s: moved the checkpoint of epoch %d to %s to resume the sweep from epoch %d, the "
                "latest epoch all its runs have",
                ck.directory,
                later,
                target,
                start,
            )
    return start


def restore_latest_good(
    checkpoints: Sequence[Checkpoints], fresh: TrainState, start: int | None
) -> tuple[int | None, list[TrainState]]:
    """(epoch, one state per run) of the latest checkpointed epoch, not after ``start``, that every run can read.

    A checkpoint that cannot be restored, or holds non-finite parameters, is
    moved to ``<workdir>/corrupt_checkpoints/`` with a warning and the previous
    epoch is tried. Raises ValueError if checkpoints exist but none is readable.
    """
    if start is None:
        return None, [fresh for _ in checkpoints]
    tried = []
    for epoch in sorted({e for ck in checkpoints for e in ck.all_steps() if e <= start}, reverse=True):
        if not all(epoch in ck.all_steps() for ck in checkpoints):
            continue
        states, bad = [], None
        for ck in checkpoints:
            try:
                state = ck.restore(fresh, epoch)
            except errors.ConfigMismatch:
                raise  # good checkpoints of other settings: refused, nothing moved
            except Exception as e:  # orbax / tensorstore raise many types for damaged files
                bad = (ck, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                break
            if not bool(all_finite(state.params)):
                bad = (ck, "non-finite parameters")
                break
            states.append(state)
        if bad is None:
            return epoch, states
        ck, reason = bad
        moved = ck.quarantine(epoch)
        log.warning(
            "%s: the checkpoint of epoch %d is unreadable (%s); moved to %s, falling back to the previous checkpoint",
            ck.directory,
            epoch,
            reason,
            moved,
        )
        tried.append(epoch)
    raise ValueError(
        f"no readable checkpoint in {[str(ck.directory) for ck in checkpoints]} (unreadable: "
        f"epochs {tried}, moved to {CORRUPT_DIR}/). Move the checkpoints folder away to start afresh."
    )


def restore_mid_epoch(
    interrupted: Sequence[MidEpochCheckpoint], fresh: TrainState, epochs_done: int
) -> tuple[list[TrainState], dict] | None:
    """(one state per run, the epoch's progress) of a mid-epoch checkpoint in epoch ``epochs_done + 1``.

    None if a run has none, or it is stale (of an epoch whose checkpoint was
    written since: removed) or unreadable (moved to corrupt_checkpoints/ with
    a warning); training then starts that epoch from its beginning.
    """
    found = []
    for mid in interrupted:
        try:
            got = mid.restore(fresh)
        except errors.ConfigMismatch:
            raise
        except Exception as e:  # orbax / tensorstore raise many types for damaged files
            got = None
            log.warning(
                "%s is unreadable (%s: %s); moved to %s, the epoch restarts from its start",
                mid.directory,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
                mid.quarantine(),
            )
        if got is not None and not bool(all_finite(got[0].params)):
            got = None
            log.warning("%s holds non-finite parameters; moved to %s", mid.directory, mid.quarantine())
        found.append(got)
    usable = (
        all(g is not None for g in found)
        and all(g[1]["epoch"] == epochs_done + 1 for g in found)
        and len({g[1]["step"] for g in found}) == 1
        and all(int(g[0].epoch) == epochs_done for g in found)
    )
    if not usable:
        for mid in interrupted:
            if mid.directory.exists():
                log.info("%s is not of epoch %d, or not of every run: removed", mid.directory, epochs_done + 1)
                mid.clear()
        return None
    progress = dict(found[0][1], means=[g[1]["means"] for g in found])
    return [g[0] for g in found], progress


def restore_model(
    workdir: str | os.PathLike, epoch: int | None = None, folder: str = CHECKPOINT_DIR
) -> tuple[config_lib.Config, Model, TrainState]:
    """(config, model, state) of the run in ``workdir`` at ``epoch`` (the latest by default), without its data;
    ``folder=BEST_DIR``: its best-validation checkpoint."""
    from mvae_jax.data import DATASETS

    config = config_lib.load_config(workdir)
    modalities = DATASETS[config.dataset].modalities(config)
    model = get_model(config, modalities)
    tx, adversary = make_optimizers(config, modalities)
    target = create_train_state(model, tx, config.seed, adversary)
    checkpoints = Checkpoints(workdir, config.keep_checkpoints if folder == CHECKPOINT_DIR else 1, folder)
    try:
        state = checkpoints.restore(target, epoch)
    finally:
        checkpoints.close()
    return config, model, state
