"""The trackers' writers behind :mod:`mvae_jax.tracking`: the interface (:class:`Writer`, after CLU's
``metric_writers``), one writer per tracker (TensorBoard, MLflow, W&B) and how each starts or reopens its run,
and :class:`Writers`, which sends every call to each and turns a writer's failure into one warning.

What goes to the trackers, when, and how a run keeps its trackers' runs across launches is in
:mod:`mvae_jax.tracking`'s docstring; this module is only how each tracker writes it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import socket
import time
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger("mvae_jax.tracking")

MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_MLFLOW_BATCH = 100  # params per log_batch call (MLflow's limit); metrics go 1000 at a time


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


def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    image = np.asarray(matplotlib.image.imread(path), np.float32)
    if image.ndim == 2:
        image = image[..., None]
    return image[..., :3]


def start_error(name: str, error: Exception) -> str:
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


def open_mlflow(workdir: Path, config, entry: dict | None, evaluation: bool):
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


def open_wandb(workdir: Path, config, entry: dict | None, evaluation: bool):
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
