"""Epochs: in-memory data as jitted ``lax.scan`` chunks of steps (``EpochFn``), streamed data batch by batch.

An in-memory epoch draws its permutation inside jit; the data set lives on the
device and Python runs only between chunks (progress, a stop request). Both
kinds go on from ``state.step`` when an epoch was stopped part-way.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from mvae_jax import adversarial
from mvae_jax.models import Model
from mvae_jax.training.sharding import make_mesh, shard_batch
from mvae_jax.training.state import PERMUTATION_STREAM, TrainState, first_member, make_step_fn

_REPORT_EVERY = 10  # steps between progress reports (host callbacks) of an epoch
CONV_CHUNK_STEPS = 2  # steps per unrolled chunk of a conv model (make_epoch_fn)


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
    unroll: bool | None = None,
) -> EpochFn:
    """(state, data) -> (state, {term: mean}): one epoch over in-memory ``data``, in jitted chunks of steps.

    The epoch visits ``num_examples // batch_size`` batches of a permutation
    drawn from the state's key and epoch (the last partial batch is dropped;
    the next epoch's permutation differs); each member of a sweep draws its own
    from its own key, so a run of a sweep sees the batches it would alone. See ``EpochFn``.

    ``unroll`` (default: when the model has a convolutional network) inlines the
    chunk's steps instead of looping over them, in chunks of ``CONV_CHUNK_STEPS``:
    XLA's CPU convolutions run many times slower inside a loop body
    (``classifiers.train_classifier``). Measured with MoPoE on PolyMNIST (5
    modalities, latent 32, batch 128, 2 CPU cores): 6.6 s/step in a loop,
    0.85 s/step unrolled by 2 (37 s to compile) or by 10 (0.87 s/step, 107 s
    to compile); a chunk of 1 step was as slow as the loop.
    """
    if unroll is None:
        unroll = any(m.network != "mlp" for m in model.modalities)
    if unroll and chunk_steps is None:
        chunk_steps = CONV_CHUNK_STEPS
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} training examples")
    return EpochFn(
        make_step_fn(model, tx, mesh, binarize, adversary, betas, member_batches=True),
        num_examples,
        batch_size,
        betas,
        on_step,
        chunk_steps or _REPORT_EVERY,
        unroll,
    )


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

    def __init__(
        self, step_fn, num_examples: int, batch_size: int, betas, on_step, chunk_steps: int, unroll: bool = False
    ):
        self.steps, self.on_step, self.chunk_steps = num_examples // batch_size, on_step, chunk_steps
        steps = self.steps

        def permutation(rng, epoch_done):
            key = jax.random.fold_in(jax.random.fold_in(rng, PERMUTATION_STREAM), epoch_done)
            return jax.random.permutation(key, num_examples)[: steps * batch_size].reshape(steps, batch_size)

        def order(state):
            """(steps, batch) indices; (steps, members, batch) for a sweep."""
            if betas is None:
                return permutation(state.rng, state.epoch)
            return jnp.swapaxes(jax.vmap(permutation)(state.rng, state.epoch), 0, 1)

        def chunk(state, data, order, length):
            start = first_member(state.step, betas) - first_member(state.epoch, betas) * steps

            def body(state, indices):  # indices: (batch,), or (members, batch) for a sweep
                return step_fn(state, {k: v[indices] for k, v in data.items()})

            indices = jax.lax.dynamic_slice_in_dim(order, start, length)
            state, terms = jax.lax.scan(body, state, indices, unroll=True if unroll else 1)
            return state, jax.tree_util.tree_map(lambda t: jnp.sum(t, axis=0), terms)

        self.order = jax.jit(order)
        self.chunk = jax.jit(chunk, donate_argnums=0, static_argnames="length")

    def lengths(self, state: TrainState) -> list[int]:
        """The chunk lengths the rest of the state's epoch runs (each is one program)."""
        left = self.steps - steps_done(state, self.steps)
        return sorted({n for n in (min(self.chunk_steps, left), left % self.chunk_steps) if n > 0})

    def compile(self, state: TrainState, data) -> dict[int, jax.stages.Compiled]:
        """Compile, without running, the programs the rest of the state's epoch runs: {chunk length: program}.

        A later call of the epoch reuses them (JAX caches what ``lower().compile()``
        built). Their ``memory_analysis()`` and ``cost_analysis()`` measure a chunk.
        """
        order = self.order.lower(state).compile()
        order_spec = jax.ShapeDtypeStruct(order.out_info.shape, order.out_info.dtype, sharding=order.output_shardings)
        return {n: self.chunk.lower(state, data, order_spec, length=n).compile() for n in self.lengths(state)}

    def __call__(
        self,
        state: TrainState,
        data,
        stop: Callable[[], bool] | None = None,
        ready: Callable[[], None] | None = None,
    ):
        """``ready()``, if given, runs once the programs are compiled, before any step (a barrier of processes)."""
        if ready is not None:
            self.compile(state, data)
            ready()
        order = self.order(state)
        start = done = steps_done(state, self.steps)
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


def stream_epoch(
    step_fn,
    state: TrainState,
    stream,
    batch_size: int,
    seed: int,
    mesh: Mesh | None = None,
    on_step: Callable[[Any, Any], None] | None = None,
    prefetch: int = 2,
    stop: Callable[[], bool] | None = None,
    ready: Callable[[], None] | None = None,
):
    """One epoch over a streamed data set: (state, {term: mean over the steps run}).

    Batches come from ``stream.batches`` in an order drawn from ``seed``; each
    is put on the devices (sharded along ``"data"``) ``prefetch`` batches ahead
    of the jitted ``step_fn``, so reading, transfer and compute overlap. In a
    multi-process run each process reads only its own rows of every batch.
    Steps of the epoch already taken (``state.step``; an epoch interrupted and
    checkpointed) are skipped; ``stop()`` True ends the epoch after the step
    just queued, and ``state.epoch`` is incremented only if the epoch is complete.
    ``ready()``, if given, runs once the step is compiled, before it first runs.
    """
    sharding = NamedSharding(mesh if mesh is not None else make_mesh(jax.local_devices()[:1]), P("data"))
    steps = len(stream) // batch_size
    if steps < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(stream)} training examples")
    start = steps_done(state, steps)
    queue, totals, count, stopped = collections.deque(), None, 0, False

    def run(batch):
        nonlocal state, totals, count
        if count == 0 and ready is not None:
            step_fn.lower(state, batch).compile()  # the call below reuses it
            ready()
        state, terms = step_fn(state, batch)
        totals = terms if totals is None else jax.tree_util.tree_map(jnp.add, totals, terms)
        count += 1
        if on_step is not None and (start + count) % _REPORT_EVERY == 0:
            on_step(start + count, totals["loss"] / count)

    batches = stream.batches(
        batch_size, seed, skip=start, process_index=jax.process_index(), process_count=jax.process_count()
    )
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


def scalar(counter) -> int:
    """A counter of a run, or of the first run of a sweep."""
    return int(np.asarray(jax.device_get(counter)).reshape(-1)[0])


def steps_done(state: TrainState, steps: int) -> int:
    """Steps of the state's current epoch already taken (> 0 after a stop mid-epoch)."""
    return scalar(state.step) - scalar(state.epoch) * steps


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of ``epoch`` for a streamed data set (a different order every epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
