"""Devices: the one-axis ``"data"`` mesh, replicated arrays, sharded batches, and the stacked states of a sweep."""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from mvae_jax.training.state import TrainState


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (all by default) with the batch axis ``"data"``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


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


def stack(states: Sequence[TrainState]) -> TrainState:
    """The states of a sweep stacked along a new leading axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)


def unstack(state: TrainState, index: int) -> TrainState:
    """Member ``index`` of a stacked sweep state."""
    return jax.tree_util.tree_map(lambda x: x[index], state)


@dataclasses.dataclass(frozen=True)
class SweepAxes:
    """The axes of a sweep: several runs trained as one program, each its own beta and seed.

    The members' states are stacked along a leading axis (``stack``) and every step is vmapped over it; the
    per-member values of the loss (``betas``) are the vmapped argument, the seeds reach each member through
    its own initialisation, batch order and noise. One run is not a sweep: ``of`` gives None, and the state
    has no member axis.
    """

    betas: tuple[float, ...]
    seeds: tuple[int, ...]

    @classmethod
    def of(cls, configs) -> SweepAxes | None:
        """The axes of ``configs`` trained together; None for one run."""
        if len(configs) == 1:
            return None
        return cls(tuple(float(c.beta) for c in configs), tuple(int(c.seed) for c in configs))


def stack_members(axes: SweepAxes | None, trees: Sequence):
    """The trees of a sweep's members stacked along the member axis; one run's tree as it is."""
    return trees[0] if axes is None else stack(trees)


def member(axes: SweepAxes | None, tree, index: int):
    """Member ``index`` of a sweep's stacked tree (a state, or the arrays of a metric); one run's as it is."""
    return tree if axes is None else unstack(tree, index)
