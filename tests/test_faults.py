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


# Issue 26: the probe's eight faults, one or more tests each (docs/troubleshooting.md lists them).


def _tiny_run(data_dir, workdir, epochs=1, **extra):
    config = Config(**{**TINY, **extra}, data_dir=str(data_dir), epochs=epochs, workdir=str(workdir))
    training.train_sweep([config])
    return config


def _snapshot(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under ``folder``: to assert that nothing was moved or rewritten."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 40 MB tmpfs (a disk that can really fill up), or skip where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)]).returncode:
        pytest.skip("needs root to mount a small tmpfs (the in-process tests inject the same OSError instead)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def _fill(disk: Path) -> None:
    """Write zeros into ``disk`` until it is full."""
    subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=1M"], capture_output=True)


def test_a_failing_event_writer_warns_once_and_training_goes_on(tiny_data_dir, tmp_path, monkeypatch, caplog):
    """Fault 1, injected: the TensorBoard writer raises ENOSPC from epoch 2 on. Training finishes every epoch
    with every metrics line and checkpoint, and says once that TensorBoard is off (no writer thread to hang on:
    the old tensorboardX queue blocked forever here). Run in a thread with a deadline, so a hang fails."""
    import threading

    from tensorboardX.event_file_writer import EventsWriter

    real, writes = EventsWriter.write_event, []

    def write_event(self, event):
        writes.append(event.step)
        if event.step >= 2:
            raise OSError(28, "No space left on device")
        return real(self, event)

    monkeypatch.setattr(EventsWriter, "write_event", write_event)
    workdir, errors_seen = tmp_path / "run", []

    def train():
        try:
            _tiny_run(tiny_data_dir, workdir, epochs=4, tensorboard_images=1)
        except BaseException as e:  # reported below
            errors_seen.append(e)

    worker = threading.Thread(target=train, daemon=True)
    worker.start()
    worker.join(timeout=240)
    assert not worker.is_alive(), "training hung on the failed event writer"
    assert errors_seen == []
    assert _epochs(workdir) == [1, 2, 3, 4] and training.saved_epochs(workdir)[-1] == 4
    warnings = [r.getMessage() for r in caplog.records if "TensorBoard tracking is off" in r.getMessage()]
    assert len(warnings) == 1 and "OSError: [Errno 28] No space left on device" in warnings[0], warnings
    assert max(writes) == 2  # nothing more was tried after the failure


def test_a_full_disk_while_events_are_written_ends_in_one_line_and_resumes(longer_data_dir, small_tmpfs):
    """Faults 1 and 4 on a real full disk: the issue's reproduction (a 40 MB tmpfs, --tensorboard_images=1,
    the disk filled once epoch 1 is logged). train.py neither hangs nor prints orbax's ERROR lines: it ends with
    the documented one line and status 2, and once space is freed the same command trains to the end."""
    workdir = small_tmpfs / "run"
    args = [
        f"--data_dir={longer_data_dir}",
        f"--workdir={workdir}",
        "--hidden_dims=32",
        "--latent_dim=4",
        "--batch_size=20",
        "--epochs=30",
        "--tensorboard_images=1",
    ]
    proc = _launch(args)
    assert _wait_for(
        proc, lambda: _lines(workdir / training.METRICS_FILE) >= 1 and (workdir / "checkpoints/1").is_dir()
    )
    _fill(small_tmpfs)
    try:
        err = proc.communicate(timeout=180)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("train.py hung on the full disk")
    lines = [line for line in err.splitlines() if " INFO " not in line and " WARNING " not in line]
    assert proc.returncode == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("train.py: error: could not write the "), err[-3000:]
    assert "are intact. Free some space" in lines[0] and "Traceback" not in err
    saved = training.saved_epochs(workdir)
    assert saved and _epochs(workdir)[: saved[-1]] == list(range(1, saved[-1] + 1))
    (small_tmpfs / "filler").unlink()
    proc = _launch([*args[:-2], "--epochs=6"])
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    assert _epochs(workdir) == list(range(1, 7))


def _failing_checkpoints(tmp_path, wait_raises: bool):
    """Checkpoints whose orbax manager failed a background save of epoch 3 (epochs 1 and 2 intact): orbax
    raises the stored error from ``wait_until_finished`` or, depending on timing, only from ``close``."""
    from mvae_jax.training.checkpoints import Checkpoints

    stored = ValueError('RESOURCE_EXHAUSTED: Error writing local file "_sharding"')

    class FailedManager:
        def wait_until_finished(self):
            if wait_raises:
                raise stored

        def close(self):
            raise stored

        def reload(self):
            pass

        def all_steps(self):
            return [1, 2]

    checkpoints = Checkpoints.__new__(Checkpoints)
    checkpoints.directory, checkpoints.manager = tmp_path, FailedManager()
    checkpoints._pending = checkpoints._last = 3
    checkpoints._reported = False
    return checkpoints


@pytest.mark.parametrize("wait_raises", [True, False], ids=["wait-raises", "only-close-raises"])
def test_a_failed_background_save_reported_at_close_is_the_one_line(tmp_path, wait_raises):
    """Fault 4 at its root: when the last save fails in the background, orbax's own close() raises the stored
    error again; Checkpoints.close() must still raise the CheckpointError that names the epoch and the intact
    checkpoints (it raised orbax's bare RESOURCE_EXHAUSTED before), whichever of orbax's calls raises it."""
    with pytest.raises(errors.CheckpointError, match=r"checkpoint of epoch 3 .* epochs \[1, 2\] are intact"):
        _failing_checkpoints(tmp_path, wait_raises).close()


def test_closing_after_a_reported_failure_does_not_replace_it(tmp_path):
    """The CI failure of stop 32: the save of epoch 3 raised the CheckpointError, and the loop's cleanup then
    closed the manager, whose close() raised orbax's bare error over the one line. Closing after a reported
    failure only logs; and the loop's close after an error (raising=False) never raises over it."""
    from mvae_jax.training import loop

    checkpoints = _failing_checkpoints(tmp_path, wait_raises=False)
    reported = checkpoints._failed(3, OSError(28, "No space left on device"))  # what save() raised
    assert "checkpoint of epoch 3" in str(reported)
    checkpoints.close()  # the stored error again: logged, not raised
    sweep = loop._Sweep.__new__(loop._Sweep)
    sweep.checkpoints, sweep.best = [_failing_checkpoints(tmp_path, wait_raises=True)], []
    sweep.close(raising=False)
    with pytest.raises(errors.CheckpointError, match="checkpoint of epoch 3"):
        sweep.close()


def test_settings_that_do_not_match_the_checkpoints_are_refused_and_nothing_moves(tiny_data_dir, tmp_path, capsys):
    """Fault 2: config.json edited (hidden_dims) or deleted. train.py and eval.py refuse in one line naming the
    arrays that differ; no checkpoint is moved to corrupt_checkpoints/ and no file of the run changes (before,
    every good checkpoint was quarantined and the same command then trained afresh over the history)."""
    import eval as eval_cli

    workdir = tmp_path / "run"
    _tiny_run(tiny_data_dir, workdir, epochs=2)
    saved = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**saved, "hidden_dims": [64]}))
    before = _snapshot(workdir)
    for main, argv in ((train.main, ["--epochs=3"]), (eval_cli.main, ["--sections=objective"])):
        with pytest.raises(SystemExit) as exit_:
            main([f"--workdir={workdir}", *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err, err
        assert "the checkpoint of epoch 2 in" in err and "does not match the run's settings" in err
        assert "params.decoders.w.mlp.dense_0.bias stored (32,), the settings give (64,)" in err
        assert "nothing was moved" in err
        assert _snapshot(workdir) == before and not (workdir / training.CORRUPT_DIR).exists()
    (workdir / "config.json").unlink()
    before = _snapshot(workdir)
    with pytest.raises(SystemExit) as exit_:  # the default widths (512, 512) are not what it was trained with
        train.main([f"--workdir={workdir}", f"--data_dir={tiny_data_dir}", "--epochs=3", "--batch_size=20"])
    assert exit_.value.code == 2 and "does not match the run's settings" in capsys.readouterr().err
    assert _snapshot(workdir) == before and not (workdir / "config.json").exists()
    flags = ["--hidden_dims=32", "--latent_dim=4", "--batch_size=20"]  # the run's own settings: it resumes
    train.main([f"--workdir={workdir}", f"--data_dir={tiny_data_dir}", "--epochs=3", *flags])
    assert _epochs(workdir) == [1, 2, 3] and not (workdir / training.CORRUPT_DIR).exists()


def test_two_evaluations_of_one_checkpoint_keep_each_others_results(tiny_data_dir, tmp_path, monkeypatch):
    """Fault 3: a second eval.py saves its section while the first is still running. Each save merges into
    metrics.json as it is on disk then, so both sections survive (before, the first overwrote the second's)."""
    import eval as eval_cli
    from mvae_jax.evaluation import sections as registry

    workdir = tmp_path / "run"
    _tiny_run(tiny_data_dir, workdir)
    real = registry.SECTIONS["objective"]

    def objective_with_a_second_evaluation_meanwhile(ctx):
        eval_cli.main([f"--workdir={workdir}", "--sections=log_likelihood", "--ll_points=10", "--iw_samples=4"])
        return real(ctx)

    monkeypatch.setitem(registry.SECTIONS, "objective", objective_with_a_second_evaluation_meanwhile)
    eval_cli.main([f"--workdir={workdir}", "--sections=objective"])
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert {"objective", "log_likelihood"} <= set(metrics), sorted(metrics)
    assert set(metrics["section_seconds"]) == {"objective", "log_likelihood"}
    assert metrics["eval_flags"]["sections"] == ["log_likelihood", "objective"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"hidden_dims": 64}, "config.json: hidden_dims=64 is invalid; allowed: a list of integers, e.g. [512, 512]"),
        ({"hidden_dims": "64,64"}, 'config.json: hidden_dims="64,64" is invalid; allowed: a list of integers'),
        ({"beta": "2"}, 'config.json: beta="2" is invalid; allowed: a number'),
        ({"adversarial": 1}, "config.json: adversarial=1 is invalid; allowed: true or false"),
        ({"latent_dim": 0}, "config.json: latent_dim=0 is invalid; allowed: an integer >= 1"),
        ({"widths": [1]}, "config.json: unknown config keys ['widths']"),
        ("{not json", "config.json is not valid JSON (Expecting property name"),
        ("[1, 2]", "config.json holds a JSON list, not an object of settings"),
    ],
)
def test_a_wrongly_typed_config_json_is_one_line_naming_the_file_and_key(tmp_path, capsys, change, message):
    """Fault 5: a config.json value of the wrong type, or a file that is not JSON: one line that names
    config.json, the key and what is allowed, status 2, from train.py and eval.py alike (before: TypeError
    tracebacks, a tuple of characters, or a JSON error not naming the file)."""
    import eval as eval_cli

    workdir = tmp_path / "run"
    workdir.mkdir()
    text = change if isinstance(change, str) else json.dumps({**Config(workdir=str(workdir)).to_dict(), **change})
    (workdir / "config.json").write_text(text)
    for main in (train.main, eval_cli.main):
        with pytest.raises(SystemExit) as exit_:
            main([f"--workdir={workdir}"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
        assert str(workdir / "config.json") in err
    assert (workdir / "config.json").read_text() == text


def test_a_second_ctrl_c_is_one_line_and_status_130(monkeypatch, tmp_path, capsys):
    """Fault 6, in-process: the second Ctrl-C raises KeyboardInterrupt wherever training is; train.py reports
    it in one line (130) instead of a traceback."""

    def second_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_sweep", second_ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        train.main([f"--workdir={tmp_path / 'run'}", "--hidden_dims=32"])
    err = capsys.readouterr().err
    assert exit_.value.code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("train.py: aborted at once (Ctrl-C twice): the epoch checkpoints")


def test_ctrl_c_twice_during_training_prints_no_traceback(longer_data_dir, tmp_path):
    """Fault 6, end to end: SIGINT, then SIGINT again once the first is acknowledged. Status 130 and one line
    (the clean stop's, if it was done before the second arrived, else the abort's); no traceback."""
    workdir = tmp_path / "run"
    args = [f"--data_dir={longer_data_dir}", f"--workdir={workdir}", "--hidden_dims=256,256", "--batch_size=20"]
    proc = _launch([*args, "--epochs=50"])
    assert _wait_for(proc, lambda: (workdir / training.CHECKPOINT_DIR / "1").is_dir())  # epoch 1 saved
    proc.send_signal(signal.SIGINT)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "checkpointing at the next step boundary" in line:
            proc.send_signal(signal.SIGINT)
            break
    err = "".join(seen) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(("train.py: aborted at once (Ctrl-C twice)", "train.py: interrupted")), err[-3000:]
    assert training.saved_epochs(workdir)  # the epoch checkpoints stay


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_eval_stopped_by_a_signal_is_one_line(tiny_data_dir, tmp_path, number):
    """Fault 6 for eval.py: SIGINT and SIGTERM during a section end in one line naming the signal, the section
    and what metrics.json keeps, with status 128 + the signal (before: a 55-line KeyboardInterrupt traceback,
    and a silent exit on SIGTERM)."""
    workdir = tmp_path / "run"
    _tiny_run(tiny_data_dir, workdir)
    proc = subprocess.Popen(
        [sys.executable, "eval.py", f"--workdir={workdir}", "--sections=objective,log_likelihood", "--iw_samples=5000"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "section objective:" in line:  # the next section, log_likelihood, is running
            time.sleep(0.5)
            proc.send_signal(number)
            break
    err = "".join(seen) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + number and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    name = signal.Signals(number).name
    assert last.startswith(f"eval.py: interrupted by {name} during section log_likelihood: "), err[-3000:]
    assert last.endswith("holds the sections finished before it (objective)")
    assert "objective" in json.loads((workdir / "eval" / "metrics.json").read_text())


def test_a_damaged_line_in_the_middle_of_the_metrics_is_kept_aside_with_a_warning(tmp_path, caplog):
    """Fault 7: a damaged line inside metrics.jsonl (not the last line a kill cuts short) is dropped with a
    warning naming it, and the file as it was is kept beside it."""
    path = tmp_path / training.METRICS_FILE
    original = '{"epoch": 1, "loss": 3.0}\n{"epoch": 2, "lo#@!\n{"epoch": 3, "loss": 1.0}\n{"epoch": 4, "lo'
    path.write_text(original)
    copy = training.truncate_metrics(path, 3)
    assert _epochs(tmp_path) == [1, 3]
    assert copy is not None and copy.read_text() == original and copy.name.startswith("metrics.jsonl.replaced-")
    assert "dropped damaged line 2; the file as it was is kept in" in caplog.text
    caplog.clear()
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "lo')  # a kill's leftovers: silent, no copy
    assert training.truncate_metrics(path, 1) is None and _epochs(tmp_path) == [1]
    assert caplog.text == ""


def test_an_emptied_checkpoints_folder_restarts_with_a_warning_and_keeps_the_history(tiny_data_dir, tmp_path, caplog):
    """Fault 7: checkpoints/ emptied after 4 epochs. The run starts again from epoch 1 (nothing to resume), but
    says so, and the old history is kept in metrics.jsonl.replaced-<time> (it was replaced silently)."""
    import shutil

    workdir = tmp_path / "run"
    _tiny_run(tiny_data_dir, workdir, epochs=4)
    history = (workdir / training.METRICS_FILE).read_text()
    shutil.rmtree(workdir / training.CHECKPOINT_DIR)
    (workdir / training.CHECKPOINT_DIR).mkdir()
    _tiny_run(tiny_data_dir, workdir, epochs=1)
    assert "the lines of epochs 1-4, which have no checkpoint (none is left)" in caplog.text
    (copy,) = workdir.glob("metrics.jsonl.replaced-*")
    assert copy.read_text() == history and _epochs(workdir) == [1]


def test_a_launch_that_ends_before_its_first_epoch_leaves_no_event_file(tiny_data_dir, tmp_path):
    """Fault 7: the event file is created with the first epoch's record, so a launch killed (or refused) before
    then leaves no empty events.out.tfevents.* behind; the first record then writes the config and scalars."""
    from mvae_jax.training import trackers

    config = Config(**TINY, data_dir=str(tiny_data_dir), workdir=str(tmp_path))
    run = trackers.RunTrackers(tmp_path, config, None)
    run.close("KILLED")
    assert list(tmp_path.glob("events.out.tfevents.*")) == []
    run = trackers.RunTrackers(tmp_path, config, None)
    run.epoch({"epoch": 1, "loss": 2.0}, None, None)
    run.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    assert events.stat().st_size > 0
