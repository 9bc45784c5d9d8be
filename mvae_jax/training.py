"""Train state, the jitted epoch, sharding, checkpoints and resume.

An epoch is a few compiled ``lax.scan`` chunks of steps over a permutation
drawn inside jit: the data set lives on the device and Python runs only
between chunks (progress, a stop request). Batches are sharded over all
devices along a ``"data"`` mesh axis (data parallelism); parameters and the
data set are replicated. Checkpoints are written at each epoch's end, and
mid-epoch when a stop is requested; resuming from either gives the
parameters of an uninterrupted run.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import json
import logging
import math
import os
from pathlib import Path
import shutil
import time
from typing import Any, Protocol

from flax import struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax
import orbax.checkpoint as ocp

from mvae_jax import adversarial, errors, losses
from mvae_jax import config as config_lib
from mvae_jax.data import load_dataset
from mvae_jax.models import Model, get_model

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"  # unreadable checkpoints are moved here, never deleted
SUPERSEDED_DIR = "superseded_checkpoints"  # a sweep member's epochs past the sweep's common epoch, never deleted
INTERRUPTED_DIR = "interrupted"  # the mid-epoch checkpoint of a run stopped by SIGINT/SIGTERM
_STEP_STREAM, _PERMUTATION_STREAM, _BINARIZE_STREAM, _DISC_INIT_STREAM = 0, 1, 2, 3
_ADVERSARY_STREAM = 1  # folded into a step's key
_REPORT_EVERY = 10  # steps between progress reports (host callbacks) of an epoch


class TrainState(struct.PyTreeNode):
    """Everything a resumed run needs: counters, parameters, optimizer states and the base key.

    ``disc_params`` and ``disc_opt_state`` hold the discriminators of
    adversarial training (``mvae_jax.adversarial``), None without it.
    """

    step: jax.Array  # int32 (), optimizer steps taken
    epoch: jax.Array  # int32 (), epochs completed
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 (2,), base key; per-step and per-epoch keys are folded from it
    disc_params: Any = None
    disc_opt_state: Any = None


class Reporter(Protocol):
    """Progress hooks a command line implements (the library itself only logs).

    In a beta sweep, losses are arrays with one value per beta.
    """

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, index: int, running_loss) -> None: ...

    def epoch_end(self, metrics: Mapping[str, Any]) -> None: ...


def make_optimizer(config: config_lib.Config) -> optax.GradientTransformation:
    """Adam (Kingma & Ba 2015) with the run's learning rate."""
    return optax.adam(config.learning_rate)


def make_optimizers(config: config_lib.Config, modalities) -> tuple[optax.GradientTransformation,
                                                                     adversarial.Adversary | None]:
    """(the generator's optimizer, the discriminators' ``Adversary`` or None): both from ``config``'s learning rates,
    so a NaN rollback that lowers them rebuilds both."""
    return make_optimizer(config), adversarial.make_adversary(config, modalities)


def create_train_state(model: Model, tx: optax.GradientTransformation, seed: int,
                       adversary: adversarial.Adversary | None = None) -> TrainState:
    """Fresh parameters and optimizer state(s) for ``seed``."""
    rng = jax.random.PRNGKey(seed)
    init_rng, rng = jax.random.split(rng)
    params = model.init(init_rng)
    state = TrainState(jnp.int32(0), jnp.int32(0), params, tx.init(params), rng)
    if adversary is not None:
        shapes = {m.name: m.shape for m in model.modalities}
        disc_params = adversary.init(jax.random.fold_in(rng, _DISC_INIT_STREAM), shapes)
        state = state.replace(disc_params=disc_params, disc_opt_state=adversary.tx.init(disc_params))
    return state


