"""Evaluate a trained run: ``python eval.py --workdir=runs/jmvae_beta2.0``.

Rebuilds the model from the workdir's config.json and a checkpoint (the latest
by default) and writes <workdir>/eval/metrics.json (``--split=validation``:
<workdir>/eval_validation/, scoring the pairs that train.py --validation=N held
out, for model selection; the test pairs are for the final numbers) with the sections
  classifiers      test accuracy of the CNNs that score generated images
  coherence        "S->t": class of x_t generated from the subset S vs the true
                   class; "joint->t" reconstructions; "prior": agreement of
                   the modalities decoded from z ~ p(z)
  latent_accuracy  logistic regression on the means of q(z|S), per subset S
  log_likelihood   importance-weighted log p(x_m) per modality and the joint
  params           parameter count
and the figures tsne.png (posterior means), cross_modal.png (conditional
samples), samples.png (images decoded from z ~ p(z)) and curves.png (the
training loss terms of metrics.jsonl against the epoch). Data sets without
class labels (CelebA) have samples, curves and log_likelihood only; there
``--query="Female,Heavy_Makeup"`` draws faces generated from the named
attributes into query_<query>.png.
``python eval.py --compare runs/a runs/b`` draws evaluated runs side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
import signal
import sys
import time

from mvae_jax import cli, errors

log = logging.getLogger("eval")


def __getattr__(name):
    """``SECTIONS``: the section registry's names, in the order they run (read lazily: JAX loads with it)."""
    if name == "SECTIONS":
        return _section_names()
    raise AttributeError(f"module 'eval' has no attribute {name!r}")


def _section_names() -> tuple[str, ...]:
    from mvae_jax.evaluation import sections as registry

    return tuple(registry.SECTIONS)


SPLITS = ("validation", "test")


def eval_dir(workdir, split: str = "test") -> Path:
    """Where eval.py writes: <workdir>/eval for the test split, <workdir>/eval_<split> otherwise."""
    return Path(workdir) / ("eval" if split == "test" else f"eval_{split}")


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in _section_names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown sections {unknown}; allowed: {','.join(_section_names())}")
    return names


def _step(text: str) -> int | str:
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: an epoch (an integer) or best") from None


def make_parser() -> argparse.ArgumentParser:
    """eval.py's flags: the run, split and output, one add_argument each, which is why this function is long;
    then the options each section declares (``Section.options``)."""
    from mvae_jax.data import DATASETS
    from mvae_jax.evaluation import sections as registry
    from mvae_jax.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="eval.py")
    runs = parser.add_mutually_exclusive_group(required=True)
    runs.add_argument("--workdir", help="the run to evaluate: a workdir written by train.py (required, or --compare)")
    runs.add_argument(
        "--compare",
        nargs="+",
        metavar="WORKDIR",
        help="evaluated workdirs to draw side by side (tSNE) and tabulate; nothing is recomputed",
    )
    parser.add_argument(
        "--step",
        type=_step,
        default=None,
        help="epoch of the checkpoint to evaluate, or best: the epoch of the lowest validation objective "
        "(a run trained with --validation=N keeps it in best_checkpoint/) (default: latest)",
    )
    parser.add_argument(
        "--model",
        default=None,
        choices=sorted(MODELS),
        help="refuse the workdir unless its run is of this model (default: any; the saved one is used)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=sorted(DATASETS),
        help="refuse the workdir unless its run is on this data set (default: any)",
    )
    parser.add_argument("--data_dir", default=None, help="as in train.py (default: the run's own data_dir)")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="pairs to score: test, or validation (those train.py --validation=N held out; written "
        "to eval_validation/) (default: test)",
    )
    parser.add_argument(
        "--sections",
        type=_sections,
        default=None,
        help=f"what to compute, comma separated, from: {', '.join(_section_names())} (default: all; for data "
        "without class labels, samples and curves)",
    )
    parser.add_argument(
        "--query",
        default=None,
        help="attributes to generate images from, e.g. Female,Heavy_Makeup (Name, Name=0, Name=1; "
        "'Female' = Male=0); attributes not named are missing, not false",
    )
    parser.add_argument("--query_samples", type=int, default=64, help="images in the query grid (default 64)")
    parser.add_argument(
        "--query_steps",
        type=int,
        default=10,
        help="pseudo-Gibbs steps that impute the attributes not named (default 10; 0 = fill with 1/2)",
    )
    for name, option in registry.options().items():  # each section's options, declared beside it
        parser.add_argument(
            f"--{name}",
            type={"int": int, "float": float, "str": str, "path": str}[option.kind],
            choices=option.choices or None,
            default=option.default,
            help=f"{', '.join(registry.readers(name))}: {option.help}"
            + (f" (default: {option.shown_default()})" if option.shown_default() else ""),
        )
    parser.add_argument("--seed", type=int, default=0, help="seed of samples and estimates (default 0)")
    parser.add_argument(
        "--out",
        default=None,
        help="with --workdir: the folder the evaluation is written to (default <workdir>/eval, or eval_validation; "
        "for a run you cannot write to); with --compare: the tSNE figure written (default compare.png), prior "
        "samples going to <out>_samples.png",
    )
    parser.add_argument("--verbose", action="store_true", help="also show INFO logs of JAX, orbax and TensorFlow")
    cli.add_compilation_cache_flag(parser)
    return parser


