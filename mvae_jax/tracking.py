"""Experiment trackers: where a run's settings, each epoch's metrics and its evaluation go besides the workdir.

``train.py --tracker=tensorboard,mlflow,wandb`` (default ``tensorboard``; ``none``
for none) sends every run the same things, through one small writer interface
(:class:`Writer`, after CLU's ``metric_writers``: ``write_hparams``,
``write_scalars``, ``write_images``, plus ``write_files``):

* the run's config as parameters (TensorBoard: a ``config`` text; MLflow:
  params; W&B: the run's config);
* each metrics.jsonl line as scalars at its epoch (``train/<term>``, and
  ``speed/time_s``, ``speed/samples_per_s``), and every ``--tensorboard_images``
  epochs a grid of cross-modal samples;
* eval.py's metrics.json as scalars at the evaluated epoch (``eval/<metric>``,
  ``eval_validation/...`` for the validation split), and its metrics.json and
  figures as files (TensorBoard: the figures as images; MLflow: artifacts under
  ``eval/``; W&B: the run's summary and an ``evaluation`` artifact).

TensorBoard writes event files into the workdir and needs nothing more (see
:class:`TensorBoardWriter`). MLflow and W&B are optional extras
(``pip install 'mvae_jax[mlflow]'``, ``'mvae_jax[wandb]'``); a tracker that is
not installed, or that cannot start its run (a server that does not answer, W&B
without a login), is a one-line error before training starts. Each is set up
the way its own documentation says: ``MLFLOW_TRACKING_URI`` (MLflow's own
default: ``sqlite:///mlflow.db`` in the current folder), ``WANDB_MODE``
(``offline`` writes under the workdir, for ``wandb sync`` later),
``WANDB_ENTITY``; ``--tracker_project`` names the MLflow experiment and the W&B
project. Where no ``MLFLOW_HTTP_REQUEST_*`` variable is set, MLflow's client
gets 2 retries and a 30 s timeout instead of its 7 retries of exponential
back-off, so that a server that goes away costs seconds, not minutes.

A tracker is a view of the workdir, never a reason to lose an epoch: a writer
that fails mid-run (a server gone, a full disk) warns once, naming the error,
and is off for the rest of the run; training and evaluation go on and every
file in the workdir is written as before.

Each run keeps its trackers' run ids in ``<workdir>/trackers.json``, so that a
resumed run and eval.py write to the same MLflow run and W&B run. A tracker
that is new to a workdir (a run resumed with ``--tracker=mlflow``, or evaluated
with it) first gets the epochs metrics.jsonl already holds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from pathlib import Path
import re
import socket
import time
from typing import Any, Mapping, Sequence

import numpy as np

from mvae_jax import files as files_lib

log = logging.getLogger("mvae_jax.tracking")

TRACKERS = ("tensorboard", "mlflow", "wandb")
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}  # tracker: (its module, which is also) the pip extra installing it
STATE_FILE = "trackers.json"  # in the workdir: each tracker's run, for resuming and eval.py
SPEED = ("time_s", "samples_per_s")  # metrics.jsonl entries shown under speed/, the loss terms under train/
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_MLFLOW_BATCH = 100  # params per log_batch call (MLflow's limit); metrics go 1000 at a time


def names(trackers: Sequence[str]) -> tuple[str, ...]:
    """The trackers of a ``--tracker`` value: ("none",) means none."""
    return tuple(t for t in trackers if t != "none")


def allowed(trackers: Sequence[str]) -> bool:
    """True for one or more distinct names of TRACKERS, or "none" alone (the check of ``--tracker``)."""
    trackers = tuple(trackers)
    if trackers == ("none",):
        return True
    return bool(trackers) and len(set(trackers)) == len(trackers) and all(t in TRACKERS for t in trackers)


def check(trackers: Sequence[str]) -> None:
    """ValueError in one line for a tracker whose package is not installed, naming the extra that installs it."""
    for name in names(trackers):
        module = EXTRAS.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            raise ValueError(
                f"--tracker={name} needs the {module} package, which is not installed: "
                f"pip install 'mvae_jax[{EXTRAS[name]}]' (or leave {name} out of --tracker)"
            )


def tag(key: str) -> str:
    """A metric key as every tracker accepts it: the comma of subset terms and the arrow of cross-modal ones
    replaced (kl_m0,m1 -> kl_m0_m1, x->y -> x_to_y), any other character MLflow refuses made ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-./ :]", "_", key.replace("->", "_to_").replace(",", "_"))


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """One metrics.jsonl line as tracker scalars: ``train/<term>``, ``speed/time_s``, ``speed/samples_per_s``."""
    return {
        f"{'speed' if key in SPEED else 'train'}/{tag(key)}": float(value)
        for key, value in record.items()
        if key not in ("epoch", "step") and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def eval_scalars(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """eval.py's metrics.json as scalars: every number, nested keys joined by ``/`` (eval/coherence/x_to_w);
    the flags, split and epoch left out."""
    out = {}

    def walk(value, key):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}/{tag(str(k))}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)

    for key, value in metrics.items():
        if key not in ("eval_flags", "epoch", "split", "skipped"):
            walk(value, f"{prefix}/{tag(key)}")
    return out