def make_train_step(model: Model, tx: optax.GradientTransformation, adversary: adversarial.Adversary | None = None):
    """(state, batch, beta=None) -> (state, {term: batch mean}): one gradient step on the mean per-example loss.

    ``beta`` (may be traced) overrides the model's KL weight. With an
    ``adversary`` the generator's loss gains its adversarial term and the
    discriminators then take one step of their own on the same generated images.
    """

    def train_step(state: TrainState, batch, beta=None):
        rng = jax.random.fold_in(jax.random.fold_in(state.rng, _STEP_STREAM), state.step)
        beta_arg = () if beta is None else (beta,)

        def objective(params):
            terms = model.loss(params, batch, rng, state.epoch, *beta_arg)
            fakes = None
            if adversary is not None:
                fakes = adversary.fakes(model, params, batch, jax.random.fold_in(rng, _ADVERSARY_STREAM))
                adv = adversary.generator_terms(state.disc_params, fakes, state.epoch)
                terms = {**terms, **adv, "vae_loss": terms["loss"],
                         "loss": terms["loss"] + adv["adv_weight"] * adv["adv_generator"]}
            terms = losses.mean_terms(terms)
            return terms["loss"], (terms, fakes)

        grads, (terms, fakes) = jax.grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if model.trainable is not None:  # frozen parameters: their updates are zeroed
            updates = jax.tree_util.tree_map(lambda u, m: u * m, updates, model.trainable(state.params, state.epoch))
        params = optax.apply_updates(state.params, updates)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        if adversary is not None:
            disc_params, disc_opt_state, disc_terms = adversary.step(state.disc_params, state.disc_opt_state, batch, fakes)
            new = new.replace(disc_params=disc_params, disc_opt_state=disc_opt_state)
            terms = {**terms, **disc_terms}
        return new, terms

    return train_step


def make_step_fn(model: Model, tx: optax.GradientTransformation, mesh: Mesh | None = None,
                 binarize: tuple[str, ...] = (), adversary: adversarial.Adversary | None = None,
                 betas: tuple[float, ...] | None = None):
    """(state, batch) -> (state, terms): the step of a run, or of a beta sweep, on one batch (not jitted).

    With ``betas`` the state is stacked (one member per beta, leading axis) and
    the step is vmapped over members; every member sees the same batch. The
    modalities named in ``binarize`` hold probabilities: each step replaces
    them by fresh Bernoulli draws (dynamic binarization).
    """
    train_step = make_train_step(model, tx, adversary)
    batch_sharding = NamedSharding(mesh, P("data")) if mesh is not None else None

    def step(state: TrainState, batch):
        batch = dict(batch)
        if binarize:
            rng, step = _first(state.rng, betas), _first(state.step, betas)
            key = jax.random.fold_in(jax.random.fold_in(rng, _BINARIZE_STREAM), step)
            for i, name in enumerate(binarize):
                probs = batch[name]
                batch[name] = jax.random.bernoulli(jax.random.fold_in(key, i), probs).astype(probs.dtype)
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        if betas is None:
            return train_step(state, batch)
        return jax.vmap(train_step, in_axes=(0, None, 0))(state, batch, jnp.asarray(betas, jnp.float32))

    return step


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (all by default) with the batch axis ``"data"``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def make_epoch_fn(
    model: Model,
    tx: optax.GradientTransformation,
    num_examples: int,
    batch_size: int,
    mesh: Mesh | None = None,
    on_step: Callable[[Any, Any], None] | None = None,
    binarize: tuple[str, ...] = (),
    adversary: adversarial.Adversary | None = None,
    betas: tuple[float, ...] | None = None,
    chunk_steps: int | None = None,
) -> EpochFn:
    """(state, data) -> (state, {term: mean}): one epoch over in-memory ``data``, in jitted chunks of steps.

    The epoch visits ``num_examples // batch_size`` batches of a permutation
    drawn from the state's key and epoch (the last partial batch is dropped;
    the next epoch's permutation differs). See ``EpochFn``.
    """
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} training examples")
    return EpochFn(make_step_fn(model, tx, mesh, binarize, adversary, betas), num_examples, batch_size, betas,
                   on_step, chunk_steps or _REPORT_EVERY)


