"""An evaluation's request: what ``api.evaluate`` and eval.py are asked to do, checked before any work.

``request(workdir, **given)`` turns ``evaluate``'s keywords (eval.py's flags) into one request, refusing an
unknown keyword or a bad value; ``check_request`` then checks it against the run (its config, its
checkpoints, its data set's contract, the eval folder) and gives the sections to run. ``restore`` reads the
checkpoint asked for. :mod:`mvae_jax.api` re-exports every name here; what runs the sections is there.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
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
    from mvae_jax.config import load_config
    from mvae_jax.data import DATASETS
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
    sections = _sections(req, config, contract)
    query = _query(req, config, contract)
    reason = unwritable(out_dir(req))
    if reason is not None:
        raise PermissionError(
            f"cannot write the evaluation into {out_dir(req).absolute()}: {reason}; write it elsewhere with --out=DIR"
        )
    return tuple(sections), labelled, query


def _sections(req, config, contract) -> tuple[str, ...]:
    """The sections ``req`` asks for, or by default every section that applies to the run's model and data
    (those that need class labels left out where the data set has none, said in one line); ValueError for a
    section asked for that needs labels the data set has not."""
    from mvae_jax.evaluation import sections as registry

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
    return tuple(sections)


def _query(req, config, contract):
    """(query modality, parsed query) of ``--query``, or None; ValueError where the data set has no
    attributes or the query names unknown ones."""
    from mvae_jax import evaluation
    from mvae_jax.data import DATASETS

    if req.query is None:
        return None
    if contract.query_modality is None:
        queryable = sorted(n for n, d in DATASETS.items() if d.query_modality is not None)
        raise ValueError(
            f"--query needs a data set with attributes ({', '.join(queryable)}); dataset={config.dataset!r} has "
            f"{[m.name for m in contract.modalities(config)]}"
        )
    names, vocabulary, aliases = contract.query_vocabulary(config)
    return contract.query_modality, evaluation.parse_query(req.query, names, vocabulary, aliases)