def as_text(value) -> str:
    """A setting as MLflow's params hold it: strings as they are, anything else as JSON (lists, null)."""
    return value if isinstance(value, str) else json.dumps(value)


class Writer:
    """One tracker of one run. Every method may raise; :class:`Writers` turns a failure into one warning."""

    label = "tracker"  # how warnings name it: "<label> tracking is off for the rest of this run"

    def write_hparams(self, params: Mapping[str, Any]) -> None:
        """The run's settings, ``Config.to_dict()`` (once per launch: a resumed run may have changed its
        resumable ones)."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Numbers at a step (the epoch)."""

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Images (H, W, C) in [0, 1] at a step."""

    def write_files(self, step: int, paths: Sequence[Path], folder: str) -> None:
        """Files an evaluation wrote (metrics.json, figures), under ``folder``."""

    def close(self, status: str = "FINISHED") -> None:
        """Flush and end this launch's writing. ``status``: FINISHED, KILLED (interrupted: it resumes) or
        FAILED (stopped by an error; also a tracker that failed), as MLflow names a run's end."""


class TensorBoardWriter(Writer):
    """Event files in the workdir: ``tensorboard --logdir runs/`` shows every run.

    Written with tensorboardX's protobufs and its synchronous ``EventsWriter``, which need only protobuf:
    TensorFlow's summary API (flax.metrics.tensorboard, clu) would import TensorFlow in the training process,
    about 9 s of start-up, for files of the same format. Not tensorboardX's ``SummaryWriter``: it hands each
    event to a writer thread through a bounded queue, and when that thread dies (``OSError: No space left on
    device``) the next ``add_*`` blocks on the full queue forever, holding the workdir lock. Here every event is
    written in the calling thread, so a failure is an exception.

    The event file is created at the first write after the config, so a launch killed before its first epoch
    ends leaves no empty event file. ``suffix`` tells apart the files of evaluations (``.eval``).
    """

    label = "TensorBoard"

    def __init__(self, workdir: str | os.PathLike, suffix: str = ""):
        self.workdir, self.suffix = Path(workdir), suffix
        self.writer = None
        self.pending: list = []  # (summary, step) written when the file opens: the config text

    def write_hparams(self, params):
        from tensorboardX.summary import text

        self.pending.append((text("config", "```\n" + json.dumps(dict(params), indent=2) + "\n```"), 0))

    def write_scalars(self, step, scalars):
        from tensorboardX import summary

        for key, value in scalars.items():
            self._write(summary.scalar(key, value), step)
        if self.writer is not None:
            self.writer.flush()

    def write_images(self, step, images):
        from tensorboardX import summary

        for key, image in images.items():
            self._write(summary.image(key, np.clip(image, 0.0, 1.0), dataformats="HWC"), step)
        if self.writer is not None:
            self.writer.flush()

    def write_files(self, step, paths, folder):
        """The PNG figures as images (``eval/tsne``, ...); other files stay in the workdir only."""
        images = {f"{folder}/{p.stem}": _read_png(p) for p in paths if p.suffix == ".png"}
        if images:
            self.write_images(step, images)

    def _write(self, summary, step: int) -> None:
        from tensorboardX.proto import event_pb2

        if self.writer is None:
            from tensorboardX.event_file_writer import EventsWriter

            suffix = f".{os.getpid()}{self.suffix}" if self.suffix else ""
            self.writer = EventsWriter(str(self.workdir / "events"), suffix)
            pending, self.pending = self.pending, []
            for s, at in pending:
                self._write(s, at)
        self.writer.write_event(event_pb2.Event(summary=summary, step=step, wall_time=time.time()))

    def close(self, status="FINISHED"):
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()


