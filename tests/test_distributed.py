"""Every device and several processes: 8 forced CPU devices and 2 processes train like 1 device.

Also bf16 and launch detection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import socket
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import distributed, training
from mvae_jax.config import Config
from mvae_jax.data import trimodal
from mvae_jax.models import get_model
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # subprocesses, real data, faults or several processes: `-m "not slow"` skips


def _env(devices: int, **extra) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **extra,
    }


def _train_flags(data_dir: Path, workdir: Path) -> list[str]:
    return [
        sys.executable,
        "train.py",
        f"--data_dir={data_dir}",
        f"--workdir={workdir}",
        "--hidden_dims=32",
        "--latent_dim=4",
        "--batch_size=40",
        "--epochs=2",
    ]


def _losses(workdir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _params(workdir: Path) -> np.ndarray:
    """The final params of the run in ``workdir``, restored here (on this process's one device)."""
    state = training.restore_model(workdir)[2]
    return np.concatenate([np.ravel(p) for p in jax.tree_util.tree_leaves(state.params)])


def _run(cmd, env):
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def one_device_run(tiny_data_dir, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("one") / "run"
    _run(_train_flags(tiny_data_dir, workdir), _env(1))
    return workdir


def test_a_seed_sweep_on_four_devices_trains_each_seed_like_one_device(one_device_run, tiny_data_dir, tmp_path):
    """--seed=0,1 on 4 forced devices: each member's batch (its own order) is sharded over the devices, and seed 0
    gives the one-device run's losses and params (that run has seed 0)."""
    sweep = tmp_path / "sweep"
    _run([*_train_flags(tiny_data_dir, sweep), "--seed=0,1"], _env(4))
    np.testing.assert_allclose(_losses(sweep / "seed0"), _losses(one_device_run), rtol=1e-5)
    np.testing.assert_allclose(_params(sweep / "seed0"), _params(one_device_run), rtol=1e-4, atol=1e-6)
    assert not np.allclose(_losses(sweep / "seed1"), _losses(one_device_run))


def test_eight_devices_give_the_loss_curve_and_params_of_one(one_device_run, tiny_data_dir, tmp_path):
    """train.py shards each batch over all 8 (forced CPU) devices with no flag: same losses and params as 1 device."""
    workdir = tmp_path / "eight"
    _run(_train_flags(tiny_data_dir, workdir), _env(8))
    np.testing.assert_allclose(_losses(workdir), _losses(one_device_run), rtol=1e-5)
    np.testing.assert_allclose(_params(workdir), _params(one_device_run), rtol=1e-4, atol=1e-5)


def test_batch_size_not_divisible_by_the_devices_is_an_error_before_training(tiny_data_dir, tmp_path):
    cmd = _train_flags(tiny_data_dir, tmp_path / "run")
    cmd[cmd.index("--batch_size=40")] = "--batch_size=42"
    done = subprocess.run(cmd, env=_env(8), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "batch_size=42 must be a multiple of the 8 devices" in done.stderr
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# train.py in a process whose data takes 35 s to load: a slow host, or one starved of CPU by the others.
_LATE = (
    "import runpy, sys, time; import mvae_jax.training.loop as loop; load = loop.load_dataset; "
    "loop.load_dataset = lambda config: (time.sleep(35), load(config))[1]; "
    "sys.argv = sys.argv[1:]; runpy.run_path('train.py', run_name='__main__')"
)


def test_two_processes_train_like_one(one_device_run, tiny_data_dir, tmp_path):
    """Two processes of 2 CPU devices each (JAX's distributed runtime on localhost) train like 1 device.

    Process 1 reaches the first step 35 s after process 0, beyond the 30 s after
    which XLA's CPU collectives give up: the processes must wait for each other.
    """
    workdir = tmp_path / "two"
    address = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            _train_flags(tiny_data_dir, workdir)
            if i == 0
            else [sys.executable, "-c", _LATE, *_train_flags(tiny_data_dir, workdir)[1:]],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(2, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "epoch 2/2" in outputs[0][1] and "epoch 2/2" not in outputs[1][1]  # process 0 reports
    np.testing.assert_allclose(_losses(workdir), _losses(one_device_run), rtol=1e-5)
    assert training.Checkpoints(workdir).all_steps() == [1, 2]
    np.testing.assert_allclose(_params(workdir), _params(one_device_run), rtol=1e-4, atol=1e-5)


def test_stream_shards_of_the_processes_stack_into_the_single_process_batches(tiny_celeba_dir):
    from mvae_jax.data import celeba

    stream = celeba.folder_streams(tiny_celeba_dir, ("Male", "Smiling"))["train"]
    whole = list(stream.batches(8, seed=3))
    shards = [list(stream.batches(8, seed=3, process_index=i, process_count=2)) for i in range(2)]
    assert len(whole) == len(shards[0]) == len(shards[1]) == len(stream) // 8
    for b, (a, c) in zip(whole, zip(*shards)):
        for k in b:
            assert a[k].shape[0] == 4
            np.testing.assert_array_equal(np.concatenate([a[k], c[k]]), b[k])
    with pytest.raises(ValueError, match="batch_size=9 must be a multiple of the 2 processes"):
        stream.batches(9, seed=3, process_index=0, process_count=2)


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, None),
        (
            {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"},
            {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3},
        ),
        (
            {
                "SLURM_JOB_ID": "7",
                "SLURM_STEP_NODELIST": "n[1-2]",
                "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0",
                "SLURM_NTASKS": "2",
            },
            {},
        ),
        (
            {
                "SLURM_JOB_ID": "7",
                "SLURM_STEP_NODELIST": "n1",
                "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0",
                "SLURM_NTASKS": "1",
            },
            None,
        ),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, None),  # salloc without srun: one process
        ({"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "2"}, {}),
        ({"TPU_WORKER_HOSTNAMES": "host-0,host-1"}, {}),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),
    ],
)
def test_multi_process_jobs_are_detected_from_the_environment(environ, expected):
    assert distributed.detect(environ) == expected


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_NUM_PROCESSES must be set to an integer"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "x"}, "JAX_PROCESS_ID must be"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "must be below"),
    ],
)
def test_an_incomplete_launch_contract_is_an_error(environ, message):
    with pytest.raises(ValueError, match=message):
        distributed.detect(environ)
    with pytest.raises(ValueError, match="distributed='maybe' is invalid; allowed: auto, on, off"):
        distributed.initialize("maybe", {})
    assert distributed.initialize("off", environ) is False and distributed.initialize("auto", {}) is False