class EpochFn:
    """One epoch as a few jitted ``lax.scan`` chunks of ``chunk_steps`` steps; Python runs between chunks only.

    ``fn(state, data, stop=None)`` runs the steps of the state's current epoch
    that are not done yet (``state.step`` counts them, so an epoch interrupted
    and checkpointed goes on where it stopped) and returns (state, {term: mean
    over the steps it ran}); ``state.epoch`` is incremented if the epoch was
    completed. ``stop()``, if given, is asked after each chunk is dispatched:
    True ends the call at that chunk's end, a step boundary. ``on_step(index,
    running_loss)`` is called after each chunk (a progress bar); the host
    waits for chunk k only once chunk k + 1 is queued, so the device never
    idles. ``state`` is donated: do not reuse the one passed in.
    """

    def __init__(self, step_fn, num_examples: int, batch_size: int, betas, on_step, chunk_steps: int):
        self.steps, self.on_step, self.chunk_steps = num_examples // batch_size, on_step, chunk_steps
        steps = self.steps

        def order(state):
            epoch_done = _first(state.epoch, betas)
            key = jax.random.fold_in(jax.random.fold_in(_first(state.rng, betas), _PERMUTATION_STREAM), epoch_done)
            return jax.random.permutation(key, num_examples)[: steps * batch_size].reshape(steps, batch_size)

        def chunk(state, data, order, length):
            start = _first(state.step, betas) - _first(state.epoch, betas) * steps

            def body(state, indices):
                return step_fn(state, {k: v[indices] for k, v in data.items()})

            state, terms = jax.lax.scan(body, state, jax.lax.dynamic_slice_in_dim(order, start, length))
            return state, jax.tree_util.tree_map(lambda t: jnp.sum(t, axis=0), terms)

        self.order = jax.jit(order)
        self.chunk = jax.jit(chunk, donate_argnums=0, static_argnames="length")

    def __call__(self, state: TrainState, data, stop: Callable[[], bool] | None = None):
        order = self.order(state)
        start = done = _steps_done(state, self.steps)
        sums, waiting = None, None
        while done < self.steps:
            length = min(self.chunk_steps, self.steps - done)
            state, part = self.chunk(state, data, order, length=length)
            done += length
            sums = part if sums is None else jax.tree_util.tree_map(jnp.add, sums, part)
            if waiting is not None:  # chunk k + 1 is queued: wait for chunk k
                self._report(*waiting)
            waiting = (done, sums["loss"], done - start)
            if stop is not None and stop():
                break
        if waiting is not None:
            self._report(*waiting)
        if done == self.steps:
            state = state.replace(epoch=state.epoch + 1)
        count = max(done - start, 1)
        return state, jax.tree_util.tree_map(lambda t: t / count, sums if sums is not None else {})

    def _report(self, index, loss_sum, count) -> None:
        loss = np.asarray(loss_sum) / count  # blocks until that chunk is done
        if self.on_step is not None:
            self.on_step(index, loss)


def stream_epoch(step_fn, state: TrainState, stream, batch_size: int, seed: int, mesh: Mesh | None = None,
                 on_step: Callable[[Any, Any], None] | None = None, prefetch: int = 2,
                 stop: Callable[[], bool] | None = None):
    """One epoch over a streamed data set: (state, {term: mean over the steps run}).

    Batches come from ``stream.batches`` in an order drawn from ``seed``; each
    is put on the devices (sharded along ``"data"``) ``prefetch`` batches ahead
    of the jitted ``step_fn``, so reading, transfer and compute overlap. In a
    multi-process run each process reads only its own rows of every batch.
    Steps of the epoch already taken (``state.step``; an epoch interrupted and
    checkpointed) are skipped; ``stop()`` True ends the epoch after the step
    just queued, and ``state.epoch`` is incremented only if the epoch is complete.
    """
    sharding = NamedSharding(mesh if mesh is not None else make_mesh(jax.local_devices()[:1]), P("data"))
    steps = len(stream) // batch_size
    if steps < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(stream)} training examples")
    start = _steps_done(state, steps)
    queue, totals, count, stopped = collections.deque(), None, 0, False

    def run(batch):
        nonlocal state, totals, count
        state, terms = step_fn(state, batch)
        totals = terms if totals is None else jax.tree_util.tree_map(jnp.add, totals, terms)
        count += 1
        if on_step is not None and (start + count) % _REPORT_EVERY == 0:
            on_step(start + count, totals["loss"] / count)

    batches = stream.batches(batch_size, seed, skip=start, process_index=jax.process_index(),
                             process_count=jax.process_count())
    for batch in batches:
        queue.append(shard_batch(batch, sharding))
        if len(queue) > prefetch:
            run(queue.popleft())
            if stop is not None and stop():
                stopped = True
                break
    while queue and not stopped:
        run(queue.popleft())
    if start + count == steps:
        state = state.replace(epoch=state.epoch + 1)
    return state, jax.tree_util.tree_map(lambda t: t / max(count, 1), totals if totals is not None else {})