class MlflowWriter(Writer):
    """One MLflow run, through ``MlflowClient`` (not the fluent API, whose one active run per process would not
    serve the runs of a sweep at once)."""

    label = "MLflow"

    def __init__(self, client, run_id: str, evaluation: bool = False):
        self.client, self.run_id, self.evaluation = client, run_id, evaluation

    def write_hparams(self, params):
        """Params are immutable in MLflow: those the run has are kept, and a resumable setting changed on resume
        is recorded as the tag ``resumed_with.<name>``."""
        logged = self.client.get_run(self.run_id).data.params
        from mlflow.entities import Param

        texts = {k: as_text(v)[:6000] for k, v in params.items()}  # 6000: MLflow's longest param value
        new = [Param(k, v) for k, v in texts.items() if k not in logged]
        for start in range(0, len(new), _MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=new[start : start + _MLFLOW_BATCH])
        for k, v in texts.items():
            if k in logged and logged[k] != v:
                self.client.set_tag(self.run_id, f"resumed_with.{k}", v[:5000])

    def write_scalars(self, step, scalars):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def write_images(self, step, images):
        for key, image in images.items():
            image = np.clip(image, 0.0, 1.0)
            self.client.log_image(self.run_id, image[..., 0] if image.shape[-1] == 1 else image, key=key, step=step)

    def write_files(self, step, paths, folder):
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), folder)

    def close(self, status="FINISHED"):
        if not self.evaluation:
            self.client.set_terminated(self.run_id, status)


class WandbWriter(Writer):
    """One W&B run. An evaluation's scalars go to the run's summary and its files to an ``evaluation`` artifact:
    W&B drops history rows at a step below the run's last one, and the evaluated epoch may be such a step."""

    label = "W&B"

    def __init__(self, run, evaluation: bool = False):
        self.run, self.evaluation = run, evaluation

    def write_hparams(self, params):
        self.run.config.update(dict(params), allow_val_change=True)

    def write_scalars(self, step, scalars):
        if self.evaluation:
            self.run.summary.update(dict(scalars))
        else:
            self.run.log(dict(scalars), step=step)

    def write_images(self, step, images):
        import wandb

        self.run.log({k: wandb.Image(np.clip(v, 0.0, 1.0)) for k, v in images.items()}, step=step)

    def write_files(self, step, paths, folder):
        import wandb

        artifact = wandb.Artifact(f"{folder}-{self.run.id}", type="evaluation", metadata={"epoch": step})
        for path in paths:
            artifact.add_file(str(path), name=f"{folder}/{path.name}")
        self.run.log_artifact(artifact)

    def close(self, status="FINISHED"):
        self.run.finish(exit_code={"FINISHED": 0, "KILLED": 130}.get(status, 1))


