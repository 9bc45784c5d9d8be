"""Train state, the jitted epoch, sharding, checkpoints and resume.

One epoch is one compiled ``lax.scan`` over a permutation drawn inside jit:
the data set lives on the device and no Python runs per step. Batches are
sharded over all devices along a ``"data"`` mesh axis (data parallelism);
parameters and the data set are replicated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import json
import logging
import math
import os
from pathlib import Path
import time
from typing import Any, Protocol

from flax import struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax
import orbax.checkpoint as ocp

from mvae_jax import config as config_lib
from mvae_jax import losses
from mvae_jax.data import load_dataset
from mvae_jax.models import Model, get_model

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
_STEP_STREAM, _PERMUTATION_STREAM, _BINARIZE_STREAM = 0, 1, 2


class TrainState(struct.PyTreeNode):
    """Everything a resumed run needs: counters, parameters, optimizer state and the base key."""

    step: jax.Array  # int32 (), optimizer steps taken
    epoch: jax.Array  # int32 (), epochs completed
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 (2,), base key; per-step and per-epoch keys are folded from it


class Reporter(Protocol):
    """Progress hooks a command line implements (the library itself only logs)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, index: int, running_loss: float) -> None: ...

    def epoch_end(self, metrics: Mapping[str, float]) -> None: ...


def make_optimizer(config: config_lib.Config) -> optax.GradientTransformation:
    """Adam (Kingma & Ba 2015) with the run's learning rate."""
    return optax.adam(config.learning_rate)


