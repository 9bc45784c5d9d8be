"""One train.py per workdir: a second one, or eval.py while training writes, is refused at once; a killed
holder releases the lock; duplicate metric lines of runs before the lock are dropped on resume."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

import eval as eval_cli
from mvae_jax import training
from mvae_jax.config import Config
from tests.conftest import ROOT
import train

pytestmark = pytest.mark.slow  # subprocesses, real data, faults or several processes: `-m "not slow"` skips

TINY = dict(hidden_dims=(16,), latent_dim=4, batch_size=20)
HOLD = (
    "import sys, time; from mvae_jax.training.lock import WorkdirLock; "
    "lock = WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"
)


@pytest.fixture
def holder(tmp_path):
    """A process holding the exclusive lock of tmp_path/run, as a running train.py does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_train_is_refused_at_once_and_runs_once_the_holder_is_killed(
    holder, tiny_data_dir, tmp_path, capsys, monkeypatch
):
    workdir = tmp_path / "run"
    args = [
        "--epochs=1",
        f"--data_dir={tiny_data_dir}",
        f"--workdir={workdir}",
        "--hidden_dims=16",
        "--latent_dim=4",
        "--batch_size=20",
    ]
    real_load = training.loop.load_dataset
    monkeypatch.setattr(training.loop, "load_dataset", lambda config: pytest.fail("data loaded before the lock check"))
    with pytest.raises(SystemExit) as exit_:
        train.main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    assert f"is in use by pid {holder.pid} on {socket.gethostname()} since" in err, err
    assert not (workdir / "config.json").exists()
    holder.send_signal(signal.SIGKILL)  # the kernel releases a killed holder's lock
    holder.wait()
    monkeypatch.setattr(training.loop, "load_dataset", real_load)
    train.main(args)
    assert training.saved_epochs(workdir) == [1]
    assert (workdir / training.LOCK_FILE).read_text() == ""  # released, and names nobody


def test_eval_is_refused_while_train_writes_and_train_while_eval_reads(tiny_data_dir, tmp_path, capsys):
    config = Config(**TINY, data_dir=str(tiny_data_dir), workdir=str(tmp_path / "run"), epochs=1)
    training.train_and_evaluate(config)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, config.workdir], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as exit_:
            eval_cli.main([f"--workdir={config.workdir}", "--sections=samples"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"in use by pid {proc.pid}" in err and "before you evaluate it" in err, err
    finally:
        proc.kill()
        proc.wait()
    with training.WorkdirLock(config.workdir, shared=True):  # eval.py reading the run
        with pytest.raises(training.WorkdirBusy, match="in use by eval.py"):
            training.train_and_evaluate(Config(**{**config.to_dict(), "epochs": 2}))
    eval_cli.main([f"--workdir={config.workdir}", "--sections=samples"])  # both free again
    assert (tmp_path / "run" / "eval" / "samples.png").is_file()


def test_resume_drops_duplicate_epoch_lines(tmp_path):
    path = tmp_path / training.METRICS_FILE
    path.write_text("".join(json.dumps({"epoch": e, "loss": float(i)}) + "\n" for i, e in enumerate([1, 1, 2, 2, 3])))
    training.truncate_metrics(path, 2)
    assert [(r["epoch"], r["loss"]) for r in map(json.loads, path.read_text().splitlines())] == [(1, 1.0), (2, 3.0)]
    assert os.path.getsize(path) > 0
