"""Several processes (hosts) on JAX's own distributed runtime: when to call ``jax.distributed.initialize``.

One process runs per host (TPU pod slice, GPU machines); each sees its local
devices, and ``jax.devices()`` lists the devices of all of them. Training
then shards every batch over that global mesh (``training.make_mesh``); see
docs/devices.md for launch commands.
"""

from __future__ import annotations

from collections.abc import Mapping
import os

MODES = ("auto", "on", "off")

# Environment variables of our own launch contract (JAX itself reads only the first).
COORDINATOR, NUM_PROCESSES, PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def detect(environ: Mapping[str, str] | None = None) -> dict | None:
    """Keyword arguments for ``jax.distributed.initialize`` if ``environ`` describes a multi-process job, else None.

    Recognised: ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` (any launcher); Slurm steps (``srun``) of more than one task; Open MPI
    with more than one rank; TPU pods on GKE (``TPU_WORKER_HOSTNAMES`` naming
    several hosts). For the last three JAX finds the arguments itself. A Cloud
    TPU VM pod slice is found only by querying its metadata server: pass
    ``--distributed=on`` there. Raises ValueError for an incomplete contract.
    """
    env = os.environ if environ is None else environ
    if env.get(COORDINATOR):
        kwargs = {"coordinator_address": env[COORDINATOR]}
        for name, key in ((NUM_PROCESSES, "num_processes"), (PROCESS_ID, "process_id")):
            value = env.get(name, "")
            if not value.isdigit():
                raise ValueError(
                    f"{COORDINATOR}={env[COORDINATOR]!r} is set, so {name} must be set to an integer "
                    f">= 0 too (got {value!r})"
                )
            kwargs[key] = int(value)
        if kwargs["num_processes"] < 1 or kwargs["process_id"] >= kwargs["num_processes"]:
            raise ValueError(
                f"{PROCESS_ID}={kwargs['process_id']} must be below "
                f"{NUM_PROCESSES}={kwargs['num_processes']} (and that at least 1)"
            )
        return kwargs
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")  # what srun sets
    if all(k in env for k in slurm) and _int(env.get("SLURM_NTASKS")) > 1:
        return {}
    if "OMPI_MCA_orte_hnp_uri" in env and _int(env.get("OMPI_COMM_WORLD_SIZE")) > 1:
        return {}
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]) > 1:
        return {}
    return None


def initialize(mode: str = "auto", environ: Mapping[str, str] | None = None) -> bool:
    """Start JAX's distributed runtime as ``mode`` says; True if it was started.

    ``auto``: when ``detect`` finds a multi-process job. ``on``: always (JAX
    detects the cluster; an error if it cannot). ``off``: never. Must run
    before any other JAX call of the process.
    """
    if mode not in MODES:
        raise ValueError(f"distributed={mode!r} is invalid; allowed: {', '.join(MODES)}")
    if mode == "off":
        return False
    kwargs = detect(environ)
    if kwargs is None and mode == "auto":
        return False
    import jax

    jax.distributed.initialize(**(kwargs or {}))
    return True


def is_primary() -> bool:
    """True on the process that writes shared files (config, metrics, figures): process 0."""
    import jax

    return jax.process_index() == 0


BARRIER_TIMEOUT_S = 1800  # how long a process waits at a barrier for the slowest one (compiling, reading data)


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Wait until every process reaches ``name`` (each name once per run); nothing with one process.

    It waits on the coordination service of ``jax.distributed``, not with a
    collective: XLA's CPU (Gloo) collectives give up after 30 s if one process
    arrives late, as a process starved of CPU or still compiling does, while this
    waits up to ``timeout_s``. ``multihost_utils.sync_global_devices`` and orbax's
    default barrier are collectives, so they have the same 30 s limit.
    """
    import jax
    from jax._src import distributed as jax_distributed  # the client has no public handle

    client = jax_distributed.global_state.client
    if jax.process_count() == 1 or client is None:
        return
    client.wait_at_barrier(name, timeout_in_ms=int(timeout_s * 1000))


def _int(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() else 0
