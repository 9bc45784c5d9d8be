"""Evaluate a trained run: ``python eval.py --workdir=runs/jmvae_beta2.0`` (installed: ``mvae-eval --workdir=...``).

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

from mvae_jax import cli

log = logging.getLogger("eval")


def __getattr__(name):
    """``SECTIONS``: the section registry's names, in the order they run (read lazily: JAX loads with it)."""
    if name == "SECTIONS":
        return _section_names()
    raise AttributeError(f"module 'eval' has no attribute {name!r}")


def _section_names() -> tuple[str, ...]:
    from mvae_jax.evaluation import sections as registry

    return tuple(registry.SECTIONS)


def _sections(text: str) -> tuple[str, ...]:
    from mvae_jax import api

    try:
        return api.parse_sections(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _step(text: str) -> int | str:
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: an epoch (an integer) or best") from None


def make_parser() -> argparse.ArgumentParser:
    """eval.py's flags: the run and output, one add_argument each, which is why this function is long; then the
    general options (``api.GENERAL_OPTIONS``) and those each section declares (``Section.options``)."""
    from mvae_jax import api
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
        "--plugins",
        default="",
        help="your own modules, comma separated import paths, imported first: their eval sections join "
        "--sections (mvae_jax.plugins); those of the run's config.json are imported anyway",
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
    general = {o.name for o in api.GENERAL_OPTIONS}
    for name, option in api.options().items():  # the general options, then each section's, declared beside it
        readers = "" if name in general else f"{', '.join(registry.readers(name))}: "
        parser.add_argument(
            f"--{name}",
            type={"int": int, "float": float, "str": str, "path": str}[option.kind],
            choices=option.choices or None,
            default=option.default,
            help=f"{readers}{option.help}"
            + (f" (default: {option.shown_default()})" if option.shown_default() else ""),
        )
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
    from mvae_jax import api

    if args.compare is None and args.workdir is None:
        raise ValueError("give --workdir=DIR (a run to evaluate) or --compare DIR [DIR ...]")
    if args.compare is not None and args.workdir is not None:
        raise ValueError("--compare draws runs that were evaluated already; leave out --workdir")
    api.check(args)


def evaluate(args) -> dict:
    """``mvae_jax.api.evaluate`` of ``args.workdir`` with the flags given, progress bars on stderr."""
    from mvae_jax import api

    given = {k: getattr(args, k) for k in (*api.RUN_FIELDS, *api.options())}
    return api.evaluate(args.workdir, progress=True, **given)


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
    from mvae_jax import api

    cli.preload_plugins("eval.py", sys.argv[1:] if argv is None else argv, workdir_config=True)
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
        print(f"eval.py: wrote {api.out_dir(args)} in {metrics['eval_seconds']:.0f} s", file=sys.stderr)


def _exit_at_once_when_interrupted(status) -> None:
    """A signal stops eval.py in the middle of a computation that XLA's threads go on running; Python's normal
    shutdown around them crashed (a segfault after the one-line message). Everything worth keeping is already
    saved (metrics.json after each section, atomically; the kernel drops the workdir lock), so exit at once."""
    if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def run() -> None:
    """The console script ``mvae-eval`` and ``python eval.py``: ``main`` on the command line's arguments."""
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        _exit_at_once_when_interrupted(e.code)
        raise


if __name__ == "__main__":
    run()