def _scalar(counter) -> int:
    """A counter of a run, or of the first run of a sweep."""
    return int(np.asarray(jax.device_get(counter)).reshape(-1)[0])


def _steps_done(state: TrainState, steps: int) -> int:
    """Steps of the state's current epoch already taken (> 0 after a stop mid-epoch)."""
    return _scalar(state.step) - _scalar(state.epoch) * steps


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of ``epoch`` for a streamed data set (a different order every epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class Checkpoints:
    """orbax checkpoints of the TrainState in ``workdir/checkpoints``, one per epoch, the latest ``keep`` kept.

    orbax writes each into a temporary folder and renames it when complete,
    so a process killed during a save leaves no checkpoint that reads as good.
    """

    def __init__(self, workdir: str | os.PathLike, keep: int = 3):
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )
        self._pending = None

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
        self._pending = epoch
        return epoch

    def wait(self) -> None:
        """Wait for the background save; CheckpointError if it failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._failed(self._pending, e) from e
        self._pending = None

    def _failed(self, epoch: int | None, error: Exception) -> errors.CheckpointError:
        try:
            self.manager.reload()
            kept = f"the checkpoints of epochs {self.all_steps()} are intact"
        except Exception:  # the disk may refuse even to be listed
            kept = "the checkpoints written before are untouched"
        return errors.CheckpointError(
            f"could not write the checkpoint of epoch {epoch} in {self.directory} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); {kept}. Free some space or fix the "
            "permissions, then run the same command to resume.")

    def restore(self, target: TrainState, epoch: int | None = None) -> TrainState:
        """The checkpoint of ``epoch`` (the latest by default), shaped and placed like ``target``."""
        epoch = self.latest() if epoch is None else epoch
        if epoch is None or epoch not in self.all_steps():
            raise FileNotFoundError(f"no checkpoint for epoch {epoch} in {self.directory}; have {self.all_steps()}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        return self.manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

    def quarantine(self, epoch: int, folder: str = CORRUPT_DIR) -> Path:
        """Move the checkpoint of ``epoch`` out of the manager's folder, to ``<workdir>/<folder>/`` (never deleted)."""
        target = _quarantine(self.directory / str(epoch), self.directory.parent, f"epoch{epoch}", folder)
        self.manager.reload()
        return target

    def close(self) -> None:
        """Wait for background saves (CheckpointError if one failed) and release the manager."""
        try:
            self.wait()
        finally:
            self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
        return ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def save(self, state: TrainState, progress: Mapping[str, Any]) -> None:
        """Write ``state`` and ``progress`` and wait until they are complete; CheckpointError if that fails."""
        step = int(state.step)
        manager = self._manager()
        try:
            manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       progress=ocp.args.JsonSave(dict(progress))))
            manager.wait_until_finished()
        except Exception as e:
            raise errors.CheckpointError(
                f"could not write the checkpoint of step {step} in {self.directory} ({type(e).__name__}: {e}); "
                "the epoch checkpoints are intact, and a new run restarts this epoch from its start") from e
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
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                      progress=ocp.args.JsonRestore()))
            return restored.state, dict(restored.progress)
        finally:
            manager.close()

    def quarantine(self) -> Path:
        return _quarantine(self.directory, self.directory.parent, INTERRUPTED_DIR)

    def clear(self) -> None:
        """Remove it (its epoch is complete, or rolled back); process 0 does, once."""
        if jax.process_index() == 0 and self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)


