"""Train state, the jitted epoch, sharding, checkpoints and resume.

An epoch is a few compiled ``lax.scan`` chunks of steps over a permutation
drawn inside jit: the data set lives on the device and Python runs only
between chunks (progress, a stop request). Batches are sharded over all
devices along a ``"data"`` mesh axis (data parallelism); parameters and the
data set are replicated. Checkpoints are written at each epoch's end, and
mid-epoch when a stop is requested; resuming from either gives the
parameters of an uninterrupted run.

Modules, in the order a batch meets them: ``state`` (the train state and the
step), ``epochs`` (the jitted epoch, the streamed epoch), ``sharding`` (mesh,
replicated and sharded arrays), ``checkpoints`` (checkpoints, quarantine,
resume, ``restore_model``, the workdir checks) and ``loop`` (``train_sweep``).
"""

from mvae_jax.training.checkpoints import (
    BEST_DIR,
    CHECKPOINT_DIR,
    CORRUPT_DIR,
    INTERRUPTED_DIR,
    METRICS_FILE,
    SUPERSEDED_DIR,
    Checkpoints,
    MidEpochCheckpoint,
    restore_model,
    saved_epochs,
)
from mvae_jax.training.epochs import EpochFn, epoch_seed, make_epoch_fn, stream_epoch
from mvae_jax.training.lock import LOCK_FILE, WorkdirBusy, WorkdirLock
from mvae_jax.training.loop import check_sweep, train_and_evaluate, train_sweep
from mvae_jax.training.sharding import make_mesh, replicate, shard_batch, stack, unstack
from mvae_jax.training.state import (
    Reporter,
    TrainState,
    create_train_state,
    make_optimizer,
    make_optimizers,
    make_step_fn,
    make_train_step,
)
from mvae_jax.training.workdir import check_disk_space, check_workdir, truncate_metrics

__all__ = [
    "BEST_DIR",
    "CHECKPOINT_DIR",
    "LOCK_FILE",
    "WorkdirBusy",
    "WorkdirLock",
    "CORRUPT_DIR",
    "INTERRUPTED_DIR",
    "METRICS_FILE",
    "SUPERSEDED_DIR",
    "Checkpoints",
    "EpochFn",
    "MidEpochCheckpoint",
    "Reporter",
    "TrainState",
    "check_disk_space",
    "check_sweep",
    "check_workdir",
    "create_train_state",
    "epoch_seed",
    "make_epoch_fn",
    "make_mesh",
    "make_optimizer",
    "make_optimizers",
    "make_step_fn",
    "make_train_step",
    "replicate",
    "restore_model",
    "saved_epochs",
    "shard_batch",
    "stack",
    "stream_epoch",
    "train_and_evaluate",
    "train_sweep",
    "truncate_metrics",
    "unstack",
]
