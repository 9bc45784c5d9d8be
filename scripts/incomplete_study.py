"""The few-labels study of docs/INCOMPLETE.md: the label w present for a fraction of the training examples.

    python scripts/incomplete_study.py --data_dir=../shared/datasets
    python scripts/incomplete_study.py --data_dir=../shared/datasets --models=mvae,mopoe --fractions=1,0.01 \
        --epochs=5 --train_flags="--train_examples=20000"

For each fraction f of labelled examples and each model it trains the seeds as one seed sweep,
``train.py --missing=w:(1 - f) --seed=0,1`` (x and y always present; f = 1 is the complete run), with
``--validation`` training pairs held out (complete) for model selection, then scores each seed's
best-validation epoch once on the test pairs: ``eval.py --step=best --sections=coherence,latent_accuracy``.
The mask is drawn from ``--missing_seed`` 0 for every seed (the seeds vary initialisation, order and noise).
It writes the report (``--out``, default docs/INCOMPLETE_LABELS.md: x->w, y->w and the latent accuracy of
q(z|x) and q(z|y) against the fraction, mean ± std over the seeds, and the fewest labels with which each
model reaches 90% x->w) and its figure (docs/incomplete_labels.png). A run trained to ``--epochs`` or
evaluated already is kept, so the script resumes by being started again; ``--summarize_only`` writes the
report from what there is. Every command is printed as it starts and listed in the report.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
import shlex
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.results import epochs_done, machine_of  # noqa: E402

MODELS = ("mvae", "telbo", "pemvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus", "dmvae", "cmvae")
SECTIONS = "coherence,latent_accuracy"
COLUMNS = (("coherence", "x->w"), ("coherence", "y->w"), ("latent_accuracy", "x"), ("latent_accuracy", "y"))
TARGET = 0.9  # the x->w coherence the report asks each model to reach


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None, help="as in train.py")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma separated, of the models that accept --missing"
    )
    parser.add_argument(
        "--fractions", default="1,0.1,0.01,0.001", help="labelled fractions, comma separated, in (0, 1]"
    )
    parser.add_argument("--seeds", default="0,1", help="comma separated; tables give mean ± std over them")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--validation", type=int, default=5000, help="training pairs held out (complete)")
    parser.add_argument("--train_flags", default="", help="more train.py flags for every run (the report says so)")
    parser.add_argument("--eval_flags", default="", help="more eval.py flags for every run (the report says so)")
    parser.add_argument("--runs", default="runs/incomplete_labels", help="parent of the workdirs")
    parser.add_argument("--out", default="docs/INCOMPLETE_LABELS.md")
    parser.add_argument("--summarize_only", action="store_true", help="run nothing: write the report")
    return parser


def check_args(parser, args) -> tuple[list[str], list[float], list[int]]:
    """(models, fractions, seeds), or parser.error naming the bad flag and what is allowed."""
    from mvae_jax.models import INCOMPLETE

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in INCOMPLETE for m in models):
        parser.error(f"--models={args.models!r}: allowed: models that accept --missing: {','.join(INCOMPLETE)}")
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--fractions={args.fractions!r} / --seeds={args.seeds!r}: numbers, comma separated")
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        parser.error(f"--fractions={args.fractions!r}: allowed: numbers in (0, 1], e.g. 1,0.1,0.01")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        parser.error(f"--seeds={args.seeds!r}: allowed: distinct integers >= 0, e.g. 0,1")
    if args.epochs < 1 or args.validation < 1:
        parser.error("--epochs and --validation: allowed: integers >= 1 (selection needs a validation split)")
    return models, sorted(fractions, reverse=True), seeds


def label(fraction: float) -> str:
    return f"labels{fraction:g}"


def workdir(args, fraction: float, model: str) -> Path:
    return Path(args.runs) / label(fraction) / model


def train_command(args, fraction, model, seeds) -> list[str]:
    command = [
        sys.executable,
        "train.py",
        f"--model={model}",
        f"--epochs={args.epochs}",
        f"--validation={args.validation}",
        f"--seed={','.join(map(str, seeds))}",
        f"--workdir={workdir(args, fraction, model)}",
    ]
    if fraction < 1:
        command.append(f"--missing=w:{1 - fraction:.6g}")
    if args.data_dir:
        command.append(f"--data_dir={args.data_dir}")
    return command + shlex.split(args.train_flags)


def eval_command(args, fraction, model, seed) -> list[str]:
    run = workdir(args, fraction, model) / f"seed{seed}"
    return [
        sys.executable,
        "eval.py",
        f"--workdir={run}",
        "--step=best",
        f"--seed={seed}",
        f"--sections={SECTIONS}",
        *shlex.split(args.eval_flags),
    ]


def metrics(args, fraction, model, seed) -> dict | None:
    path = ROOT / workdir(args, fraction, model) / f"seed{seed}" / "eval" / "metrics.json"
    if not path.exists():
        return None
    found = json.loads(path.read_text())
    return found if all(section in found for section, _ in COLUMNS) else None


def run(command: list[str], log: Path) -> bool:
    print("$", shlex.join(command), flush=True)
    with open(log, "a") as out:
        return subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode == 0


def main(argv=None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    models, fractions, seeds = check_args(parser, args)
    logs = ROOT / args.runs / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed = []
    if not args.summarize_only:
        for fraction in fractions:
            for model in models:
                pending = [s for s in seeds if epochs_done(workdir(args, fraction, model) / f"seed{s}") < args.epochs]
                log = logs / f"{label(fraction)}_{model}.log"
                if pending and not run(train_command(args, fraction, model, pending), log):
                    failed.append(f"{label(fraction)} {model}: training (see {log})")
                    continue
                for seed in seeds:
                    if metrics(args, fraction, model, seed) is None and not run(
                        eval_command(args, fraction, model, seed), log
                    ):
                        failed.append(f"{label(fraction)} {model} seed {seed}: evaluation (see {log})")
    write_report(args, models, fractions, seeds)
    if failed:
        raise SystemExit("failed (the report lists them as missing):\n" + "\n".join(failed))


def summary(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def write_report(args, models, fractions, seeds) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = {}  # {(model, fraction): {column: (mean, std, n)}}
    epochs = {}
    for model in models:
        for fraction in fractions:
            found = [m for m in (metrics(args, fraction, model, s) for s in seeds) if m is not None]
            if found:
                table[model, fraction] = {
                    column: (*summary([m[column[0]][column[1]] for m in found]), len(found)) for column in COLUMNS
                }
                epochs[model, fraction] = [m.get("epoch") for m in found]
    out = ROOT / args.out
    figure = out.parent / "incomplete_labels.png"
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4.2 * len(COLUMNS), 3.6), sharex=True)
    for ax, column in zip(axes, COLUMNS):
        for model in models:
            xs = [f for f in fractions if (model, f) in table]
            if xs:
                ys = [table[model, f][column][0] for f in xs]
                es = [table[model, f][column][1] for f in xs]
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=model)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("fraction of training examples with the label w")
        name = f"{column[1]} coherence" if column[0] == "coherence" else f"latent accuracy of q(z|{column[1]})"
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if column == ("coherence", "x->w"):
            ax.axhline(TARGET, color="grey", linestyle=":", linewidth=1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    plt.close(fig)

    # Labels in the training split: trimodal has 60,000 training pairs, less the validation hold-out.
    num_train = 60_000 - args.validation
    for flag in shlex.split(args.train_flags):
        if flag.startswith("--train_examples="):
            num_train = int(flag.split("=", 1)[1]) or num_train
    lines = [
        "# Few labels: the trimodal set with the label w on a fraction of the training examples",
        "",
        f"Generated by `python scripts/incomplete_study.py {shlex.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d')}"
        f" ({machine_of(Path(args.runs), not args.summarize_only)}). The reading is in [INCOMPLETE.md](INCOMPLETE.md).",
        "",
        f"x and y are present in every training example; w in a fraction of them (`train.py --missing=w:(1 - f)`, "
        f"mask seed 0). {args.epochs} epochs, {len(seeds)} seeds ({','.join(map(str, seeds))}) as one seed sweep, "
        f"the epoch of the lowest validation objective ({args.validation} complete held-out pairs) scored once on "
        f"the test pairs (all 10,000 unless the eval.py flags say fewer). The latent accuracy is that of a linear "
        f"probe trained on the posterior means of complete training pairs with their labels (eval.py's protocol), "
        "so it measures the representation, not the labels the model saw. Extra train.py flags: "
        f"`{args.train_flags or 'none'}`; eval.py flags: `{args.eval_flags or 'none'}`. Mean ± std over the seeds.",
        "",
        "![x->w, y->w and the latent accuracy against the labelled fraction](incomplete_labels.png)",
        "",
        "| model | labelled | "
        + " | ".join(f"{c[1]} {'coh.' if c[0] == 'coherence' else 'latent acc.'}" for c in COLUMNS)
        + " | best epochs |",
        "|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    for model in models:
        for fraction in fractions:
            cells = table.get((model, fraction))
            count = "" if num_train is None else f" ({round(fraction * num_train):,} labels)"
            if cells is None:
                lines.append(f"| {model} | {fraction:g}{count} | " + "missing | " * len(COLUMNS) + " |")
                continue
            lines.append(
                f"| {model} | {fraction:g}{count} | "
                + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s, _ in cells.values())
                + f" | {','.join(map(str, epochs[model, fraction]))} |"
            )
    lines += ["", f"The fewest labels with which a model's mean x->w coherence reaches {TARGET}:", ""]
    for model in models:
        measured = [f for f in fractions if (model, f) in table]
        reached = [f for f in measured if table[model, f][("coherence", "x->w")][0] >= TARGET]
        text = f"a fraction of {min(reached):g}" if reached else "not reached at these fractions"
        absent = [f"{f:g}" for f in fractions if f not in measured]
        lines.append(f"- {model}: {text}" + (f" (not run at {', '.join(absent)})" if absent else ""))
    lines += ["", "Commands (each train.py is followed by eval.py for each seed):", "", "```bash"]
    for fraction in fractions:
        for model in models:
            lines.append("python " + shlex.join(train_command(args, fraction, model, seeds)[1:]))
    lines += [
        shlex.join(
            [
                "python",
                "eval.py",
                "--workdir=RUN/seedS",
                "--step=best",
                "--seed=S",
                f"--sections={SECTIONS}",
                *shlex.split(args.eval_flags),
            ]
        ),
        "```",
        "",
    ]
    out.write_text("\n".join(lines))
    print(f"wrote {out} and {figure}", flush=True)


if __name__ == "__main__":
    main()
