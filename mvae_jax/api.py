"""Evaluating a run from Python: ``evaluate``, the call that ``eval.py --workdir=DIR`` makes.

    from mvae_jax import api, training
    from mvae_jax.config import Config

    metrics = api.evaluate("runs/jmvae_beta2.0", step="best", sections=("coherence", "latent_accuracy"))
    metrics["coherence"]["x->w"]

    config = Config(model="pemvae", workdir="runs/p", epochs=3)
    state = training.train_and_evaluate(config)
    metrics = api.evaluate(state, config=config, sections=("coherence",))  # the state in memory

``evaluate`` takes a workdir (it restores a checkpoint: the latest, ``step=N``,
or ``step="best"``, the best-validation epoch that ``--validation=N`` keeps) or
a train state with its config, runs the sections asked for (every section the
data allows by default), writes ``<workdir>/eval/metrics.json`` and the figures
as eval.py does, and returns the metrics dict. Its keywords are eval.py's flags
without the dashes: ``sections``, ``step``, ``split``, ``seed``, ``query``,
``data_dir``, ``out``, ``plugins`` (modules to import first: ``mvae_jax.plugins``), the general
``query_samples`` and ``query_steps``, and
every section's own options (``iw_samples``, ``fid_points``, ...: ``OPTIONS``).
A bad one is a ValueError (or TypeError for an unknown name) naming it and what
is allowed, before any data or checkpoint is read.

Restoring without evaluating: ``training.restore_model(workdir)`` gives
``(config, model, state)`` at the latest epoch, ``restore_model(workdir, N)``
at epoch N, and ``restore_model(workdir, best_epoch(workdir), training.BEST_DIR)``
at the best-validation epoch.

This module sits above both ``training`` and ``evaluation`` (it restores
checkpoints and runs sections), below the command lines (docs/ARCHITECTURE.md).
The request and its checks are ``mvae_jax.eval_request`` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
import time

from mvae_jax import errors, tracking
from mvae_jax.eval_request import (  # noqa: F401 (re-exported: the request's checks are part of this API)
    GENERAL_OPTIONS,
    RUN_FIELDS,
    SPLITS,
    best_epoch,
    check,
    check_request,
    eval_dir,
    options,
    out_dir,
    parse_sections,
    request,
    restore,
    section_names,
    trackers_of,
    with_model_options,
)

log = logging.getLogger("mvae_jax.api")

METRICS_LOCK = ".metrics.lock"  # in the eval folder: held exclusively while metrics.json is read and replaced

Progress = Callable[[int, str], contextlib.AbstractContextManager]


def train(config, *, progress: bool = True, reporter=None, stop: Callable[[], bool] | None = None):
    """Train ``config`` (a ``Config``, or a list of them: a sweep) as ``train.py`` does, and return its final
    ``TrainState`` (a list for a list): ``training.train_sweep`` with the config validated first and progress
    shown.

    ``progress``: a bar per epoch with the running loss (in a notebook too; plain lines where the output is
    not a terminal). ``reporter``: your own ``training.Reporter`` instead (``epoch_start``, ``step``,
    ``epoch_end(metrics)``: every epoch's metrics line, e.g. to plot the loss live). ``stop``: a callable that
    ends training at the next step when it returns True (the state is checkpointed; the same call resumes).
    """
    from mvae_jax import progress as progress_lib
    from mvae_jax import training

    configs = [c.validate() for c in (config if isinstance(config, (list, tuple)) else [config])]
    own = reporter is None and progress
    if own:
        reporter = progress_lib.TqdmReporter()
    try:
        states = training.train_sweep(configs, reporter, stop=stop)
    finally:
        if own:
            reporter.close()
    return states if isinstance(config, (list, tuple)) else states[0]


def evaluate(run, *, config=None, progress: Progress | bool | None = None, **given) -> dict:
    """Evaluate ``run`` (a workdir, or a train state with its ``config``) and return metrics.json's content.

    ``given``: the module docstring's keywords (eval.py's flags). ``progress(total, description)``: a context
    manager yielding ``update(n)``; True: eval.py's progress bars (in a notebook too); None: silent.
    Everything is checked first; the
    run's workdir lock is held shared meanwhile, so a train.py writing the run refuses to start, and this
    refuses while one writes it.
    """
    from mvae_jax.training.lock import WorkdirLock

    if progress is True:
        from mvae_jax.progress import steps as progress
    elif progress is False:
        progress = None
    state = None if isinstance(run, (str, os.PathLike)) else run
    if state is not None and config is None:
        raise TypeError("evaluate(state) needs the run's config: evaluate(state, config=config)")
    if state is not None:
        config = config.validate()  # its workdir filled in where it was left to the default
    workdir = run if state is None else config.workdir
    req = request(workdir, **given)
    sections, labelled, query = check_request(req, config if state is not None else None)
    held = Path(workdir).is_dir()
    lock = WorkdirLock(req.workdir, shared=True).acquire(create=False) if held else None
    try:
        from mvae_jax.data import DATASETS
        from mvae_jax.models import get_model

        if state is None:
            config, model, state = restore(req)
        if req.model_options or state is not None:  # the model as it infers for this evaluation
            config = with_model_options(config, req.model_options)
            model = get_model(config, DATASETS[config.dataset].modalities(config))
        metrics = run_sections(req, config, model, state, sections, labelled, query, progress)
        trackers = trackers_of(req, config)
        if tracking.names(trackers):
            tracking.log_evaluation(req.workdir, config, trackers, metrics, out_dir(req), req.split)
        return metrics
    finally:
        if lock is not None:
            lock.release()


def run_sections(req, config, model, state, sections: Sequence[str], labelled, query, progress) -> dict:
    """``evaluate`` after its checks: the data, the Context, the metrics file kept from earlier sections, then
    one loop over the registry, metrics.json saved after each section (long for that reason)."""
    from mvae_jax import evaluation, networks
    from mvae_jax.data import load_dataset
    from mvae_jax.evaluation import sections as registry
    from mvae_jax.files import atomic_write_text, exclusive_lock

    if req.data_dir is not None:
        config = dataclasses.replace(config, data_dir=req.data_dir)
    dataset = load_dataset(config) if set(sections) - {"samples"} or req.sampler != "prior" else None
    ctx = evaluation.Context(
        config,
        model,
        state.params,
        int(state.epoch),
        dataset,
        scored=dataset.split(req.split) if dataset is not None else None,
        scored_labels=dataset.labels(req.split) if dataset is not None and labelled else None,
        train_labels=dataset.labels("train") if dataset is not None and labelled else None,
        out_dir=out_dir(req),
        options=req,
        **({"progress": progress} if progress is not None else {}),
    )
    path = ctx.out_dir / "metrics.json"
    recorded = [name for name, option in registry.options().items() if option.kind != "path"]
    flags = {k: getattr(req, k) for k in (*recorded, "seed", "step", "model_options")}
    # What this evaluation computes; each save merges it into metrics.json as it is on disk then (another
    # evaluation of the same checkpoint may have saved since), under an exclusive lock of the eval folder.
    own = {"epoch": ctx.epoch, "params": networks.count_params(state.params), "split": req.split}
    own["eval_flags"] = {**flags, "sections": list(sections)}
    own["section_seconds"], own["queries"], own["skipped"] = {}, {}, {}
    start, written = time.perf_counter(), {}

    def save():
        own["eval_seconds"] = round(time.perf_counter() - start, 1)
        with exclusive_lock(ctx.out_dir / METRICS_LOCK):
            merged = merge_metrics(read_metrics(path), own)
            atomic_write_text(path, json.dumps(merged, indent=2) + "\n")
        written.update(merged)

    for name in sections:
        began = time.perf_counter()
        try:
            own.update(registry.SECTIONS[name](ctx))
        except registry.Skipped as e:
            log.warning("section %s skipped: %s", name, e)
            own["skipped"][name] = str(e)
            save()
            continue
        except errors.Interrupted as e:
            raise errors.Interrupted(
                f"{e} during section {name}: {path} holds the sections finished before it "
                f"({', '.join(sections[: sections.index(name)]) or 'none'})",
                e.signal_number,
            ) from None
        own["section_seconds"][name] = round(time.perf_counter() - began, 1)
        log.info("section %s: %.1f s", name, own["section_seconds"][name])
        save()
    if query is not None:
        given, (values, named) = query
        own["queries"].update(registry.query(ctx, req.query, values, named, given))
    save()
    return written


def read_metrics(path: Path) -> dict:
    """metrics.json as it is on disk ({} if absent); a damaged one is moved aside (never lost) with a warning."""
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text())
        if isinstance(found, dict):
            return found
    except (ValueError, UnicodeDecodeError):
        pass
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    path.replace(aside)
    log.warning("%s is not a JSON object of metrics: moved to %s, written afresh", path, aside)
    return {}


def merge_metrics(on_disk: dict, own: dict) -> dict:
    """metrics.json after this evaluation's save: what is on disk for the same checkpoint (epoch) and split, with
    this evaluation's sections, timings and queries over it; the file of another checkpoint is replaced."""
    if on_disk.get("epoch") != own["epoch"] or on_disk.get("split", own["split"]) != own["split"]:
        return {k: v for k, v in own.items() if k not in ("queries", "skipped") or v}
    merged = {**on_disk, **own}
    for key in ("section_seconds", "queries", "skipped"):
        merged[key] = {**on_disk.get(key, {}), **own[key]}
    for name in own["section_seconds"]:  # run now: no longer skipped
        merged["skipped"].pop(name, None)
    for key in ("queries", "skipped"):
        if not merged[key]:
            del merged[key]  # present only once a query was evaluated, or a section skipped
    earlier = on_disk.get("eval_flags", {}).get("sections", [])
    merged["eval_flags"] = {
        **own["eval_flags"],
        "sections": [*earlier, *(n for n in own["eval_flags"]["sections"] if n not in earlier)],
    }
    return merged
