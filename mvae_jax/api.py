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
import types

from mvae_jax import errors, tracking
from mvae_jax import options as opt

log = logging.getLogger("mvae_jax.api")

SPLITS = ("validation", "test")

GENERAL_OPTIONS = (
    opt.choice(
        "split",
        "test",
        SPLITS,
        "pairs to score: test, or validation (those train.py --validation=N held out; written to eval_validation/)",
    ),
    opt.integer("seed", 0, "seed of samples and estimates", 0),
    opt.Option(
        "model_options",
        "str",
        "",
        "settings of the run's model that change no parameter, only its inference, for this evaluation: "
        "NAME=VALUE, comma separated (e.g. jnf_hmc_steps=30 for JNF's subsets on a CPU); recorded in metrics.json",
        "NAME=VALUE pairs, comma separated",
        lambda v: isinstance(v, str) and all(part.count("=") == 1 for part in v.split(",") if v),
        empty="the run's own",
    ),
    opt.integer("query_samples", 64, "images in the query grid", 1),
    opt.integer("query_steps", 10, "pseudo-Gibbs steps that impute the attributes not named (0 = fill with 1/2)", 0),
    opt.Option(
        "tracker",
        "str",
        "",
        "trackers the metrics and figures also go to, as train.py's --tracker (tensorboard, mlflow, wandb, comma "
        "separated, or none): the run's own (its MLflow run, its W&B run)",
        "tensorboard, mlflow, wandb (comma separated, each once), or none",
        lambda v: isinstance(v, str) and (not v or tracking.allowed(_names(v))),
        empty="the run's --tracker",
    ),
)
"""Options of every evaluation, whatever its sections (eval.py's flags of the same names)."""

RUN_FIELDS = ("sections", "step", "query", "data_dir", "out", "model", "dataset", "plugins")
"""The other keywords of ``evaluate``: what to evaluate and where to write (default None: see ``evaluate``)."""

METRICS_LOCK = ".metrics.lock"  # in the eval folder: held exclusively while metrics.json is read and replaced


def with_model_options(config, text: str):
    """``config`` with eval's ``--model_options`` (NAME=VALUE, comma separated) applied; ValueError naming a
    setting that is not an inference setting of the run's model (``Option.inference``), or a bad value."""
    if not text:
        return config
    from mvae_jax.models import OPTIONS

    allowed = {o.name: o for o in OPTIONS.get(config.model, ()) if o.inference}
    values = {}
    for part in text.split(","):
        name, _, raw = part.partition("=")
        option = allowed.get(name.strip())
        if option is None:
            raise ValueError(
                f"model_options={text!r}: {name.strip()!r} is not a setting eval.py may change for "
                f"model={config.model!r}; allowed: {', '.join(allowed) or 'none (this model has none)'}"
            )
        try:
            value = {"int": int, "float": float}.get(option.kind, str)(raw.strip())
        except ValueError:
            value = raw.strip()
        error = option.error(value)
        if error:
            raise ValueError(f"model_options={text!r}: {error}")
        values[option.name] = value
    return dataclasses.replace(config, **values)


def options() -> dict[str, opt.Option]:
    """{name: Option} of ``evaluate``'s checked keywords: the general ones, then every section's."""
    from mvae_jax.evaluation import sections as registry

    return {**{o.name: o for o in GENERAL_OPTIONS}, **registry.options()}


def section_names() -> tuple[str, ...]:
    from mvae_jax.evaluation import sections as registry

    return tuple(registry.SECTIONS)


def eval_dir(workdir, split: str = "test") -> Path:
    """Where an evaluation is written: <workdir>/eval for the test split, <workdir>/eval_<split> otherwise."""
    return Path(workdir) / ("eval" if split == "test" else f"eval_{split}")