def _dot_dtypes(fn, *args) -> set[tuple[str, str]]:
    """(lhs, rhs) dtypes of every dot_general in the jaxpr of ``fn``, sub-jaxprs included."""
    found = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.add(tuple(str(v.aval.dtype) for v in eqn.invars))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_bf16_runs_matmuls_in_bfloat16_and_keeps_params_optimizer_and_losses_float32():
    batch = {
        "x": np.random.default_rng(0).random((16, 28, 28, 1), np.float32),
        "y": np.random.default_rng(1).random((16, 28, 28, 1), np.float32),
        "w": np.eye(10, dtype=np.float32)[np.arange(16) % 10],
    }
    terms = {}
    for precision in ("fp32", "bf16"):
        config = Config(precision=precision, hidden_dims=(64,), latent_dim=8, batch_size=16).validate()
        model = get_model(config, trimodal.MODALITIES)
        tx = training.make_optimizer(config)
        state = training.create_train_state(model, tx, 0)
        step = training.make_train_step(model, tx)
        dots = _dot_dtypes(lambda s, b: step(s, b), state, batch)
        assert dots == {("bfloat16", "bfloat16") if precision == "bf16" else ("float32", "float32")}
        new, terms[precision] = jax.jit(step)(state, batch)
        for tree in (new.params, new.opt_state):
            assert {str(x.dtype) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)} == {
                "float32"
            }
        assert all(v.dtype == jnp.float32 for v in terms[precision].values())
    # Same initial parameters, so the first loss differs only by bfloat16 rounding.
    np.testing.assert_allclose(terms["bf16"]["loss"], terms["fp32"]["loss"], rtol=2e-2)


class _CompileCounter:
    """A training.Reporter that counts XLA compilations from the start of epoch 2 on."""

    def __init__(self):
        self.counting, self.compiles, self.before = False, 0, 0
        jax.monitoring.register_event_duration_secs_listener(self._event)

    def _event(self, name, seconds, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            self.compiles += self.counting
            self.before += not self.counting

    def epoch_start(self, epoch, epochs, steps):
        self.counting = self.counting or epoch >= 2

    def step(self, index, running_loss):
        pass

    def epoch_end(self, metrics):
        pass


@pytest.mark.parametrize("dataset", ["trimodal", "celeba"])
def test_nothing_is_compiled_after_the_first_epoch(dataset, tiny_config, tiny_celeba_dir):
    """Epochs 2 and 3 (steps, metrics, checkpoint saves) reuse what epoch 1 compiled: in memory and streamed."""
    options = {"epochs": 3}
    if dataset == "celeba":
        options.update(
            dataset="celeba",
            data_dir=str(tiny_celeba_dir),
            attributes=("Male",),
            conv_widths=(8, 8, 8, 8),
            batch_size=8,
        )
    counter = _CompileCounter()
    training.train_and_evaluate(Config(**{**tiny_config.to_dict(), **options}), counter)
    assert counter.counting and counter.before > 0 and counter.compiles == 0
