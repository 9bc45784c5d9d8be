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
:class:`mvae_jax.tracking_writers.TensorBoardWriter`). MLflow and W&B are optional extras
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
from typing import Any, Mapping, Sequence

from mvae_jax import files as files_lib
from mvae_jax.tracking_writers import (  # noqa: F401 (Writer, Writers and the three writers re-exported)
    MlflowWriter,
    TensorBoardWriter,
    WandbWriter,
    Writer,
    Writers,
    open_mlflow,
    open_wandb,
    start_error,
)

log = logging.getLogger("mvae_jax.tracking")

TRACKERS = ("tensorboard", "mlflow", "wandb")
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}  # tracker: (its module, which is also) the pip extra installing it
STATE_FILE = "trackers.json"  # in the workdir: each tracker's run, for resuming and eval.py
SPEED = ("time_s", "samples_per_s")  # metrics.jsonl entries shown under speed/, the loss terms under train/


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
                opener = open_mlflow if name == "mlflow" else open_wandb
                try:
                    writer, entry, new = opener(workdir, config, state.get(name), evaluation)
                except ValueError:
                    raise
                except Exception as e:
                    raise ValueError(start_error(name, e)) from None
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


def _read_state(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


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