def saved_epochs(workdir: str | os.PathLike) -> list[int]:
    """The epochs with a complete checkpoint in ``workdir``, creating nothing."""
    if not (Path(workdir) / CHECKPOINT_DIR).is_dir():
        return []
    with Checkpoints(workdir) as checkpoints:
        return checkpoints.all_steps()


def replicate(tree, mesh: Mesh):
    """Place every array of ``tree`` on all devices of ``mesh``, those of other processes included.

    Every process must pass the same values (the same seed, the same files).
    """
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def shard_batch(batch, sharding: NamedSharding):
    """A global batch sharded along ``"data"`` from this process's rows of it (all rows with one process)."""
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def check_workdir(config: config_lib.Config) -> Path:
    """Check, creating nothing, that the workdir can be written and holds no run with other settings."""
    workdir = Path(config.workdir).absolute()
    existing = next(p for p in (workdir, *workdir.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        reason = "is not a directory" if not existing.is_dir() else "is not writable"
        raise PermissionError(f"workdir={config.workdir!r} is not writable: {existing} {reason}")
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


def train_and_evaluate(config: config_lib.Config, reporter: Reporter | None = None) -> TrainState:
    """Train ``config.model`` on ``config.dataset`` to ``config.epochs`` epochs, resuming from the workdir.

    Writes ``config.json``, ``metrics.jsonl`` (one line per epoch) and a
    checkpoint per epoch into ``config.workdir``. Returns the final state.
    """
    return train_sweep([config], reporter)[0]


def check_sweep(configs: Sequence[config_lib.Config]) -> None:
    """ValueError unless the runs differ only in beta and workdir, with distinct betas and workdirs."""
    if not configs:
        raise ValueError("no runs to train")
    first = configs[0]
    for c in configs[1:]:
        diffs = first.differences(c, ignore=frozenset({"beta", "workdir"}))
        if diffs:
            raise ValueError(f"a beta sweep trains runs that differ only in beta; these differ in {sorted(diffs)}")
    for name in ("beta", "workdir"):
        values = [str(Path(getattr(c, name)).absolute()) if name == "workdir" else getattr(c, name) for c in configs]
        if len(set(values)) != len(values):
            raise ValueError(f"the runs of a sweep need distinct {name}s, got {values}")


def train_sweep(configs: Sequence[config_lib.Config], reporter: Reporter | None = None,
                stop: Callable[[], bool] | None = None) -> list[TrainState]:
    """Train one run per config, all in one compiled program: a beta sweep (Higgins et al. 2017's beta).

    The configs may differ in ``beta`` and ``workdir`` only. With more than
    one, the states are stacked along a leading axis and every step is vmapped
    over them (one compilation, the same batches for all); each run keeps its
    own workdir, config, metrics and checkpoints, exactly as if trained alone.
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
    configs = [c.validate() for c in configs]
    check_sweep(configs)
    workdirs = [check_workdir(c) for c in configs]
    config = configs[0]
    mesh = make_mesh()
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {mesh.size} devices")
    check_disk_space(configs, workdirs)

    dataset = load_dataset(config)
    num_examples = dataset.num_train
    steps = num_examples // config.batch_size
    if steps < 1:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {num_examples} training examples")
    model = get_model(config, dataset.modalities)
    betas = tuple(float(c.beta) for c in configs) if len(configs) > 1 else None
    primary = jax.process_index() == 0  # reports, writes config and metrics; all processes write checkpoints
    several = jax.process_count() > 1
    reporter = reporter if primary else None
    on_step = reporter.step if reporter is not None else None
    step_stop = None if several else stop  # processes must agree: they stop together at an epoch's end

    data = None if dataset.is_streamed else replicate(dataset.train, mesh)

    def compile_epoch(config):
        """(tx, adversary, run_epoch) for ``config``'s learning rates."""
        tx, adversary = make_optimizers(config, dataset.modalities)
        if dataset.is_streamed:
            step_fn = jax.jit(make_step_fn(model, tx, mesh, dataset.binarize, adversary, betas), donate_argnums=0)
            return tx, adversary, lambda state, seed: stream_epoch(step_fn, state, dataset.train, config.batch_size,
                                                                   seed, mesh, on_step, stop=step_stop)
        epoch_fn = make_epoch_fn(model, tx, num_examples, config.batch_size, mesh, on_step, dataset.binarize,
                                 adversary, betas)
        return tx, adversary, lambda state, seed: epoch_fn(state, data, stop=step_stop)

    tx, adversary, run_epoch = compile_epoch(config)

    def fresh_state():
        return replicate(create_train_state(model, tx, config.seed, adversary), mesh)

    checkpoints = [Checkpoints(w, config.keep_checkpoints) for w in workdirs]
    interrupted = [MidEpochCheckpoint(w) for w in workdirs]

    def restore(mid_epoch: bool):
        """(epochs done, state, progress of a stopped epoch or None) from the checkpoints; config and metrics
        files written to match."""
        fresh = fresh_state()
        start, states = _restore_latest_good(checkpoints, fresh, _resume_epoch(checkpoints))
        partial = _restore_mid_epoch(interrupted, fresh, start or 0) if mid_epoch else None
        if partial is not None:
            states, partial = partial
        if primary:
            for c, w in zip(configs, workdirs):
                config_lib.save_config(c, w)
                _truncate_metrics(w / METRICS_FILE, start or 0)
        return start, replicate(states[0] if betas is None else stack(states), mesh), partial

    rollbacks = 0
    try:
        start, state, partial = restore(mid_epoch=not several)
        if partial is not None:
            log.info("resumed %s from step %d, in epoch %d", ", ".join(map(str, workdirs)), partial["step"],
                     (start or 0) + 1)
        elif start is not None:
            log.info("resumed %s from epoch %d", ", ".join(map(str, workdirs)), start)

        while _scalar(state.epoch) < config.epochs:
            epoch = _scalar(state.epoch) + 1
            if reporter is not None:
                reporter.epoch_start(epoch, config.epochs, steps)
            began, step_before = time.perf_counter(), _scalar(state.step)
            state, terms = run_epoch(state, epoch_seed(config.seed, epoch))
            terms = jax.device_get(terms)
            finite = bool(_all_finite(state.params))
            count = _scalar(state.step) - step_before
            seconds = time.perf_counter() - began
            done = _scalar(state.epoch) == epoch
            members = []
            for i in range(len(configs)):
                member = {k: float(np.asarray(v) if betas is None else np.asarray(v)[i]) for k, v in terms.items()}
                if partial is not None:  # the steps before the interruption count in the epoch's means
                    before = partial["count"]
                    member = {k: (v * count + partial["means"][i][k] * before) / (count + before)
                              for k, v in member.items()}
                members.append(member)
            if partial is not None:
                count, seconds = count + partial["count"], seconds + partial["time_s"]
            bad = [w for w, m in zip(workdirs, members) if not all(math.isfinite(v) for v in m.values())]
            if bad or not finite:
                what = f"non-finite loss terms {members[0]}" if bad else "non-finite parameters"
                last = checkpoints[0].latest()
                if rollbacks >= config.nan_rollbacks:
                    raise FloatingPointError(
                        f"{what} in epoch {epoch} of {', '.join(map(str, bad or workdirs))}. The last good "
                        f"checkpoint ({f'epoch {last}' if last is not None else 'none yet: the initial state'}) in "
                        f"{checkpoints[0].directory} is kept; resume with a lower --learning_rate, or with "
                        "--nan_rollbacks=N to roll back and lower it automatically.")
                rollbacks += 1
                configs = [dataclasses.replace(c, learning_rate=c.learning_rate * c.nan_lr_factor,
                                               disc_learning_rate=c.disc_learning_rate * c.nan_lr_factor)
                           for c in configs]
                config = configs[0]
                tx, adversary, run_epoch = compile_epoch(config)
                for mid in interrupted:
                    mid.clear()
                start, state, partial = restore(mid_epoch=False)
                log.warning("%s in epoch %d: rolled back to %s and lowered the learning rate to %g (rollback %d of "
                            "%d; config.json updated)", what, epoch, f"epoch {start}" if start else "the initial state",
                            config.learning_rate, rollbacks, config.nan_rollbacks)
                continue
            if not done:  # stopped part-way by ``stop``
                step = _scalar(state.step)
                for i, mid in enumerate(interrupted):
                    mid.save(state if betas is None else unstack(state, i),
                             {"epoch": epoch, "step": step, "count": count, "time_s": seconds, "means": members[i]})
                raise errors.Interrupted(
                    f"interrupted in epoch {epoch} after step {step - (epoch - 1) * steps} of {steps}: the state is "
                    f"checkpointed in {interrupted[0].directory}; run the same command to go on from there")
            records = [{"epoch": epoch, "step": _scalar(state.step), **m, "time_s": seconds,
                        "samples_per_s": count * config.batch_size / seconds} for m in members]
            partial = None
            for i, (w, ck, record) in enumerate(zip(workdirs, checkpoints, records)):
                if primary:  # before the checkpoint: a checkpoint never lacks its metrics line
                    with (w / METRICS_FILE).open("a") as f:
                        f.write(json.dumps(record) + "\n")
                ck.save(state if betas is None else unstack(state, i))
                log.info("%s epoch %d/%d loss %.4f (%.1f s, %.0f samples/s)", w.name, epoch, config.epochs,
                         record["loss"], seconds, record["samples_per_s"])
            for mid in interrupted:
                mid.clear()
            if reporter is not None:
                reporter.epoch_end({**records[0], "loss": np.asarray([r["loss"] for r in records])})
            if stop is not None and epoch < config.epochs and _anyone(stop(), several):
                for ck in checkpoints:
                    ck.wait()
                raise errors.Interrupted(f"interrupted after epoch {epoch}: its checkpoint is in "
                                         f"{checkpoints[0].directory}; run the same command to go on from there")
    finally:
        for ck in checkpoints:
            ck.close()
    return [state] if betas is None else [unstack(state, i) for i in range(len(configs))]


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def _anyone(flag: bool, several: bool) -> bool:
    """True if ``flag`` is True in any process (every process must call this at the same point)."""
    if not several:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


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
            "free some space or pick another --workdir")


def stack(states: Sequence[TrainState]) -> TrainState:
    """The states of a sweep stacked along a new leading axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)


def unstack(state: TrainState, index: int) -> TrainState:
    """Member ``index`` of a stacked sweep state."""
    return jax.tree_util.tree_map(lambda x: x[index], state)


def _first(counter: jax.Array, betas) -> jax.Array:
    """A counter or key of a run, or of the first run of a sweep (all runs of a sweep share them)."""
    return counter if betas is None else counter[0]


def _resume_epoch(checkpoints: Sequence[Checkpoints]) -> int | None:
    """The latest epoch every run has a checkpoint of; None for a fresh start; ValueError if they share none."""
    steps = [set(ck.all_steps()) for ck in checkpoints]
    if not any(steps):
        return None
    common = set.intersection(*steps)
    if not common:
        have = {str(ck.directory): sorted(s) for ck, s in zip(checkpoints, steps)}
        raise ValueError(f"the runs of this sweep have no checkpointed epoch in common ({have}); "
                         "resume them one by one, or remove the stray workdirs")
    start = max(common)
    for ck, have in zip(checkpoints, steps):
        for later in sorted(s for s in have if s > start):  # recomputed (identically) from ``start``
            target = ck.quarantine(later, SUPERSEDED_DIR)
            log.warning("%s: moved the checkpoint of epoch %d to %s to resume the sweep from epoch %d, the "
                        "latest epoch all its runs have", ck.directory, later, target, start)
    return start


def _restore_latest_good(checkpoints: Sequence[Checkpoints], fresh: TrainState,
                         start: int | None) -> tuple[int | None, list[TrainState]]:
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
            except Exception as e:  # orbax / tensorstore raise many types for damaged files
                bad = (ck, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                break
            if not bool(_all_finite(state.params)):
                bad = (ck, "non-finite parameters")
                break
            states.append(state)
        if bad is None:
            return epoch, states
        ck, reason = bad
        moved = ck.quarantine(epoch)
        log.warning("%s: the checkpoint of epoch %d is unreadable (%s); moved to %s, falling back to the "
                    "previous checkpoint", ck.directory, epoch, reason, moved)
        tried.append(epoch)
    raise ValueError(f"no readable checkpoint in {[str(ck.directory) for ck in checkpoints]} (unreadable: "
                     f"epochs {tried}, moved to {CORRUPT_DIR}/). Move the checkpoints folder away to start afresh.")


def _restore_mid_epoch(interrupted: Sequence[MidEpochCheckpoint], fresh: TrainState,
                       epochs_done: int) -> tuple[list[TrainState], dict] | None:
    """(one state per run, the epoch's progress) of a mid-epoch checkpoint in epoch ``epochs_done + 1``.

    None if a run has none, or it is stale (of an epoch whose checkpoint was
    written since: removed) or unreadable (moved to corrupt_checkpoints/ with
    a warning); training then starts that epoch from its beginning.
    """
    found = []
    for mid in interrupted:
        try:
            got = mid.restore(fresh)
        except Exception as e:  # orbax / tensorstore raise many types for damaged files
            got = None
            log.warning("%s is unreadable (%s: %s); moved to %s, the epoch restarts from its start", mid.directory,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "", mid.quarantine())
        if got is not None and not bool(_all_finite(got[0].params)):
            got = None
            log.warning("%s holds non-finite parameters; moved to %s", mid.directory, mid.quarantine())
        found.append(got)
    usable = (all(g is not None for g in found) and all(g[1]["epoch"] == epochs_done + 1 for g in found)
              and len({g[1]["step"] for g in found}) == 1 and all(int(g[0].epoch) == epochs_done for g in found))
    if not usable:
        for mid in interrupted:
            if mid.directory.exists():
                log.info("%s is not of epoch %d, or not of every run: removed", mid.directory, epochs_done + 1)
                mid.clear()
        return None
    progress = dict(found[0][1], means=[g[1]["means"] for g in found])
    return [g[0] for g in found], progress


def restore_model(workdir: str | os.PathLike, epoch: int | None = None) -> tuple[config_lib.Config, Model, TrainState]:
    """(config, model, state) of the run in ``workdir`` at ``epoch`` (the latest by default), without its data."""
    from mvae_jax.data import DATASETS

    config = config_lib.load_config(workdir)
    modalities = DATASETS[config.dataset].modalities(config)
    model = get_model(config, modalities)
    tx, adversary = make_optimizers(config, modalities)
    target = create_train_state(model, tx, config.seed, adversary)
    checkpoints = Checkpoints(workdir, config.keep_checkpoints)
    try:
        state = checkpoints.restore(target, epoch)
    finally:
        checkpoints.close()
    return config, model, state


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Drop metric lines of epochs after ``epoch`` (written before a crash, their checkpoint lost)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if (_epoch_of(line) or math.inf) <= epoch]
    if len(kept) != len(lines):
        config_lib.atomic_write_text(path, "".join(line + "\n" for line in kept))


def _epoch_of(line: str) -> int | None:
    """The epoch of a metrics line; None for a line cut short by a killed process."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return None
