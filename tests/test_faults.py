"""Fault injection: kills, stop signals, NaNs, a full disk and damaged files lose nothing and explain themselves."""

import dataclasses
import json
import os
from pathlib import Path
import random
import resource
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mvae_jax import errors, training
from mvae_jax.config import Config, load_config, save_config
from tests.conftest import ROOT, write_tiny_idx_dataset
import train

pytestmark = pytest.mark.slow  # subprocesses, real data, faults or several processes: `-m "not slow"` skips

TINY = dict(hidden_dims=(32,), latent_dim=4, batch_size=20)


@pytest.fixture(scope="module")
def longer_data_dir(tmp_path_factory) -> Path:
    """2,000 training pairs: 100 steps (10 chunks) per epoch at batch 20."""
    return write_tiny_idx_dataset(tmp_path_factory.mktemp("longer"), n_train=2000)


def _params(workdir):
    return jax.tree_util.tree_leaves(training.restore_model(workdir)[2].params)


def _assert_same_params(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def _epochs(workdir):
    return [json.loads(line)["epoch"] for line in (Path(workdir) / training.METRICS_FILE).read_text().splitlines()]


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--model=vae", "invalid choice: 'vae' (choose from"),
        ("--dataset=cifar", "invalid choice: 'cifar' (choose from"),
        ("--beta=0", "beta=0.0 is invalid; allowed: a finite number > 0"),
        ("--beta=inf", "beta=inf is invalid; allowed: a finite number > 0"),
        ("--alpha=nan", "alpha=nan is invalid; allowed: a finite number >= 0 (0: plain JMVAE)"),
        ("--learning_rate=0", "learning_rate=0.0 is invalid; allowed: a number > 0"),
        ("--batch_size=0", "batch_size=0 is invalid; allowed: an integer >= 1"),
        ("--latent_dim=-3", "latent_dim=-3 is invalid; allowed: an integer >= 1"),
        ("--epochs=0", "epochs=0 is invalid; allowed: an integer >= 1"),
        ("--hidden_dims=512,0", "hidden_dims=(512, 0) is invalid"),
        ("--nan_lr_factor=1", "nan_lr_factor=1.0 is invalid; allowed: a number strictly between 0 and 1"),
        ("--num_samples=5", "num_samples=5 applies to model mmvae only"),
        ("--alpha=0.1 --model=mvae", "alpha=0.1 applies to model jmvae only, not to model='mvae'"),
    ],
)
def test_each_bad_flag_is_one_line_and_exit_2(flag, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main([*flag.split(), f"--workdir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_the_data_and_a_missing_file_are_named(tiny_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main([f"--data_dir={tiny_data_dir}", f"--workdir={tmp_path / 'run'}", "--batch_size=200"])
    assert exit_.value.code == 2 and "batch_size=200 exceeds the 120 training examples" in capsys.readouterr().err
    assert not (tmp_path / "run" / training.CHECKPOINT_DIR).exists()


def test_stop_mid_epoch_checkpoints_and_resumes_to_the_same_params(longer_data_dir, tmp_path):
    base = dict(TINY, data_dir=str(longer_data_dir), epochs=2)
    straight = training.train_sweep([Config(**base, workdir=str(tmp_path / "straight"))])[0]
    asked = []
    stop = lambda: asked.append(1) or len(asked) >= 14  # epoch 1: 10 chunks + the epoch-end check; then 3 more
    workdir = tmp_path / "stopped"
    with pytest.raises(errors.Interrupted, match="interrupted in epoch 2 after step 30 of 100"):
        training.train_sweep([Config(**base, workdir=str(workdir))], stop=stop)
    assert training.saved_epochs(workdir) == [1] and (workdir / training.INTERRUPTED_DIR / "130").is_dir()
    resumed = training.train_sweep([Config(**base, workdir=str(workdir))])[0]
    _assert_same_params(jax.tree_util.tree_leaves(straight.params), jax.tree_util.tree_leaves(resumed.params))
    assert not (workdir / training.INTERRUPTED_DIR).exists()  # removed once its epoch is complete
    a, b = (
        [json.loads(line) for line in (d / training.METRICS_FILE).read_text().splitlines()]
        for d in (tmp_path / "straight", workdir)
    )
    assert [r["epoch"] for r in b] == [1, 2]
    np.testing.assert_allclose(
        b[1]["loss"], a[1]["loss"], rtol=1e-5
    )  # the epoch's mean counts the steps before the stop


def test_unreadable_mid_epoch_checkpoint_restarts_its_epoch(longer_data_dir, tmp_path, caplog):
    base = dict(TINY, data_dir=str(longer_data_dir), epochs=1)
    straight = training.train_sweep([Config(**base, workdir=str(tmp_path / "straight"))])[0]
    asked = []
    workdir = tmp_path / "stopped"
    with pytest.raises(errors.Interrupted):
        training.train_sweep([Config(**base, workdir=str(workdir))], stop=lambda: asked.append(1) or len(asked) >= 5)
    for f in (workdir / training.INTERRUPTED_DIR).rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:10])
    resumed = training.train_sweep([Config(**base, workdir=str(workdir))])[0]
    assert "is unreadable" in caplog.text and list((workdir / training.CORRUPT_DIR).glob("interrupted-*"))
    _assert_same_params(jax.tree_util.tree_leaves(straight.params), jax.tree_util.tree_leaves(resumed.params))


def _launch(args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _wait_for(proc, ready, timeout=300.0) -> bool:
    """Poll ``ready()`` every 0.5 ms: True once it holds, False if train.py finished (status 0) first."""
    began = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            assert proc.returncode == 0, f"train.py exited {proc.returncode}:\n{proc.stderr.read()[-3000:]}"
            return False
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.0005)
    return True


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_kills_at_random_points_and_during_a_save_then_resume_equals_uninterrupted(longer_data_dir, tmp_path):
    """SIGKILL during a checkpoint write, then at random moments, then SIGTERM; each time train.py is run again."""
    epochs = 10
    reference = tmp_path / "reference"
    training.train_sweep([Config(**TINY, data_dir=str(longer_data_dir), epochs=epochs, workdir=str(reference))])
    workdir = tmp_path / "run"
    metrics, checkpoints = workdir / training.METRICS_FILE, workdir / training.CHECKPOINT_DIR
    args = [
        f"--data_dir={longer_data_dir}",
        f"--workdir={workdir}",
        "--hidden_dims=32",
        "--latent_dim=4",
        "--batch_size=20",
        f"--epochs={epochs}",
    ]

    # 1. During the first save: orbax writes into <epoch>.orbax-checkpoint-tmp, renamed when complete.
    proc = _launch(args)
    assert _wait_for(proc, lambda: checkpoints.is_dir() and any("tmp" in n for n in os.listdir(checkpoints)))
    proc.kill()
    proc.wait()
    assert training.saved_epochs(workdir) == []  # the half-written checkpoint is not read as good

    # 2. At random moments once training runs (seeded: a failure reproduces), then 3. SIGTERM.
    rng, statuses = random.Random(7), []
    for kill in (True, True, False):
        before = _lines(metrics)
        proc = _launch(args)
        if not _wait_for(proc, lambda: _lines(metrics) > before):  # an epoch ended in this launch
            break
        time.sleep(rng.uniform(0.0, 0.3))
        if kill:
            proc.kill()
            proc.wait()
        else:
            proc.send_signal(signal.SIGTERM)  # a clean exit at a step boundary with a checkpoint, status 128 + 15
            err = proc.communicate(timeout=120)[1]
            if proc.returncode != 0:  # 0: training had finished
                assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
                assert "train.py: interrupted" in err and "run the same command to go on" in err
        statuses.append((proc.returncode, training.saved_epochs(workdir)))
    assert sum(status != 0 for status, _ in statuses) >= 2, statuses  # most signals hit a running train.py

    proc = _launch(args)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    assert training.saved_epochs(workdir)[-1] == epochs and _epochs(workdir) == list(range(1, epochs + 1))
    _assert_same_params(_params(reference), _params(workdir))


def _fail_large_writes(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_failed_checkpoint_write_is_an_error_and_earlier_ones_stay(tiny_data_dir, tmp_path):
    workdir = tmp_path / "run"
    training.train_sweep([Config(**TINY, data_dir=str(tiny_data_dir), epochs=1, workdir=str(workdir))])
    proc = subprocess.run(
        [sys.executable, "train.py", f"--workdir={workdir}", "--epochs=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_fail_large_writes(20_000),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "could not write the checkpoint of epoch 2" in proc.stderr
    assert "the checkpoints of epochs [1] are intact" in proc.stderr
    assert training.saved_epochs(workdir) == [1]
    assert training.restore_model(workdir)[2].epoch == 1


def test_too_little_disk_space_is_an_error_before_any_work(monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**5, 10**5))
    monkeypatch.setattr(training.loop, "load_dataset", lambda config: pytest.fail("data loaded before the check"))
    with pytest.raises(errors.CheckpointError, match=r"0.1 MiB free, but a checkpoint of this run takes about"):
        training.train_sweep([Config(workdir=str(tmp_path / "run"))])
    assert not (tmp_path / "run").exists()


def _with_nan(epochs_hit, calls):
    """Wrap make_epoch_fn so that the parameters become NaN in the given epochs (a blow-up), once each."""
    real = training.make_epoch_fn

    def make(*args, **kwargs):
        epoch_fn = real(*args, **kwargs)

        def run(state, data, stop=None, ready=None):
            epoch = int(state.epoch) + 1
            state, terms = epoch_fn(state, data, stop, ready)
            calls.append(epoch)
            if epoch in epochs_hit:
                epochs_hit.remove(epoch)
                state = state.replace(params=jax.tree_util.tree_map(lambda p: p * np.nan, state.params))
            return state, terms

        return run

    return make


def test_nan_stops_naming_the_epoch_and_keeps_the_last_good_checkpoint(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(training.loop, "make_epoch_fn", _with_nan({2}, []))
    workdir = tmp_path / "run"
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite parameters in epoch 2 .* last good checkpoint "
        r"\(epoch 1\) .* kept; resume with a lower --learning_rate",
    ):
        training.train_sweep([Config(**TINY, data_dir=str(tiny_data_dir), epochs=3, workdir=str(workdir))])
    assert training.saved_epochs(workdir) == [1] and _epochs(workdir) == [1]
    assert np.isfinite(np.asarray(_params(workdir)[0])).all()


def test_nan_in_the_data_stops_in_epoch_1(tiny_data_dir, tmp_path, monkeypatch):
    real = training.loop.load_dataset

    def poisoned(config):
        ds = real(config)
        ds.train["x"][3, 5, 5, 0] = np.nan
        return ds

    monkeypatch.setattr(training.loop, "load_dataset", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite loss terms .* in epoch 1 .* \(none yet: the initial"):
        training.train_sweep([Config(**TINY, data_dir=str(tiny_data_dir), epochs=2, workdir=str(tmp_path / "r"))])
    assert training.saved_epochs(tmp_path / "r") == []


def test_nan_rollbacks_go_back_to_the_last_checkpoint_and_lower_the_learning_rate(
    tiny_data_dir, tmp_path, monkeypatch, caplog
):
    calls = []
    monkeypatch.setattr(training.loop, "make_epoch_fn", _with_nan({2}, calls))
    workdir = tmp_path / "run"
    config = Config(**TINY, data_dir=str(tiny_data_dir), epochs=3, workdir=str(workdir), nan_rollbacks=1)
    state = training.train_sweep([config])[0]
    assert calls == [1, 2, 2, 3] and int(state.epoch) == 3
    assert "rolled back to epoch 1 and lowered the learning rate to 0.0005 (rollback 1 of 1" in caplog.text
    assert load_config(workdir).learning_rate == 0.0005 and _epochs(workdir) == [1, 2, 3]


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    path = tmp_path / training.METRICS_FILE
    path.write_text('{"epoch": 1, "loss": 3.0}\n{"epoch": 2, "loss": 2.0}\n{"epoch": 3, "lo')
    training.truncate_metrics(path, 2)
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_nan_rollback_lowers_the_discriminators_learning_rate_too(tiny_data_dir, tmp_path, monkeypatch):
    """A rollback trains as a run resumed from the last good checkpoint with both lowered learning rates."""
    adv = dict(TINY, adversarial=True, disc_widths=(4,), data_dir=str(tiny_data_dir), epochs=3)
    monkeypatch.setattr(training.loop, "make_epoch_fn", _with_nan({2}, []))
    rolled = training.train_sweep([Config(**adv, workdir=str(tmp_path / "a"), nan_rollbacks=1)])[0]
    monkeypatch.undo()
    lowered = load_config(tmp_path / "a")
    assert (lowered.learning_rate, lowered.disc_learning_rate) == (0.0005, 0.001)
    first = Config(**{**adv, "epochs": 1}, workdir=str(tmp_path / "b"))
    training.train_sweep([first])
    lowered_b = dataclasses.replace(lowered, workdir=str(tmp_path / "b"))
    save_config(lowered_b, tmp_path / "b")  # what the rollback wrote into config.json
    resumed = training.train_sweep([lowered_b])[0]
    _assert_same_params(jax.tree_util.tree_leaves(rolled.disc_params), jax.tree_util.tree_leaves(resumed.disc_params))
    _assert_same_params(jax.tree_util.tree_leaves(rolled.params), jax.tree_util.tree_leaves(resumed.params))
