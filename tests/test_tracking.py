"""Experiment trackers (--tracker, mvae_jax.tracking): what each one holds, read back from where it wrote it.

MLflow is read back from its local store (a SQLite file, MLflow's default since file stores went into
maintenance) and from a real tracking server that the test starts on 127.0.0.1 and later kills; W&B from the
transaction log of its offline mode; TensorBoard from its event files, with TensorFlow's own reader.
"""

import base64
import hashlib
import json
import logging
import os
from pathlib import Path
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from mvae_jax import api, tracking, tracking_writers, training
from mvae_jax.config import Config

TINY = dict(hidden_dims=(32,), latent_dim=4, batch_size=20, tensorboard_images=1)
SECTIONS = ("latent_accuracy", "samples", "curves")


def _lines(workdir) -> list[dict]:
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- the pieces, without any tracker installed


def test_metric_keys_become_names_every_tracker_takes():
    record = {"epoch": 3, "step": 18, "loss": 2.5, "kl_m0,m1": 0.5, "log_likelihood_x->y": -1.0, "time_s": 0.25}
    assert tracking.epoch_scalars(record) == {
        "train/loss": 2.5,
        "train/kl_m0_m1": 0.5,
        "train/log_likelihood_x_to_y": -1.0,
        "speed/time_s": 0.25,
    }
    metrics = {"epoch": 3, "split": "test", "eval_flags": {"seed": 0}, "coherence": {"x,y->w": 0.9, "n": True}}
    assert tracking.eval_scalars(metrics, "eval") == {"eval/coherence/x_y_to_w": 0.9}
    assert tracking.tag("a b:c/d-e.f(g)") == "a b:c/d-e.f_g_"


@pytest.mark.parametrize("value", [("mlflow", "mlflow"), ("nope",), (), ("none", "mlflow")])
def test_a_bad_tracker_is_refused_naming_what_is_allowed(tiny_config, value):
    with pytest.raises(ValueError, match=r"tracker=.*allowed: tensorboard, mlflow, wandb \(comma separated"):
        Config(**{**tiny_config.to_dict(), "tracker": value}).validate()