def create_train_state(model: Model, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Fresh parameters and optimizer state for ``seed``."""
    rng = jax.random.PRNGKey(seed)
    init_rng, rng = jax.random.split(rng)
    params = model.init(init_rng)
    return TrainState(jnp.int32(0), jnp.int32(0), params, tx.init(params), rng)


def make_train_step(model: Model, tx: optax.GradientTransformation):
    """(state, batch) -> (state, {term: batch mean}): one gradient step on the mean per-example loss."""

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.fold_in(state.rng, _STEP_STREAM), state.step)

        def objective(params):
            terms = losses.mean_terms(model.loss(params, batch, rng, state.epoch))
            return terms["loss"], terms

        grads, terms = jax.grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), terms

    return train_step


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
):
    """A jitted (state, data) -> (state, {term: epoch mean}) that runs one epoch as a ``lax.scan``.

    The epoch visits ``num_examples // batch_size`` batches of a permutation
    drawn from the state's key and epoch (the last partial batch is dropped;
    the next epoch's permutation differs). ``on_step(index, running_loss)``, if
    given, is called from the device as each step ends (a progress bar).
    The modalities named in ``binarize`` hold probabilities: each step
    replaces them by fresh Bernoulli draws (dynamic binarization).
    ``state`` is donated: do not reuse the one passed in.
    """
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} training examples")
    train_step = make_train_step(model, tx)
    batch_sharding = NamedSharding(mesh, P("data")) if mesh is not None else None

    def epoch(state: TrainState, data):
        key = jax.random.fold_in(jax.random.fold_in(state.rng, _PERMUTATION_STREAM), state.epoch)
        order = jax.random.permutation(key, num_examples)[: steps * batch_size].reshape(steps, batch_size)

        def body(carry, indices):
            state, loss_sum = carry
            batch = {k: v[indices] for k, v in data.items()}
            if binarize:
                key = jax.random.fold_in(jax.random.fold_in(state.rng, _BINARIZE_STREAM), state.step)
                for i, name in enumerate(binarize):
                    probs = batch[name]
                    batch[name] = jax.random.bernoulli(jax.random.fold_in(key, i), probs).astype(probs.dtype)
            if batch_sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            state, terms = train_step(state, batch)
            loss_sum = loss_sum + terms["loss"]
            if on_step is not None:
                index = state.step - state.epoch * steps
                jax.debug.callback(on_step, index, loss_sum / index)
            return (state, loss_sum), terms

        (state, _), terms = jax.lax.scan(body, (state, jnp.float32(0.0)), order)
        return state.replace(epoch=state.epoch + 1), jax.tree_util.tree_map(jnp.mean, terms)

    return jax.jit(epoch, donate_argnums=0)


class Checkpoints:
    """orbax checkpoints of the TrainState in ``workdir/checkpoints``, one per epoch, the latest ``keep`` kept."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 3):
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, state: TrainState) -> int:
        """Start saving ``state`` as the checkpoint of its epoch (written in the background)."""
        epoch = int(state.epoch)
        self.manager.save(epoch, args=ocp.args.StandardSave(state))
        return epoch

    def restore(self, target: TrainState, epoch: int | None = None) -> TrainState:
        """The checkpoint of ``epoch`` (the latest by default), shaped and placed like ``target``."""
        epoch = self.latest() if epoch is None else epoch
        if epoch is None or epoch not in self.all_steps():
            raise FileNotFoundError(f"no checkpoint for epoch {epoch} in {self.directory}; have {self.all_steps()}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        return self.manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        """Wait for background saves (raising their errors) and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def replicate(tree, mesh: Mesh):
    """Place every array of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


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
    config.validate()
    workdir = check_workdir(config)
    mesh = make_mesh()
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {mesh.size} devices")

    dataset = load_dataset(config)
    num_examples = len(next(iter(dataset.train.values())))
    model = get_model(config, dataset.modalities)
    tx = make_optimizer(config)
    on_step = reporter.step if reporter is not None else None
    # Built before anything is written: a batch larger than the data set fails here.
    epoch_fn = make_epoch_fn(model, tx, num_examples, config.batch_size, mesh, on_step, dataset.binarize)
    steps = num_examples // config.batch_size
    state = replicate(create_train_state(model, tx, config.seed), mesh)
    data = replicate(dataset.train, mesh)

    checkpoints = Checkpoints(workdir, config.keep_checkpoints)
    try:
        if checkpoints.latest() is not None:
            state = checkpoints.restore(state)
            log.info("resumed %s from epoch %d", workdir, int(state.epoch))
        config_lib.save_config(config, workdir)
        metrics_path = workdir / METRICS_FILE
        _truncate_metrics(metrics_path, int(state.epoch))

        while int(state.epoch) < config.epochs:
            epoch = int(state.epoch) + 1
            if reporter is not None:
                reporter.epoch_start(epoch, config.epochs, steps)
            start = time.perf_counter()
            state, terms = epoch_fn(state, data)
            terms = {k: float(v) for k, v in jax.device_get(terms).items()}
            seconds = time.perf_counter() - start
            if not all(math.isfinite(v) for v in terms.values()):
                raise FloatingPointError(
                    f"non-finite loss terms in epoch {epoch}: {terms}. The last good checkpoint "
                    f"(epoch {checkpoints.latest()}) in {checkpoints.directory} is kept; "
                    "try a lower --learning_rate."
                )
            checkpoints.save(state)
            record = {"epoch": epoch, "step": int(state.step), **terms, "time_s": seconds,
                      "samples_per_s": steps * config.batch_size / seconds}
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if reporter is not None:
                reporter.epoch_end(record)
            log.info("epoch %d/%d loss %.4f (%.1f s, %.0f samples/s)", epoch, config.epochs, terms["loss"],
                     seconds, record["samples_per_s"])
    finally:
        checkpoints.close()
    return state


def restore_model(workdir: str | os.PathLike, epoch: int | None = None) -> tuple[config_lib.Config, Model, TrainState]:
    """(config, model, state) of the run in ``workdir`` at ``epoch`` (the latest by default), without its data."""
    from mvae_jax.data import DATASETS

    config = config_lib.load_config(workdir)
    model = get_model(config, DATASETS[config.dataset].MODALITIES)
    tx = make_optimizer(config)
    target = create_train_state(model, tx, config.seed)
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
    kept = [line for line in lines if json.loads(line)["epoch"] <= epoch]
    if len(kept) != len(lines):
        config_lib.atomic_write_text(path, "".join(line + "\n" for line in kept))
