"""The training loop: ``train_sweep`` (one run, or a beta sweep in one program) and ``train_and_evaluate``.

A ``_Sweep`` holds everything one call needs: the runs' configs and files,
the data, the compiled epoch and the state. The loop reads straight through:
resume, then per epoch run it, and either roll back (non-finite numbers),
checkpoint a stop part-way, or finish it (metrics line, checkpoint).

Why one module of about 520 lines: every step of the loop reads and updates
the same ``_Sweep`` (configs, files, compiled epoch, states); split across
modules, each part would reach back into it. The workdir's checks live in
``training.workdir``, the checkpoints in ``training.checkpoints``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import json
import logging
import math
from pathlib import Path
import time

import jax
import numpy as np

from mvae_jax import config as config_lib
from mvae_jax import distributed, errors, missing, tracking
from mvae_jax.data import load_dataset
from mvae_jax.models import get_model
from mvae_jax.training import trackers
from mvae_jax.training import validation as validation_lib
from mvae_jax.training.checkpoints import (
    BEST_DIR,
    METRICS_FILE,
    SUPERSEDED_DIR,
    Checkpoints,
    MidEpochCheckpoint,
    all_finite,
    restore_latest_good,
    restore_mid_epoch,
    resume_epoch,
)
from mvae_jax.training.epochs import epoch_seed, make_epoch_fn, scalar, stream_epoch
from mvae_jax.training.lock import WorkdirLock, check_unlocked
from mvae_jax.training.sharding import SweepAxes, make_mesh, member, replicate, stack_members
from mvae_jax.training.state import Reporter, TrainState, create_train_state, make_optimizers, make_step_fn
from mvae_jax.training.workdir import check_disk_space, check_workdir, truncate_metrics

log = logging.getLogger("mvae_jax.training")


def train_and_evaluate(config: config_lib.Config, reporter: Reporter | None = None) -> TrainState:
    """Train ``config.model`` on ``config.dataset`` to ``config.epochs`` epochs, resuming from the workdir.

    Writes ``config.json``, ``metrics.jsonl`` (one line per epoch) and a
    checkpoint per epoch into ``config.workdir``. Returns the final state.
    """
    return train_sweep([config], reporter)[0]


def check_sweep(configs: Sequence[config_lib.Config]) -> None:
    """ValueError unless the runs differ only in beta, seed and workdir, with distinct (beta, seed) and workdirs."""
    if not configs:
        raise ValueError("no runs to train")
    first = configs[0]
    for c in configs[1:]:
        diffs = first.differences(c, ignore=frozenset({"beta", "seed", "workdir"}))
        if diffs:
            raise ValueError(f"a sweep trains runs that differ only in beta and seed; these differ in {sorted(diffs)}")
    for name, values in (
        ("(beta, seed)", [(c.beta, c.seed) for c in configs]),
        ("workdir", [str(Path(c.workdir).absolute()) for c in configs]),
    ):
        if len(set(values)) != len(values):
            raise ValueError(f"the runs of a sweep need distinct {name}s, got {values}")


def train_sweep(
    configs: Sequence[config_lib.Config], reporter: Reporter | None = None, stop: Callable[[], bool] | None = None
) -> list[TrainState]:
    """Train one run per config, all in one compiled program: a sweep of beta (Higgins et al. 2017's beta), of
    seeds, or of both.

    The configs may differ in ``beta``, ``seed`` and ``workdir`` only. With more
    than one, the states are stacked along a leading axis and every step is
    vmapped over them (one compilation); each run draws its initialisation,
    batch order, binarization and noise from its own seed and keeps its own
    workdir, config, metrics and checkpoints, as if trained alone. A GPU's
    step of batch 128 is launch-bound, so there several runs in one program
    cost little more than one (an H100 bound: 3 JMVAE seeds took about 1.6
    times one seed's time, on a shared GPU; docs/PERFORMANCE.md). A seed sweep needs
    in-memory data (a streamed data set has one batch order).
    A sweep resumes from the latest epoch that every run has a checkpoint of.
    Returns the final state of each run.

    ``stop()`` True (train.py: SIGINT or SIGTERM) ends training at the next
    step boundary: the state is checkpointed in ``<workdir>/interrupted`` and
    ``errors.Interrupted`` raised; the next run goes on from that step and
    reaches the same parameters. With several processes the request is
    honoured at the end of the epoch. A non-finite loss or parameter stops
    training with FloatingPointError, or, with ``config.nan_rollbacks``, rolls
    back to the last good checkpoint with lower learning rates.

    In a multi-process run (``mvae_jax.distributed``) every process calls
    this with the same configs; process 0 reports to ``reporter`` and writes
    the config and metrics files, and all of them write the checkpoints.
    """
    sweep = _Sweep(configs, reporter, stop)
    try:
        sweep.resume(mid_epoch=not sweep.several, first=True)
        while sweep.epochs_done < sweep.config.epochs:
            result = sweep.run_epoch()
            if not result.finite:
                sweep.roll_back(result)
            elif not result.complete:
                sweep.save_interrupted(result)
            else:
                sweep.finish_epoch(result)
                sweep.stop_if_asked(result.epoch)
    except BaseException as e:
        sweep.close(raising=False, error=e)  # the error that stopped the run is the one to report
        raise
    sweep.close()
    return sweep.final_states()


@dataclasses.dataclass(frozen=True)
class EpochResult:
    """What one call of the compiled epoch did: per run, the epoch's mean loss terms (with the steps run
    before an interruption, if it resumed one), the steps, the seconds, and whether it ended and stayed finite."""

    epoch: int
    members: list[dict[str, float]]
    count: int
    seconds: float
    complete: bool
    bad: list[Path]  # workdirs with a non-finite loss term
    finite_params: bool

    @property
    def finite(self) -> bool:
        return not self.bad and self.finite_params


class _Sweep:
    """One call of ``train_sweep``: the runs' configs and files, the data, the compiled epoch, the state.

    Every check that can fail runs before anything is written or compiled.
    """

    def __init__(
        self, configs: Sequence[config_lib.Config], reporter: Reporter | None, stop: Callable[[], bool] | None
    ):
        self.configs = [c.validate() for c in configs]
        check_sweep(self.configs)
        tracking.check(self.configs[0].tracker)  # an extra not installed: one line before anything is loaded
        self.workdirs = [check_workdir(c) for c in self.configs]
        config = self.configs[0]
        self.mesh = make_mesh()
        if config.batch_size % self.mesh.size:
            raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {self.mesh.size} devices")
        check_disk_space(self.configs, self.workdirs)
        self.primary = jax.process_index() == 0  # reports, writes config and metrics; all write checkpoints
        if self.primary:  # one train.py per workdir: refuse at once if another holds it
            for w in self.workdirs:
                check_unlocked(w)
        incomplete = self._load_data(config)
        self.model = get_model(config, self.dataset.modalities)
        self.axes = SweepAxes.of(self.configs)  # None: one run
        self.several = jax.process_count() > 1
        self.reporter = reporter if self.primary else None
        self.stop = stop
        self.rollbacks = 0
        self.barriers = 0  # barriers passed, for their unique names
        self.data = None if self.dataset.is_streamed else replicate(self.dataset.train, self.mesh)
        self._setup_validation()
        self._compile()
        self.locks = [WorkdirLock(w).acquire() for w in self.workdirs] if self.primary else []
        if incomplete is not None and self.primary:  # what the run trains on, read back on resume
            names = [m.name for m in self.dataset.modalities]
            for w in self.workdirs:
                missing.save_mask(w, incomplete.mask, names)
        self.checkpoints = [Checkpoints(w, config.keep_checkpoints) for w in self.workdirs]
        self.best = [Checkpoints(w, 1, BEST_DIR) for w in self.workdirs] if self.validate is not None else []
        self.best_loss = [math.inf for _ in self.workdirs]
        self.interrupted = [MidEpochCheckpoint(w) for w in self.workdirs]
        self.trackers = []  # each run's trackers (--tracker): the primary process's only
        if self.primary and tracking.names(config.tracker):
            examples = trackers.examples(self.dataset)
            try:
                for w, c in zip(self.workdirs, self.configs):  # ValueError if one cannot start: before training
                    self.trackers.append(trackers.RunTrackers(w, c, examples))
            except BaseException:
                self.close(raising=False, error=errors.Interrupted("not started"))
                raise
        self.state, self.partial = None, None

    def _load_data(self, config: config_lib.Config):
        """The training data as the runs train on it (``train_examples``, ``missing``), its steps per epoch;
        returns the missing-data mask drawn (None for complete data). ValueError for a seed sweep of a
        streamed data set, or a batch larger than the training split."""
        self.dataset = load_dataset(config)
        if config.train_examples:
            self.dataset = self.dataset.first_training_examples(config.train_examples)
        self.dataset, incomplete = missing.apply(self.dataset, config, workdir=self.workdirs[0])
        if incomplete is not None and self.primary:
            log.info(
                "missing=%s%s: %s", config.missing, " (dropped)" if config.drop_incomplete else "", incomplete.line()
            )
        if self.dataset.is_streamed and len({c.seed for c in self.configs}) > 1:
            raise ValueError(
                f"seeds {[c.seed for c in self.configs]}: a seed sweep needs an in-memory data set, and "
                f"{config.dataset} is streamed from disk in one batch order; train each seed on its own"
            )
        self.steps = self.dataset.num_train // config.batch_size
        if self.steps < 1:
            raise ValueError(f"batch_size={config.batch_size} exceeds the {self.dataset.num_train} training examples")
        return incomplete

    @property
    def config(self) -> config_lib.Config:
        return self.configs[0]

    @property
    def betas(self) -> tuple[float, ...] | None:
        """The vmapped values of the loss, one per member; None for one run."""
        return None if self.axes is None else self.axes.betas

    @property
    def epochs_done(self) -> int:
        return scalar(self.state.epoch)

    def _setup_validation(self) -> None:
        """The per-epoch validation objective (``mvae_jax.training.validation``) of a run with an in-memory
        validation split (``--validation=N``); streamed data sets (CelebA) are scored by eval.py instead."""
        self.validate = None
        held = None if self.dataset.is_streamed else self.dataset.validation
        count = len(next(iter(held.values()))) if held else 0
        if count:
            self.validate = validation_lib.make_validation_fn(
                self.model, count, self.config.batch_size, validation_lib.AFTER_WARMUPS, self.betas
            )
            self.validation_data = replicate(held, self.mesh)
            keys = [validation_lib.validation_key(c.seed) for c in self.configs]
            self.validation_key = replicate(stack_members(self.axes, keys), self.mesh)

    def _compile(self) -> None:
        """The optimizers of the configs' learning rates and the epoch function that uses them."""
        config, dataset = self.config, self.dataset
        self.tx, self.adversary = make_optimizers(config, dataset.modalities)
        on_step = self.reporter.step if self.reporter is not None else None
        step_stop = None if self.several else self.stop  # processes must agree: they stop at an epoch's end
        ready = self._barrier if self.several else None  # compiled everywhere before a step runs
        if dataset.is_streamed:
            step_fn = jax.jit(
                make_step_fn(self.model, self.tx, self.mesh, dataset.binarize, self.adversary, self.betas),
                donate_argnums=0,
            )
            self._epoch = lambda state, seed: stream_epoch(
                step_fn, state, dataset.train, config.batch_size, seed, self.mesh, on_step, stop=step_stop, ready=ready
            )
        else:
            epoch_fn = make_epoch_fn(
                self.model,
                self.tx,
                dataset.num_train,
                config.batch_size,
                self.mesh,
                on_step,
                dataset.binarize,
                self.adversary,
                self.betas,
            )
            self._epoch = lambda state, seed: epoch_fn(state, self.data, stop=step_stop, ready=ready)

    def _barrier(self) -> None:
        """All processes wait here for the slowest, whose first collective would otherwise time out (Gloo: 30 s)."""
        self.barriers += 1
        distributed.barrier(f"mvae_jax: epoch programs compiled ({self.barriers})")

    def resume(self, mid_epoch: bool, first: bool = False) -> int | None:
        """Restore the latest good checkpoint (with ``mid_epoch``, a stopped epoch's state too), or start fresh;
        write each run's config.json and drop its metric lines past the checkpoint. Returns the epochs done."""
        fresh_states = [
            replicate(create_train_state(self.model, self.tx, c.seed, self.adversary), self.mesh) for c in self.configs
        ]
        fresh = fresh_states[0]  # the template the checkpoints restore into
        start, states = restore_latest_good(self.checkpoints, fresh, resume_epoch(self.checkpoints))
        if start is None:
            states = fresh_states
        partial = restore_mid_epoch(self.interrupted, fresh, start or 0) if mid_epoch else None
        if partial is not None:
            states, partial = partial
        if self.primary:
            for c, w in zip(self.configs, self.workdirs):
                config_lib.save_config(c, w)
                truncate_metrics(w / METRICS_FILE, start or 0)
        self._resume_best(start or 0)
        self.state = replicate(stack_members(self.axes, states), self.mesh)
        self.partial = partial
        if first and partial is not None:
            log.info(
                "resumed %s from step %d, in epoch %d",
                ", ".join(map(str, self.workdirs)),
                partial["step"],
                (start or 0) + 1,
            )
        elif first and start is not None:
            log.info("resumed %s from epoch %d", ", ".join(map(str, self.workdirs)), start)
        return start

    def _resume_best(self, start: int) -> None:
        """The validation loss of each run's best checkpoint, the bar a later epoch must beat (inf if it has
        none); a best checkpoint of an epoch after ``start`` (lost, recomputed now) goes to superseded_checkpoints/."""
        for i, (w, best) in enumerate(zip(self.workdirs, self.best)):
            for later in [e for e in best.all_steps() if e > start]:
                moved = best.quarantine(later, SUPERSEDED_DIR)
                log.warning("%s: moved the best checkpoint of epoch %d to %s", w, later, moved)
            kept = best.latest()
            records = [r for r in validation_lib.read_records(w / METRICS_FILE) if r.get("epoch") == kept]
            value = records[-1].get(validation_lib.SELECTION_TERM) if records else None
            self.best_loss[i] = value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    def _validation_terms(self) -> list[dict[str, float]]:
        """Per run: {``validation_<term>``: mean over the validation split}, and the seconds it took."""
        began = time.perf_counter()
        terms = jax.device_get(self.validate(self.state.params, self.validation_key, self.validation_data))
        seconds = time.perf_counter() - began
        return [
            {
                **{validation_lib.PREFIX + k: float(member(self.axes, np.asarray(v), i)) for k, v in terms.items()},
                validation_lib.PREFIX + "time_s": seconds,
            }
            for i in range(len(self.configs))
        ]

    def run_epoch(self) -> EpochResult:
        """Run the rest of the current epoch (all of it, unless it resumed a stopped one, or ``stop`` asks)."""
        epoch = self.epochs_done + 1
        if self.reporter is not None:
            self.reporter.epoch_start(epoch, self.config.epochs, self.steps)
        began, step_before = time.perf_counter(), scalar(self.state.step)
        self.state, terms = self._epoch(self.state, epoch_seed(self.config.seed, epoch))
        terms = jax.device_get(terms)
        finite_params = bool(all_finite(self.state.params))
        count, seconds = scalar(self.state.step) - step_before, time.perf_counter() - began
        members = [
            {k: float(member(self.axes, np.asarray(v), i)) for k, v in terms.items()} for i in range(len(self.configs))
        ]
        members, count, seconds = self._merge_partial(members, count, seconds)
        bad = [w for w, m in zip(self.workdirs, members) if not all(math.isfinite(v) for v in m.values())]
        return EpochResult(epoch, members, count, seconds, self.epochs_done == epoch, bad, finite_params)

    def _merge_partial(self, members, count: int, seconds: float):
        """The steps run before an interruption count in the epoch's means, its step count and its time."""
        if self.partial is None:
            return members, count, seconds
        before = self.partial["count"]
        members = [
            {k: (v * count + self.partial["means"][i][k] * before) / (count + before) for k, v in m.items()}
            for i, m in enumerate(members)
        ]
        return members, count + before, seconds + self.partial["time_s"]

    def roll_back(self, result: EpochResult) -> None:
        """Back to the last good checkpoint with both learning rates lowered (``nan_rollbacks``), or
        FloatingPointError naming the epoch and the checkpoint kept."""
        what = f"non-finite loss terms {result.members[0]}" if result.bad else "non-finite parameters"
        last = self.checkpoints[0].latest()
        if self.rollbacks >= self.config.nan_rollbacks:
            raise FloatingPointError(
                f"{what} in epoch {result.epoch} of {', '.join(map(str, result.bad or self.workdirs))}. The last good "
                f"checkpoint ({f'epoch {last}' if last is not None else 'none yet: the initial state'}) in "
                f"{self.checkpoints[0].directory} is kept; resume with a lower --learning_rate, or with "
                "--nan_rollbacks=N to roll back and lower it automatically."
            )
        self.rollbacks += 1
        self.configs = [
            dataclasses.replace(
                c,
                learning_rate=c.learning_rate * c.nan_lr_factor,
                disc_learning_rate=c.disc_learning_rate * c.nan_lr_factor,
            )
            for c in self.configs
        ]
        self._compile()
        for mid in self.interrupted:
            mid.clear()
        start = self.resume(mid_epoch=False)
        log.warning(
            "%s in epoch %d: rolled back to %s and lowered the learning rate to %g (rollback %d of %d; "
            "config.json updated)",
            what,
            result.epoch,
            f"epoch {start}" if start else "the initial state",
            self.config.learning_rate,
            self.rollbacks,
            self.config.nan_rollbacks,
        )

    def save_interrupted(self, result: EpochResult) -> None:
        """Checkpoint an epoch stopped part-way in each run's interrupted/, then raise errors.Interrupted."""
        step = scalar(self.state.step)
        for i, mid in enumerate(self.interrupted):
            mid.save(
                self._member(i),
                {
                    "epoch": result.epoch,
                    "step": step,
                    "count": result.count,
                    "time_s": result.seconds,
                    "means": result.members[i],
                },
            )
        raise errors.Interrupted(
            f"interrupted in epoch {result.epoch} after step {step - (result.epoch - 1) * self.steps} of "
            f"{self.steps}: the state is checkpointed in {self.interrupted[0].directory}; run the same command to "
            "go on from there"
        )

    def finish_epoch(self, result: EpochResult) -> None:
        """Each run's metrics line, then its checkpoint (a checkpoint never lacks its line); report."""
        records = [
            {
                "epoch": result.epoch,
                "step": scalar(self.state.step),
                **m,
                "time_s": result.seconds,
                "samples_per_s": result.count * self.config.batch_size / result.seconds,
            }
            for m in result.members
        ]
        if self.validate is not None:
            for record, held in zip(records, self._validation_terms()):
                record.update(held)
        self.partial = None
        for i, (w, ck, record) in enumerate(zip(self.workdirs, self.checkpoints, records)):
            if self.primary:
                append_metrics(w / METRICS_FILE, record, ck)
                if self.trackers:
                    self.trackers[i].epoch(record, self.model, self._member(i).params)
            ck.save(self._member(i))
            held = record.get(validation_lib.SELECTION_TERM)
            if held is not None and math.isfinite(held) and held < self.best_loss[i]:
                self.best[i].save(self._member(i))
                self.best_loss[i] = held
            log.info(
                "%s epoch %d/%d loss %.4f%s (%.1f s, %.0f samples/s)",
                w.name,
                result.epoch,
                self.config.epochs,
                record["loss"],
                "" if held is None else f", validation {held:.4f}" + (" (best)" if self.best_loss[i] == held else ""),
                result.seconds,
                record["samples_per_s"],
            )
        for mid in self.interrupted:
            mid.clear()
        if self.reporter is not None:
            self.reporter.epoch_end({**records[0], "loss": np.asarray([r["loss"] for r in records])})

    def stop_if_asked(self, epoch: int) -> None:
        """errors.Interrupted after the epoch's checkpoints are written if ``stop()`` asks (in any process)."""
        if self.stop is not None and epoch < self.config.epochs and _anyone(self.stop(), self.several):
            for ck in self.checkpoints:
                ck.wait()
            raise errors.Interrupted(
                f"interrupted after epoch {epoch}: its checkpoint is in "
                f"{self.checkpoints[0].directory}; run the same command to go on from there"
            )

    def _member(self, index: int) -> TrainState:
        return member(self.axes, self.state, index)

    def final_states(self) -> list[TrainState]:
        return [self._member(i) for i in range(len(self.configs))]

    def close(self, raising: bool = True, error: BaseException | None = None) -> None:
        """Finish the background saves and release the checkpoints, trackers and locks. With ``raising`` False
        (closing after ``error``, which is the one to report), a failed save here is only logged, and the
        trackers mark the run killed (interrupted) or failed."""
        failed = []
        try:
            for ck in (*getattr(self, "checkpoints", ()), *getattr(self, "best", ())):
                try:
                    ck.close()
                except errors.CheckpointError as e:  # every manager is still closed
                    failed.append(e)
                    log.debug("closing %s: %s", ck.directory, e)
            if failed and raising:
                raise failed[0]
        finally:
            status = "FINISHED" if error is None else tracking.status_of(error)
            for run in getattr(self, "trackers", ()):
                run.close(status)
            for lock in getattr(self, "locks", ()):
                lock.release()


def append_metrics(path: Path, record: dict, checkpoints: Checkpoints) -> None:
    """Append one epoch's line to metrics.jsonl; errors.CheckpointError in one line if the disk refuses (full,
    read-only). A line cut short by the failure is dropped on resume, as after a kill."""
    try:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        kept = checkpoints.all_steps()
        raise errors.CheckpointError(
            f"could not write the metrics line of epoch {record['epoch']} to {path} ({type(e).__name__}: {e}); the "
            f"checkpoints of epochs {kept} are intact. Free some space or fix the permissions, then run the same "
            "command to resume."
        ) from e


def _anyone(flag: bool, several: bool) -> bool:
    """True if ``flag`` is True in any process (every process must call this at the same point)."""
    if not several:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