def test_a_tracker_not_installed_is_one_line_naming_its_extra_before_anything_is_written(tiny_config, monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    config = Config(**{**tiny_config.to_dict(), "tracker": ("tensorboard", "wandb")})
    with pytest.raises(ValueError) as refused:
        training.train_and_evaluate(config)
    assert str(refused.value) == (
        "--tracker=wandb needs the wandb package, which is not installed: pip install 'mvae_jax[wandb]' "
        "(or leave wandb out of --tracker)"
    )
    assert not Path(config.workdir).exists()


def test_train_py_says_so_in_one_line(tiny_data_dir, tmp_path, monkeypatch, capsys):
    from mvae_jax.commands import train

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        train.main([f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", "--tracker=mlflow", "--epochs=1"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "train.py: error: --tracker=mlflow needs the mlflow package, which is not installed: "
        "pip install 'mvae_jax[mlflow]' (or leave mlflow out of --tracker)"
    )
    assert not workdir.exists()


class _Recorder(tracking.Writer):
    label = "Recorder"

    def __init__(self, fail_at=None):
        self.calls, self.fail_at, self.closed = [], fail_at, None

    def write_scalars(self, step, scalars):
        if step == self.fail_at:
            raise ConnectionError("server gone\nsecond line")
        self.calls.append(step)

    def close(self, status="FINISHED"):
        self.closed = status


def test_a_writer_that_fails_warns_once_is_closed_and_the_others_go_on(caplog, tmp_path):
    failing, healthy = _Recorder(fail_at=2), _Recorder()
    writers = tracking.Writers(tmp_path, [failing, healthy], "metrics.jsonl and the checkpoints are written")
    with caplog.at_level(logging.WARNING, logger="mvae_jax.tracking"):
        for step in (1, 2, 3, 4):
            writers.write_scalars(step, {"loss": 1.0})
    assert failing.calls == [1] and failing.closed == "FAILED"
    assert healthy.calls == [1, 2, 3, 4]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning == (
        f"{tmp_path}: Recorder tracking is off for the rest of this run (ConnectionError: server gone); "
        "metrics.jsonl and the checkpoints are written"
    )
    writers.close()
    assert healthy.closed == "FINISHED"


# ---------------------------------------------------------------- W&B's offline transaction log


def wandb_records(run_dir: Path) -> list:
    """The records of a W&B offline run's ``run-<id>.wandb`` file: W&B's LevelDB-style log (a 7-byte header
    ``:W&B`` + magic + version, then 32 KiB blocks of chunks: crc32c, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data, records, pos, pieces = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        pieces += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def wandb_run(run_dir: Path) -> dict:
    """What an offline W&B run holds: its id, project, config, history rows by step, summary and artifacts."""
    out = {"config": {}, "history": {}, "summary": {}, "artifacts": []}
    for r in wandb_records(run_dir):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["project"], out["name"] = r.run.run_id, r.run.project, r.run.display_name
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            out["history"][row["_step"]] = row
        elif kind == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
        elif kind == "artifact":
            files = {e.path: e.digest for e in r.artifact.manifest.contents}
            out["artifacts"].append((r.artifact.name, r.artifact.type, files))
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def _md5(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@pytest.fixture(autouse=True)
def _wandb_offline_in_tmp(tmp_path_factory, monkeypatch):
    """W&B offline and quiet, its cache and staging folders in a temporary directory (never ~/.local)."""
    root = tmp_path_factory.mktemp("wandb_home")
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DATA_DIR": str(root / "data"),
        "WANDB_CACHE_DIR": str(root / "cache"),
        "WANDB_CONFIG_DIR": str(root / "config"),
        "WANDB_DISABLE_CODE": "true",
    }.items():
        monkeypatch.setenv(key, value)


# ---------------------------------------------------------------- all three trackers on a local store


@pytest.mark.slow
def test_every_tracker_holds_the_config_each_epoch_and_the_evaluation(tiny_data_dir, tmp_path, monkeypatch):
    """TensorBoard, MLflow (a local SQLite store) and W&B (offline) together on one run of 2 epochs and its
    evaluation: each holds the config, each metrics.jsonl line at its epoch, the cross-modal grids, and
    eval.py's numbers and files; trackers.json names the MLflow and W&B runs."""
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(tmp_path)  # a local store's artifacts go to ./mlruns
    workdir = tmp_path / "run"
    config = Config(
        **TINY, data_dir=str(tiny_data_dir), workdir=str(workdir), epochs=2, tracker=("tensorboard", "mlflow", "wandb")
    )
    training.train_and_evaluate(config)
    metrics = api.evaluate(workdir, sections=SECTIONS)
    lines, runs = _lines(workdir), json.loads((workdir / tracking.STATE_FILE).read_text())
    assert set(runs) == {"mlflow", "wandb"} and runs["mlflow"]["tracking_uri"] == store
    eval_dir = workdir / "eval"
    files = sorted(p for p in eval_dir.iterdir() if p.suffix in (".png", ".json"))
    assert {p.name for p in files} == {"metrics.json", "samples.png", "curves.png"}

    # MLflow: params = config.json, one metric point per epoch, the grids, eval numbers and artifacts
    client = MlflowClient(store)
    run = client.get_run(runs["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == {k: tracking_writers.as_text(v) for k, v in config.validate().to_dict().items()}
    for key in ("loss", "kl", "log_likelihood_x"):
        history = client.get_metric_history(run.info.run_id, f"train/{key}")
        assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r[key])) for r in lines]
    assert run.data.metrics["eval/latent_accuracy/x"] == pytest.approx(metrics["latent_accuracy"]["x"])
    assert {m.step for m in client.get_metric_history(run.info.run_id, "eval/latent_accuracy/x")} == {2}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert artifacts == {f"eval/{p.name}" for p in files}
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
    assert sorted(p.split("+step+")[1].split("+")[0] for p in grids) == ["1", "2"]
    local = Path(client.download_artifacts(run.info.run_id, "eval/metrics.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text()) == json.loads((eval_dir / "metrics.json").read_text())

    # W&B: the training run's log, then the evaluation's (the same run id, resumed)
    train_dir, eval_run_dir = sorted((workdir / "wandb").glob("offline-run-*"))
    trained, evaluated = wandb_run(train_dir), wandb_run(eval_run_dir)
    assert trained["id"] == evaluated["id"] == runs["wandb"]["id"] and trained["project"] == "mvae_jax"
    assert {k: v for k, v in trained["config"].items() if not k.startswith("_")} == config.validate().to_dict()
    assert sorted(trained["history"]) == [1, 2] and trained["exit_code"] == 0
    for r in lines:
        row = trained["history"][r["epoch"]]
        assert row["train/loss"] == pytest.approx(r["loss"]) and row["speed/time_s"] == pytest.approx(r["time_s"])
        assert row["cross_modal/_type"] == "image-file"
    assert evaluated["summary"]["eval/latent_accuracy/x"] == pytest.approx(metrics["latent_accuracy"]["x"])
    ((name, kind, contents),) = evaluated["artifacts"]
    assert (name, kind) == (f"eval-{runs['wandb']['id']}", "evaluation")
    assert contents == {f"eval/{p.name}": _md5(p) for p in files}

    # TensorBoard: the training events, then the evaluation's in their own file
    from tests.test_tensorboard import _events

    events = _events(workdir)
    assert {s: v for t, s, v in events if t == "train/loss"} == {r["epoch"]: np.float32(r["loss"]) for r in lines}
    assert [s for t, s, _ in events if t == "eval/latent_accuracy/x"] == [2]
    assert {t for t, _, _ in events if t in ("eval/samples", "eval/curves", "cross_modal")} == {
        "eval/samples",
        "eval/curves",
        "cross_modal",
    }


# ---------------------------------------------------------------- a real MLflow server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite store and proxied artifacts in ``folder``, started at once;
    ``ready()`` waits for /health (about 15 s here: MLflow's import and the store's tables), so the test trains
    meanwhile; ``kill()`` ends it."""

    def __init__(self, folder: Path):
        self.folder, self.uri = folder, f"http://127.0.0.1:{_free_port()}"
        self.log = (folder / "server.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", self.uri.rsplit(":", 1)[1],
             "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
             "--artifacts-destination", str(folder / "art")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def ready(self) -> str:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2).read()
                return self.uri
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.25)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


class _KillAt:
    """A reporter that kills the server once epoch ``epoch``'s record is written (training's own callback)."""

    def __init__(self, epoch, kill):
        self.epoch, self.kill = epoch, kill

    def epoch_start(self, epoch, epochs, steps):
        pass

    def step(self, index, running_loss):
        pass

    def epoch_end(self, record):
        if record["epoch"] == self.epoch:
            self.kill()


@pytest.mark.slow
def test_a_real_mlflow_server_gets_the_run_its_resumes_and_its_evaluation_and_losing_it_costs_no_epoch(
    tiny_data_dir, tmp_path, monkeypatch, caplog
):
    """1 epoch with TensorBoard only; resumed to 2 with --tracker=tensorboard,mlflow against a server on
    127.0.0.1 (the new tracker first gets epoch 1 from metrics.jsonl); evaluated (eval.py's metrics and
    figures as artifacts over HTTP); resumed to 4 with the server killed after epoch 3: one warning, every
    epoch's line and checkpoint written, and the server's store holds epochs 1-3."""
    from mlflow import MlflowClient

    base = dict(**TINY, data_dir=str(tiny_data_dir), workdir=str(tmp_path / "run"))
    server = MlflowServer(tmp_path)
    try:
        training.train_and_evaluate(Config(**base, epochs=1))  # while the server starts
        uri, kill = server.ready(), server.kill
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        config = Config(**base, epochs=2, tracker=("tensorboard", "mlflow"), tracker_project="tracked")
        training.train_and_evaluate(config)
        metrics = api.evaluate(config.workdir, sections=SECTIONS)
        run_id = json.loads((tmp_path / "run" / tracking.STATE_FILE).read_text())["mlflow"]["run_id"]
        client = MlflowClient(uri)
        run = client.get_run(run_id)
        assert client.get_experiment(run.info.experiment_id).name == "tracked" and run.info.status == "FINISHED"
        lines = _lines(config.workdir)
        loss = client.get_metric_history(run_id, "train/loss")
        assert [(m.step, m.value) for m in loss] == [(r["epoch"], pytest.approx(r["loss"])) for r in lines]
        assert run.data.metrics["eval/latent_accuracy/w"] == pytest.approx(metrics["latent_accuracy"]["w"])
        assert {a.path for a in client.list_artifacts(run_id, "eval")} == {
            "eval/metrics.json",
            "eval/samples.png",
            "eval/curves.png",
        }
        local = client.download_artifacts(run_id, "eval/samples.png", str(tmp_path / "dl"))
        assert Path(local).read_bytes() == (tmp_path / "run" / "eval" / "samples.png").read_bytes()

        with caplog.at_level(logging.WARNING, logger="mvae_jax.tracking"):
            started = time.monotonic()
            training.train_and_evaluate(Config(**{**config.to_dict(), "epochs": 4}), reporter=_KillAt(3, kill))
            seconds = time.monotonic() - started
    finally:
        server.kill()
    warnings = [r.getMessage() for r in caplog.records if "tracking is off" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"{tmp_path / 'run'}: MLflow tracking is off"), warnings
    assert "metrics.jsonl and the checkpoints are written as before" in warnings[0]
    assert [r["epoch"] for r in _lines(config.workdir)] == [1, 2, 3, 4]
    assert training.saved_epochs(config.workdir)[-1] == 4
    assert seconds < 60, f"a dead server held training up for {seconds:.0f} s"  # 2 retries, not 7 of back-off
    stored = MlflowClient(f"sqlite:///{tmp_path / 'server.db'}")
    assert [m.step for m in stored.get_metric_history(run_id, "train/loss")] == [1, 2, 3]
    assert stored.get_run(run_id).data.params["epochs"] == "2"
    assert stored.get_run(run_id).data.tags["resumed_with.epochs"] == "4"


@pytest.mark.slow
def test_an_mlflow_server_that_does_not_answer_is_refused_before_training(tiny_data_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    config = Config(**TINY, data_dir=str(tiny_data_dir), workdir=str(tmp_path / "run"), tracker=("mlflow",))
    with pytest.raises(ValueError, match=r"^--tracker=mlflow could not start its run at http://127\.0\.0\.1:\d+ "):
        training.train_and_evaluate(config)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoints" / "1").exists()
    training.train_and_evaluate(Config(**{**config.to_dict(), "tracker": ("none",), "epochs": 1}))  # not locked
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))  # none: no event files
    # eval.py's trackers open once the evaluation is on disk: a server that does not answer is a warning there
    with caplog.at_level(logging.WARNING, logger="mvae_jax.tracking"):
        metrics = api.evaluate(config.workdir, sections=("curves",), tracker="mlflow")
    assert metrics["epoch"] == 1 and (tmp_path / "run" / "eval" / "curves.png").is_file()
    assert "--tracker=mlflow could not start its run at http://127.0.0.1:" in caplog.text
    assert f"{tmp_path / 'run' / 'eval'} holds the evaluation all the same" in caplog.text