class Writers:
    """The trackers of one run: every call goes to each; one that raises warns once (naming the error and what
    is still written) and is off for the rest of the run. Nothing here raises."""

    def __init__(self, workdir, writers: Sequence[Writer], keeps: str):
        self.workdir, self.writers, self.keeps = Path(workdir), list(writers), keeps
        self.failed: dict[str, str] = {}  # label: why it stopped

    def __bool__(self) -> bool:
        return bool(self.writers)

    def call(self, method: str, *args, only: Sequence[Writer] | None = None) -> None:
        for writer in list(self.writers):
            if only is not None and writer not in only:
                continue
            try:
                getattr(writer, method)(*args)
            except Exception as e:  # a server gone, a full disk, lost permissions, a figure that cannot be drawn
                self._fail(writer, e)

    def write_hparams(self, params, only=None):
        self.call("write_hparams", params, only=only)

    def write_scalars(self, step, scalars, only=None):
        self.call("write_scalars", step, scalars, only=only)

    def write_images(self, step, images, only=None):
        self.call("write_images", step, images, only=only)

    def write_files(self, step, paths, folder, only=None):
        self.call("write_files", step, paths, folder, only=only)

    def _fail(self, writer: Writer, error: Exception) -> None:
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        self.failed[writer.label] = why
        self.writers.remove(writer)
        log.warning(
            "%s: %s tracking is off for the rest of this run (%s); %s", self.workdir, writer.label, why, self.keeps
        )
        try:
            writer.close("FAILED")
        except Exception as e:
            log.debug("closing %s of %s: %s", writer.label, self.workdir, e)

    def close(self, status: str = "FINISHED") -> None:
        """Close each writer; a failure here is only logged (at debug: the run's files are complete)."""
        writers, self.writers = self.writers, []
        for writer in writers:
            try:
                writer.close(status)
            except Exception as e:
                log.debug("closing %s of %s: %s", writer.label, self.workdir, e)


def status_of(error: BaseException) -> str:
    """How a tracker records a run stopped by ``error``: KILLED if interrupted (it resumes), else FAILED."""
    from mvae_jax import errors

    return "KILLED" if isinstance(error, (errors.Interrupted, KeyboardInterrupt)) else "FAILED"


def open_run(
    workdir: str | os.PathLike, config, trackers: Sequence[str], *, evaluation: bool = False
) -> tuple[Writers, list[Writer]]:
    """The writers of ``trackers`` for the run in ``workdir``, and those of them new to it (no entry in
    trackers.json yet; TensorBoard: no event file), which have not seen its earlier epochs.

    MLflow and W&B reopen the run trackers.json names (same tracking URI, same project), else start one and
    record it there. ValueError naming the tracker and the cause when one cannot start: before training.
    """
    workdir = Path(workdir)
    check(trackers)
    state_path = workdir / STATE_FILE
    state = _read_state(state_path)
    writers, fresh, changed = [], [], False
    keeps = (
        "eval/metrics.json and the figures are written as before"
        if evaluation
        else ("metrics.jsonl and the checkpoints are written as before")
    )
    try:
        for name in names(trackers):
            if name == "tensorboard":
                writer = TensorBoardWriter(workdir, ".eval" if evaluation else "")
                new = not any(workdir.glob("events.out.tfevents.*"))
            else:
                opener = _open_mlflow if name == "mlflow" else _open_wandb
                try:
                    writer, entry, new = opener(workdir, config, state.get(name), evaluation)
                except ValueError:
                    raise
                except Exception as e:
                    raise ValueError(_start_error(name, e)) from None
                if entry != state.get(name):
                    state[name], changed = entry, True
            writers.append(writer)
            if new:
                fresh.append(writer)
    except BaseException:
        for w in writers:
            with contextlib.suppress(Exception):
                w.close("KILLED")
        raise
    if changed:
        try:
            with files_lib.exclusive_lock(workdir / f".{STATE_FILE}.lock"):
                on_disk = _read_state(state_path)
                files_lib.atomic_write_text(state_path, json.dumps({**on_disk, **state}, indent=2) + "\n")
        except OSError as e:  # a run evaluated from a folder it cannot write: the next launch starts another
            log.warning("%s: could not record the trackers' runs in %s (%s)", workdir, state_path, e)
    return Writers(workdir, writers, keeps), fresh