def check_args(args) -> None:
    """ValueError naming the first bad flag, before any work."""
    if args.compare is None and args.workdir is None:
        raise ValueError("give --workdir=DIR (a run to evaluate) or --compare DIR [DIR ...]")
    if args.compare is not None and args.workdir is not None:
        raise ValueError("--compare draws runs that were evaluated already; leave out --workdir")
    from mvae_jax.evaluation import sections as registry

    for option in registry.options().values():
        error = option.error(getattr(args, option.name))
        if error:
            raise ValueError(f"--{error}")
    for name, low in (("seed", 0), ("query_samples", 1), ("query_steps", 0)):
        value = getattr(args, name)
        if value < low:
            raise ValueError(f"--{name}={value} is invalid; allowed: an integer >= {low}")


def out_dir(args) -> Path:
    """Where the evaluation of ``args.workdir`` is written: ``--out``, or the run's eval folder of the split."""
    return Path(args.out) if args.out else eval_dir(args.workdir, args.split)


def restore(args, training):
    """(config, model, state) of the checkpoint asked for. Without --step, the newest readable one: a damaged
    newer one is skipped with a warning naming it. With --step, a damaged one is one line naming the epoch
    and the readable ones."""

    if args.step == "best":
        (epoch,) = training.saved_epochs(args.workdir, training.BEST_DIR)
        return training.restore_model(args.workdir, epoch, training.BEST_DIR)
    steps = training.saved_epochs(args.workdir)
    wanted = [args.step] if args.step is not None else sorted(steps, reverse=True)
    skipped = []
    for epoch in wanted:
        try:
            restored = training.restore_model(args.workdir, epoch)
        except errors.ConfigMismatch:
            raise  # the settings, not the checkpoint, are wrong: one line, whichever epoch
        except Exception as e:  # orbax / tensorstore raise many types for damaged files
            skipped.append((epoch, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"))
            continue
        for bad, reason in skipped:
            log.warning(
                "the checkpoint of epoch %d in %s is unreadable (%s); evaluating epoch %d, the newest readable one",
                bad,
                args.workdir,
                reason,
                epoch,
            )
        return restored
    readable = []
    for epoch in (s for s in steps if s not in wanted):
        try:
            training.restore_model(args.workdir, epoch)
            readable.append(epoch)
        except Exception:  # listing the readable ones only
            continue
    epoch, reason = skipped[0]
    what = (
        f"the checkpoint of epoch {epoch} in {args.workdir} is unreadable ({reason})"
        if args.step is not None
        else f"no checkpoint in {args.workdir} is readable (epoch {epoch}: {reason})"
    )
    raise ValueError(
        f"{what}; readable checkpoints: {readable or 'none'}" + ("; evaluate one with --step=N" if readable else "")
    )


def check_request(args):
    """(sections, labelled, query) of an evaluation of ``args.workdir``, or ValueError / FileNotFoundError naming
    what is wrong, before any data or checkpoint is read."""
    from mvae_jax import evaluation, training
    from mvae_jax.config import load_config
    from mvae_jax.data import DATASETS
    from mvae_jax.evaluation import sections as registry
    from mvae_jax.files import unwritable

    config = load_config(args.workdir)
    for name in ("model", "dataset"):
        asked = getattr(args, name)
        if asked is not None and asked != getattr(config, name):
            raise ValueError(
                f"--{name}={asked} but workdir={args.workdir} holds a {name}={getattr(config, name)!r} "
                f"run (its config.json); evaluate that run without --{name}, or pick its workdir"
            )
    if args.step == "best" and not training.saved_epochs(args.workdir, training.BEST_DIR):
        raise FileNotFoundError(
            f"--step=best: workdir={args.workdir} has no {training.BEST_DIR}/: it is written by a run trained with "
            "--validation=N (the epoch of the lowest validation objective); evaluate the latest with no --step"
        )
    steps = training.saved_epochs(args.workdir)
    if args.step != "best" and (not steps or (args.step is not None and args.step not in steps)):
        wanted = "no checkpoint" if not steps else f"no checkpoint of epoch {args.step} (it has {steps})"
        raise FileNotFoundError(
            f"workdir={args.workdir} has {wanted} in {training.CHECKPOINT_DIR}/: a checkpoint is "
            "written at the end of each epoch, so train at least one epoch first"
        )
    contract = DATASETS[config.dataset]
    if args.split == "validation" and contract.splits == "held_out" and not config.validation:
        raise ValueError(
            f"--split=validation: workdir={args.workdir} was trained without a validation split; "
            "train with --validation=N (N training pairs held out) to have one, or use --split=test"
        )
    modalities = contract.modalities(config)
    labelled = contract.labelled
    sections = args.sections or (_section_names() if labelled else ("samples", "curves"))
    if not args.sections and not labelled:
        log.info(
            "sections %s left out: they need class labels, which dataset %s has not; %s run on request (--sections)",
            ", ".join(registry.LABELLED),
            config.dataset,
            ", ".join(s for s in _section_names() if s not in sections and s not in registry.LABELLED),
        )
    if not labelled and set(sections) & set(registry.LABELLED):
        raise ValueError(
            f"--sections={','.join(sections)}: "
            f"{', '.join(s for s in sections if s in registry.LABELLED)} require class labels, which "
            f"dataset={config.dataset!r} has not; allowed: log_likelihood, objective, samples, curves"
        )
    query = None
    if args.query is not None:
        if contract.query_modality is None:
            queryable = sorted(n for n, d in DATASETS.items() if d.query_modality is not None)
            raise ValueError(
                f"--query needs a data set with attributes ({', '.join(queryable)}); dataset={config.dataset!r} has "
                f"{[m.name for m in modalities]}"
            )
        names, vocabulary, aliases = contract.query_vocabulary(config)
        query = (contract.query_modality, evaluation.parse_query(args.query, names, vocabulary, aliases))
    reason = unwritable(out_dir(args))
    if reason is not None:
        raise PermissionError(
            f"cannot write the evaluation into {out_dir(args).absolute()}: {reason}; write it elsewhere with --out=DIR"
        )
    return sections, labelled, query


def evaluate(args) -> dict:
    """Run the sections asked for on the workdir's checkpoint; write and return metrics.json's content.

    Everything is checked first (``check_request``); the run's workdir lock is held shared meanwhile, so a
    train.py writing the run refuses to start, and this refuses while one writes it.
    """
    from mvae_jax.training.lock import WorkdirLock

    sections, labelled, query = check_request(args)
    lock = WorkdirLock(args.workdir, shared=True).acquire(create=False)
    try:
        return _evaluate(args, sections, labelled, query)
    finally:
        lock.release()


def _evaluate(args, sections, labelled, query) -> dict:
    """``evaluate`` after its checks, with the lock held.

    Long (about 70 lines) because it lays out the run for the sections in one place: restore, data, the
    progress bars, the Context, the metrics file kept from earlier sections, then one loop over the registry.
    """
    import contextlib
    import dataclasses

    from mvae_jax import evaluation, networks, training
    from mvae_jax.data import load_dataset
    from mvae_jax.evaluation import sections as registry
    from mvae_jax.files import atomic_write_text, exclusive_lock

    config, model, state = restore(args, training)
    if args.data_dir is not None:
        config = dataclasses.replace(config, data_dir=args.data_dir)
    dataset = load_dataset(config) if set(sections) - {"samples"} else None

    @contextlib.contextmanager
    def progress(total, desc):
        with cli.progress_bar(total, desc) as bar:
            yield bar.update
            bar.update(bar.total - bar.n)

    ctx = evaluation.Context(
        config,
        model,
        state.params,
        int(state.epoch),
        dataset,
        scored=dataset.split(args.split) if dataset is not None else None,
        scored_labels=dataset.labels(args.split) if dataset is not None and labelled else None,
        train_labels=dataset.labels("train") if dataset is not None and labelled else None,
        out_dir=out_dir(args),
        options=args,
        progress=progress,
    )
    path = ctx.out_dir / "metrics.json"
    recorded = [name for name, option in registry.options().items() if option.kind != "path"]
    flags = {k: getattr(args, k) for k in (*recorded, "seed", "step")}
    # What this evaluation computes; each save merges it into metrics.json as it is on disk then (another
    # eval.py of the same checkpoint may have saved since), under an exclusive lock of the eval folder.
    own = {"epoch": ctx.epoch, "params": networks.count_params(state.params), "split": args.split}
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
        own["queries"].update(registry.query(ctx, args.query, values, named, given))
    save()
    return written


METRICS_LOCK = ".metrics.lock"  # in the eval folder: held exclusively while metrics.json is read and replaced


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


def compare(args) -> str:
    """Draw evaluated runs side by side (tSNE into --out, prior samples into <out>_samples.png); return metrics tables.

    Nothing is recomputed: each run's eval/ folder is read.
    """
    from mvae_jax import figures
    from mvae_jax.config import load_config
    from mvae_jax.data import DATASETS
    from mvae_jax.evaluation import results_table
    from mvae_jax.evaluation.sections import SAMPLES_FILE, panel_titles

    rows, table, names, samples = [], [], (), []
    for workdir in args.compare:
        eval_dir = Path(workdir) / "eval"
        metrics = eval_dir / "metrics.json"
        if not metrics.is_file():
            raise FileNotFoundError(f"{workdir} has no eval/metrics.json: run python eval.py --workdir={workdir} first")
        config = load_config(workdir)
        name = f"{config.model} beta={config.beta}"
        names = names or tuple(m.name for m in DATASETS[config.dataset].modalities(config))
        table.append((name, json.loads(metrics.read_text())))
        if (eval_dir / figures.TSNE_FILE).is_file():
            rows.append((name, *figures.load_tsne(eval_dir / figures.TSNE_FILE)))
        if (eval_dir / SAMPLES_FILE).is_file():
            samples.append((name, figures.load_samples(eval_dir / SAMPLES_FILE)))
    out = Path(args.out or "compare.png")
    if rows:
        if len(rows) != len(args.compare):
            raise FileNotFoundError(
                f"only {len(rows)} of the {len(args.compare)} runs have eval/{figures.TSNE_FILE}: "
                "evaluate the others with the tsne section, or compare those only"
            )
        figures.plot_tsne(rows, out, titles=panel_titles(names))
    if samples:
        figures.plot_image_rows(
            [(f"{name}: {m}", images) for name, grid in samples for m, images in grid.items()],
            out.with_name(f"{out.stem}_samples.png"),
            "samples from z ~ p(z)",
        )
    return results_table(table)


def main(argv=None) -> None:
    args = make_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    with cli.user_errors("eval.py"), cli.interrupt_on_signals():
        check_args(args)
        cli.enable_compilation_cache(args.compilation_cache)
        if args.compare is not None:
            print(compare(args))
            return
        metrics = evaluate(args)
        print(json.dumps(metrics, indent=2))
        print(f"eval.py: wrote {out_dir(args)} in {metrics['eval_seconds']:.0f} s", file=sys.stderr)


def _exit_at_once_when_interrupted(status) -> None:
    """A signal stops eval.py in the middle of a computation that XLA's threads go on running; Python's normal
    shutdown around them crashed (a segfault after the one-line message). Everything worth keeping is already
    saved (metrics.json after each section, atomically; the kernel drops the workdir lock), so exit at once."""
    if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        _exit_at_once_when_interrupted(e.code)
        raise
