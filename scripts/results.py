"""Train every model on the trimodal data with one budget and seed, evaluate each, write docs/RESULTS.md.

    python scripts/results.py --data_dir=../shared/datasets

Runs ``train.py`` and ``eval.py`` (the same commands a user types, printed
as they start) for each model into ``--runs/<model>``, then ``eval.py
--compare`` for the side-by-side tSNE figure, and writes a Markdown report
with the table, the figure and every command. A run already trained to
``--epochs`` is resumed, not retrained, so an interrupted script can simply
be started again.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shlex
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("jmvae", "telbo", "mvae", "pemvae", "mmvae", "mopoe")


def run(command: list[str], log) -> float:
    """Run a command from the repository root, its output appended to ``log``; seconds taken."""
    print("$", shlex.join(command), flush=True)
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def main(argv=None) -> None:
    """The script's steps in the order they run (long: a script, read top to bottom)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None, help="as in train.py")
    parser.add_argument("--models", default=",".join(MODELS), help="comma separated (default: all six)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/results", help="parent of the per-model workdirs")
    parser.add_argument("--iw_samples", type=int, default=1000)
    parser.add_argument("--ll_points", type=int, default=500, help="test pairs of the likelihoods (0: all 10,000)")
    parser.add_argument("--tsne_points", type=int, default=2000)
    parser.add_argument("--out", default="docs/RESULTS.md")
    parser.add_argument(
        "--train_flags",
        default="",
        help="more train.py flags for every run (e.g. smaller networks; the report says so)",
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; allowed: {','.join(MODELS)}")

    python = sys.executable
    runs = Path(args.runs)  # paths relative to the repository root, where the commands run
    (ROOT / runs).mkdir(parents=True, exist_ok=True)
    out = ROOT / args.out
    figure = Path(args.out).parent / "results_tsne.png"
    commands, rows, times = [], [], {}
    with open(ROOT / runs / "results.log", "a") as log:
        for model in models:
            workdir = runs / model
            train = [
                python,
                "train.py",
                f"--model={model}",
                f"--beta={args.beta}",
                f"--epochs={args.epochs}",
                f"--seed={args.seed}",
                f"--workdir={workdir}",
            ]
            if args.data_dir:
                train.append(f"--data_dir={args.data_dir}")
            train += shlex.split(args.train_flags)
            evaluate = [
                python,
                "eval.py",
                f"--workdir={workdir}",
                f"--iw_samples={args.iw_samples}",
                f"--ll_points={args.ll_points}",
                f"--tsne_points={args.tsne_points}",
                f"--seed={args.seed}",
            ]
            run(train, log)
            if evaluated(workdir, args):
                print(f"  {workdir} was evaluated with these flags already: kept", flush=True)
            else:
                run(evaluate, log)
            times[model] = json.loads((ROOT / workdir / "eval" / "metrics.json").read_text())["eval_seconds"]
            commands += [train, evaluate]
            rows.append((model, workdir))
        compare = [python, "eval.py", "--compare", *[str(w) for _, w in rows], f"--out={figure}"]
        run(compare, log)
        commands.append(compare)

    from mvae_jax.evaluation import results_table

    rows = [(m, ROOT / w) for m, w in rows]
    table = results_table([(m, json.loads((w / "eval" / "metrics.json").read_text())) for m, w in rows])
    epochs = {m: [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()] for m, w in rows}
    lines = [
        "# Results: every model on the trimodal data, one budget",
        "",
        f"Budget: {args.epochs} epochs of the 60,000 training pairs, batch 128, Adam 1e-3, beta {args.beta}, "
        f"seed {args.seed}, "
        + (
            f"train.py flags `{args.train_flags}`, "
            if args.train_flags
            else "default widths (512, 512) and latent 20; "
        )
        + "each model's own defaults otherwise "
        "(MMVAE K = 10, PEMVAE 1 warm-up epoch, MVAE 1 random subset). Coherence and latent accuracy on all "
        f"10,000 test pairs; log-likelihoods on the first {args.ll_points or 10000} test pairs with "
        f"K = {args.iw_samples} importance samples, z for log p(x_m) from q(z|x_m) and for the joint from "
        "q(z|x,y,w). Machine: " + _machine() + ".",
        "",
        "Columns: coherence `S->t` is the accuracy of the class of x_t generated from the subset S (scored by "
        "the CNNs below), `joint->t` the same from all three (reconstruction), `prior` the agreement of x, y, w "
        "decoded from z ~ p(z); latent accuracy `S` is a logistic regression on the means of q(z|S); "
        "log-likelihood `m` is log p(x_m). "
        "The trimodal images are gray levels scored with the Bernoulli likelihood (not binarized), so `ll x` "
        "is not comparable with binarized-MNIST numbers (see the README's JMVAE reproduction for those).",
        "",
        table,
        "",
        "Scoring classifiers (test accuracy): "
        + ", ".join(
            f"{k} {v:.4f}"
            for k, v in json.loads((rows[0][1] / "eval" / "metrics.json").read_text()).get("classifiers", {}).items()
        )
        + ".",
        "",
        "Time (seconds, wall clock; other jobs shared the 2 cores, so these are upper bounds): training is the "
        "sum of the epoch times in metrics.jsonl, evaluation the time eval.py spent on its sections "
        "(the first one also "
        "trained the scoring CNNs unless they were cached).",
        "",
        "| model | train s | samples/s (best epoch) | eval s |",
        "|---|---|---|---|",
        *[
            f"| {m} | {sum(e['time_s'] for e in epochs[m]):.0f} | {max(e['samples_per_s'] for e in epochs[m]):.0f} "
            f"| {times[m]:.0f} |"
            for m, _ in rows
        ],
        "",
        f"![tSNE of posterior means]({figure.name})",
        "",
        "tSNE of the posterior means of the first "
        f"{args.tsne_points} test pairs: rows are models, columns q(z|x,y,w), q(z|x), q(z|y); colour = class.",
        "",
        "## Commands",
        "",
        "Everything above comes from these commands, which "
        f"`python scripts/results.py{' --data_dir=' + args.data_dir if args.data_dir else ''}"
        f"{'' if args.epochs == 4 else f' --epochs={args.epochs}'}` runs in this order (from the repository "
        "root). A training already at its epochs, or an evaluation already done with the same flags, is kept, "
        "so an interrupted script resumes where it stopped.",
        "",
        "```",
        *[shlex.join([("python" if c[0] == python else c[0]), *c[1:]]) for c in commands],
        "```",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out} and {figure}")


def evaluated(workdir: Path, args) -> bool:
    """Whether eval.py already wrote every section for the checkpoint of ``--epochs`` with these flags."""
    path = ROOT / workdir / "eval" / "metrics.json"
    if (
        not path.is_file()
        or not (path.parent / "tsne.npz").is_file()
        or not (path.parent / "cross_modal.png").is_file()
    ):
        return False
    metrics = json.loads(path.read_text())
    flags = metrics.get("eval_flags", {})
    import eval as eval_cli

    defaults = vars(eval_cli.make_parser().parse_args(["--workdir=."]))  # the flags this script leaves to eval.py
    wanted = {k: defaults[k] for k in ("iw_proposal", "classifier_epochs", "latent_train_points", "fid_points")}
    wanted.update(
        iw_samples=args.iw_samples,
        ll_points=args.ll_points,
        tsne_points=args.tsne_points,
        seed=args.seed,
        prior_samples=defaults["prior_samples"],
    )
    sections = {"coherence", "latent_accuracy", "log_likelihood", "fid", "tsne", "cross_modal"}
    return (
        metrics.get("epoch") == args.epochs
        and sections <= set(flags.get("sections", ()))
        and all(flags.get(k) == v for k, v in wanted.items())
    )


def _machine() -> str:
    import platform

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{platform.machine()} {os.cpu_count()} CPU cores, {python}"


if __name__ == "__main__":
    main(sys.argv[1:])