def _start_error(name: str, error: Exception) -> str:
    why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if name == "mlflow":
        return (
            f"--tracker=mlflow could not start its run at {_mlflow_uri()} ({why}); check MLFLOW_TRACKING_URI and "
            "that the server answers, or leave mlflow out of --tracker"
        )
    return (
        f"--tracker=wandb could not start its run ({why}); log in (wandb login, or WANDB_API_KEY), or set "
        "WANDB_MODE=offline to write it under the workdir for wandb sync later, or leave wandb out of --tracker"
    )


def _mlflow_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _open_mlflow(workdir: Path, config, entry: dict | None, evaluation: bool):
    for key, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = _mlflow_uri()
    client = MlflowClient(uri)
    if entry and entry.get("tracking_uri") == uri:
        try:
            run = client.get_run(entry["run_id"])
            if not evaluation:
                client.update_run(run.info.run_id, status="RUNNING")
            return MlflowWriter(client, run.info.run_id, evaluation), entry, False
        except MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" not in str(e.error_code):
                raise
            log.warning("%s: MLflow run %s is gone from %s; starting another", workdir, entry["run_id"], uri)
    experiment = client.get_experiment_by_name(config.tracker_project)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(config.tracker_project)
    run = client.create_run(
        experiment_id,
        run_name=workdir.name,
        tags={"workdir": str(workdir.absolute()), "host": socket.gethostname(), "model": config.model},
    )
    if evaluation:
        client.set_terminated(run.info.run_id, "FINISHED")  # only evaluated here: nothing trains it
    entry = {"tracking_uri": uri, "experiment": config.tracker_project, "run_id": run.info.run_id}
    return MlflowWriter(client, run.info.run_id, evaluation), entry, True


def _open_wandb(workdir: Path, config, entry: dict | None, evaluation: bool):
    import wandb

    same = bool(entry) and entry.get("project") == config.tracker_project
    run = wandb.init(
        project=config.tracker_project,
        name=workdir.name,
        dir=str(workdir),
        id=entry["id"] if same else None,
        resume="allow" if same else None,
        job_type="eval" if evaluation else "train",
        reinit="create_new",  # a sweep's runs are open at once
        tags=[config.model, config.dataset],
    )
    entry = {"project": config.tracker_project, "id": run.id}
    return WandbWriter(run, evaluation), entry, not same


def _read_state(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    image = np.asarray(matplotlib.image.imread(path), np.float32)
    if image.ndim == 2:
        image = image[..., None]
    return image[..., :3]


def earlier_epochs(workdir: str | os.PathLike) -> list[dict]:
    """metrics.jsonl's complete lines (a line cut short by a kill is skipped), for a tracker new to the run."""
    from mvae_jax.training.validation import read_records

    return [r for r in read_records(Path(workdir) / "metrics.jsonl") if isinstance(r, dict) and "epoch" in r]


def log_evaluation(workdir, config, trackers: Sequence[str], metrics: Mapping, out_dir: Path, split: str) -> None:
    """eval.py's results to the run's trackers: metrics.json's numbers as scalars at the evaluated epoch, its
    metrics.json and figures as files. A tracker new to the run first gets the run's config and its epochs.

    Called once the evaluation is on disk, so a tracker that cannot start its run (a server that does not
    answer) is a warning here, not an error."""
    try:
        writers, fresh = open_run(workdir, config, trackers, evaluation=True)
    except ValueError as e:  # a server that does not answer: the evaluation is on disk all the same
        log.warning("%s; %s holds the evaluation all the same", e, out_dir)
        return
    try:
        if fresh:
            writers.write_hparams(config.to_dict(), only=fresh)
            for record in earlier_epochs(workdir):
                writers.write_scalars(int(record["epoch"]), epoch_scalars(record), only=fresh)
        prefix = "eval" if split == "test" else f"eval_{split}"
        step = int(metrics["epoch"])
        writers.write_scalars(step, eval_scalars(metrics, prefix))
        paths = sorted(p for p in out_dir.iterdir() if p.is_file() and p.suffix in (".png", ".json"))
        writers.write_files(step, paths, prefix)
    finally:
        writers.close()
