"""Devices: the one-axis ``"data"`` mesh, replicated arrays, sharded batches, and the stacked states of a sweep."""

from __future__ import annotations

from collections.abc import Sequence

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