def request(workdir, **given) -> types.SimpleNamespace:
    """The evaluation of ``workdir`` asked for by ``given`` (``evaluate``'s keywords), every other field at its
    default; TypeError naming an unknown keyword, ValueError naming a bad value and what is allowed."""
    checked = options()
    unknown = sorted(set(given) - set(checked) - set(RUN_FIELDS))
    if unknown:
        raise TypeError(f"evaluate() got unknown keywords {unknown}; allowed: {', '.join([*RUN_FIELDS, *checked])}")
    fields = {name: None for name in RUN_FIELDS}
    fields.update({name: option.default for name, option in checked.items()})
    fields.update(given)
    fields["workdir"] = None if workdir is None else str(workdir)
    names = fields["plugins"] or ()
    fields["plugins"] = tuple(n.strip() for n in names.split(",") if n.strip()) if isinstance(names, str) else names
    from mvae_jax import plugins

    plugins.load(fields["plugins"])  # their sections are then known to the check (the run's own: load_config)
    req = types.SimpleNamespace(**fields)
    check(req)
    return req


def check(req) -> None:
    """ValueError naming the first bad field of the request ``req`` (eval.py's parsed flags are one)."""
    for option in options().values():
        error = option.error(getattr(req, option.name))
        if error:
            raise ValueError(f"--{error}")
    if req.sections is not None:
        try:
            req.sections = parse_sections(req.sections)
        except ValueError as e:
            raise ValueError(f"sections={e}") from None
    if req.step is not None and req.step != "best" and not (opt.is_int(req.step) and req.step >= 1):
        raise ValueError(f"step={req.step!r} is invalid; allowed: an epoch (an integer >= 1), best, or None (latest)")


def parse_sections(given) -> tuple[str, ...]:
    """Section names from ``"a,b"`` or a sequence; ValueError naming the unknown ones and the allowed."""
    names = tuple(s.strip() for s in given.split(",")) if isinstance(given, str) else tuple(given)
    names = tuple(s for s in names if s)
    unknown = [s for s in names if s not in section_names()]
    if unknown or not names:
        raise ValueError(f"{given!r}: unknown sections {unknown}; allowed: {','.join(section_names())}")
    return names


def out_dir(req) -> Path:
    """Where the evaluation of ``req.workdir`` is written: ``out``, or the run's eval folder of the split."""
    return Path(req.out) if req.out else eval_dir(req.workdir, req.split)


def best_epoch(workdir) -> int:
    """The epoch held in the run's best_checkpoint/ (``--validation=N``); FileNotFoundError if it has none."""
    from mvae_jax import training

    epochs = training.saved_epochs(workdir, training.BEST_DIR)
    if not epochs:
        raise FileNotFoundError(
            f"step=best: workdir={workdir} has no {training.BEST_DIR}/: it is written by a run trained with "
            "--validation=N (the epoch of the lowest validation objective); evaluate the latest with no step"
        )
    return epochs[-1]


def restore(req):
    """(config, model, state) of the checkpoint asked for. Without a step, the newest readable one: a damaged
    newer one is skipped with a warning naming it. With a step, a damaged one is one line naming the epoch
    and the readable ones."""
    from mvae_jax import training

    if req.step == "best":
        return training.restore_model(req.workdir, best_epoch(req.workdir), training.BEST_DIR)
    steps = training.saved_epochs(req.workdir)
    wanted = [req.step] if req.step is not None else sorted(steps, reverse=True)
    skipped = []
    for epoch in wanted:
        try:
            restored = training.restore_model(req.workdir, epoch)
        except errors.ConfigMismatch:
            raise  # the settings, not the checkpoint, are wrong: one line, whichever epoch
        except Exception as e:  # orbax / tensorstore raise many types for damaged files
            skipped.append((epoch, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"))
            continue
        for bad, reason in skipped:
            log.warning(
                "the checkpoint of epoch %d in %s is unreadable (%s); evaluating epoch %d, the newest readable one",
                *(bad, req.workdir, reason, epoch),
            )
        return restored
    readable = []
    for epoch in (s for s in steps if s not in wanted):
        try:
            training.restore_model(req.workdir, epoch)
            readable.append(epoch)
        except Exception:  # listing the readable ones only
            continue
    epoch, reason = skipped[0]
    what = (
        f"the checkpoint of epoch {epoch} in {req.workdir} is unreadable ({reason})"
        if req.step is not None
        else f"no checkpoint in {req.workdir} is readable (epoch {epoch}: {reason})"
    )
    raise ValueError(
        f"{what}; readable checkpoints: {readable or 'none'}" + ("; evaluate one with --step=N" if readable else "")
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def trackers_of(req, config) -> tuple[str, ...]:
    """The trackers an evaluation goes to: ``tracker`` if given, else the run's ``--tracker``."""
    return _names(req.tracker) if req.tracker else tuple(config.tracker)


def _check_checkpoints(req) -> None:
    """FileNotFoundError if the checkpoint asked for is not in the workdir."""
    from mvae_jax import training

    if req.step == "best":
        best_epoch(req.workdir)
        return
    steps = training.saved_epochs(req.workdir)
    if not steps or (req.step is not None and req.step not in steps):
        wanted = "no checkpoint" if not steps else f"no checkpoint of epoch {req.step} (it has {steps})"
        raise FileNotFoundError(
            f"workdir={req.workdir} has {wanted} in {training.CHECKPOINT_DIR}/: a checkpoint is "
            "written at the end of each epoch, so train at least one epoch first"
        )


def check_request(req, config=None):
    """(sections, labelled, query) of the evaluation ``req``, or ValueError / FileNotFoundError naming what is
    wrong, before any data or checkpoint is read. ``config``: the run's (a state evaluated from memory), else
    read from the workdir, whose checkpoint must exist."""
    from mvae_jax import evaluation
    from mvae_jax.config import load_config
    from mvae_jax.data import DATASETS
    from mvae_jax.evaluation import sections as registry
    from mvae_jax.files import unwritable

    if config is None:
        config = load_config(req.workdir)
        for name in ("model", "dataset"):
            asked = getattr(req, name)
            if asked is not None and asked != getattr(config, name):
                raise ValueError(
                    f"--{name}={asked} but workdir={req.workdir} holds a {name}={getattr(config, name)!r} "
                    f"run (its config.json); evaluate that run without --{name}, or pick its workdir"
                )
        _check_checkpoints(req)
    config = with_model_options(config, req.model_options)  # a bad one is named before any work
    tracking.check(trackers_of(req, config))
    contract = DATASETS[config.dataset]
    if req.split == "validation" and contract.splits == "held_out" and not config.validation:
        raise ValueError(
            f"--split=validation: workdir={req.workdir} was trained without a validation split; "
            "train with --validation=N (N training pairs held out) to have one, or use --split=test"
        )
    labelled = contract.labelled
    sections = req.sections or (section_names() if labelled else ("samples", "curves"))
    if not req.sections:  # the defaults leave out the sections that do not apply to this model (clusters)
        from mvae_jax.models import get_model

        model = get_model(config, contract.modalities(config))
        applies = {name: getattr(registry.SECTIONS.get(name), "applies", None) for name in sections}
        sections = tuple(name for name in sections if applies[name] is None or applies[name](model))
    if not req.sections and not labelled:
        log.info(
            "sections %s left out: they need class labels, which dataset %s has not; %s run on request (--sections)",
            ", ".join(registry.labelled_sections()),
            config.dataset,
            ", ".join(s for s in section_names() if s not in sections and s not in registry.labelled_sections()),
        )
    if not labelled and set(sections) & set(registry.labelled_sections()):
        raise ValueError(
            f"--sections={','.join(sections)}: "
            f"{', '.join(s for s in sections if s in registry.labelled_sections())} require class labels, which "
            f"dataset={config.dataset!r} has not; allowed: log_likelihood, objective, samples, curves"
        )
    query = None
    if req.query is not None:
        if contract.query_modality is None:
            queryable = sorted(n for n, d in DATASETS.items() if d.query_modality is not None)
            raise ValueError(
                f"--query needs a data set with attributes ({', '.join(queryable)}); dataset={config.dataset!r} has "
                f"{[m.name for m in contract.modalities(config)]}"
            )
        names, vocabulary, aliases = contract.query_vocabulary(config)
        query = (contract.query_modality, evaluation.parse_query(req.query, names, vocabulary, aliases))
    reason = unwritable(out_dir(req))
    if reason is not None:
        raise PermissionError(
            f"cannot write the evaluation into {out_dir(req).absolute()}: {reason}; write it elsewhere with --out=DIR"
        )
    return tuple(sections), labelled, query


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
