"""The paper's beta study and adversarial claim for pemvae on the trimodal data; writes docs/STUDY.md.

    python scripts/paper_study.py --data_dir=../shared/datasets

1. Beta: one compiled sweep, ``train.py --model=pemvae --beta=0.5,1,1.5,2,3``
   (each beta its own workdir), with ``--validation`` held-out pairs; each
   member's best-validation epoch is scored on the test pairs (coherence,
   prior coherence, FID, diversity given the label), and a figure like the
   paper's Figures 3-6: a row per beta, images generated from the label w,
   a block of columns per class (docs/study_beta_samples.png).
2. Adversarial: pemvae with ``--adversarial`` against without, same budget,
   over ``--seeds`` (one seed sweep each, ``train.py --seed=0,1,2``): the same scores, their spread over seeds, and the
   discriminator's and generator's losses per epoch (docs/study_adversarial.png).

Every step is a ``train.py`` / ``eval.py`` command, printed as it starts; a
step already done is kept, so the script resumes by being started again.
``--summarize_only`` writes the report from what there is. ``--jobs=N`` runs N
of its pipelines (the sweep and its evaluations; each seed's run and its
evaluation) at once, as ``scripts/results.py --jobs`` does.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import json
from pathlib import Path
import shlex
import sys
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.results import (  # noqa: E402 (needs ROOT on the path)
    NEWER_SCORES,
    best_epoch,
    command_block,
    epochs_done,
    jobs_env,
    kept_reading,
    machine_of,
    run_or_report,
    train_seconds,
)

BETAS = "0.5,1,1.5,2,3"
SECTIONS = "coherence,fid"  # fid also writes the diversity given the label
PARTS = ("beta", "adversarial")
SAMPLES_PER_CLASS = 3  # images per class in the beta figure


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None, help="as in train.py")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma separated: beta, adversarial")
    parser.add_argument("--epochs", type=int, default=50, help="the budget of every run")
    parser.add_argument("--betas", default=BETAS, help="the KL weights of the sweep (comma separated)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the adversarial comparison")
    parser.add_argument("--beta", type=float, default=1.0, help="beta of the adversarial comparison")
    parser.add_argument("--adv_weight", type=float, default=1.0, help="train.py --adv_weight of the adversarial runs")
    parser.add_argument("--validation", type=int, default=5000, help="training pairs held out (train.py --validation)")
    parser.add_argument("--runs", default="runs/study", help="parent of the workdirs")
    parser.add_argument("--out", default="docs/STUDY.md")
    parser.add_argument("--train_flags", default="", help="more train.py flags for every run")
    parser.add_argument("--eval_flags", default="", help="more eval.py flags for every evaluation")
    parser.add_argument("--summarize_only", action="store_true", help="run nothing: write the report from the runs")
    parser.add_argument("--jobs", type=int, default=1, help="pipelines at once (e.g. several on one GPU)")
    return parser


def check_args(parser, args) -> tuple[list[str], list[float], list[int]]:
    """(parts, betas, seeds), or parser.error naming the bad flag and what is allowed, before any work."""
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts={args.parts!r}: allowed: comma separated {', '.join(PARTS)}")
    try:
        betas = [float(b) for b in args.betas.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--betas={args.betas!r} / --seeds={args.seeds!r}: comma-separated numbers, e.g. 0.5,1,2 / 0,1")
    if len(set(betas)) != len(betas) or min(betas) <= 0:
        parser.error(f"--betas={args.betas!r}: allowed: distinct numbers > 0")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        parser.error(f"--seeds={args.seeds!r}: allowed: distinct integers >= 0")
    if args.epochs < 1 or args.validation < 1 or args.jobs < 1:
        parser.error(
            f"--epochs={args.epochs}, --validation={args.validation}, --jobs={args.jobs}: allowed: integers >= 1"
        )
    return parts, betas, seeds


def main(argv=None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    parts, betas, seeds = check_args(parser, args)
    runs = Path(args.runs)
    (ROOT / runs).mkdir(parents=True, exist_ok=True)
    python, commands = sys.executable, []
    common = [f"--epochs={args.epochs}", f"--validation={args.validation}"]
    common += [f"--data_dir={args.data_dir}"] if args.data_dir else []
    common += shlex.split(args.train_flags)
    eval_flags = ["--step=best", f"--sections={SECTIONS}", *shlex.split(args.eval_flags)]

    def evaluate(workdir: Path) -> list[str]:
        return [python, "eval.py", f"--workdir={workdir}", *eval_flags]

    pipelines = {}  # name: (the training, the workdirs of its runs): each run evaluated once it is trained
    if "adversarial" in parts:  # one seed sweep per kind (one program for the seeds)
        for kind, extra in (("adversarial", ["--adversarial", f"--adv_weight={args.adv_weight}"]), ("plain", [])):
            folders = [runs / kind / f"seed{seed}" for seed in seeds]
            where = runs / kind if len(seeds) > 1 else folders[0]
            seed_flag = f"--seed={','.join(map(str, seeds))}"
            flags = [f"--beta={args.beta}", seed_flag, f"--workdir={where}", *common, *extra]
            pipelines[kind] = ([python, "train.py", "--model=pemvae", *flags], folders)
    if "beta" in parts:
        sweep = runs / "beta"
        train = [python, "train.py", "--model=pemvae", f"--beta={args.betas}", f"--workdir={sweep}", *common]
        pipelines["beta"] = (train, [sweep / f"beta{float(b)}" for b in betas])
    # The slowest first (adversarial, then the five-member sweep), so that --jobs ends them together.
    pipelines = [(name, *pipelines[name]) for name in ("adversarial", "beta", "plain") if name in pipelines]
    commands = [train for _, train, _ in pipelines]
    commands += [evaluate(w) for _, _, folders in pipelines for w in folders]
    started, failed = time.perf_counter(), []
    if not args.summarize_only:
        env = jobs_env(args.jobs)
        logs = ROOT / runs / "logs"
        logs.mkdir(exist_ok=True)

        def one(pipeline) -> None:
            name, train, folders = pipeline
            with open(logs / f"{name}.log", "a") as log:
                steps = [] if all(epochs_done(f) >= args.epochs for f in folders) else [train]
                if not steps:
                    print(f"  {', '.join(map(str, folders))}: trained, kept", flush=True)
                for workdir in folders:
                    if _evaluated(workdir, eval_flags, current=True):
                        print(f"  {workdir} is evaluated: kept", flush=True)
                    else:
                        steps.append(evaluate(workdir))
                for command in steps:
                    if not run_or_report(command, log, env, failed):
                        return

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one, pipelines))
    print(f"ran for {time.perf_counter() - started:.0f} s", flush=True)
    write_report(args, parts, betas, seeds, commands, python)
    if failed:
        raise SystemExit("failed steps (the report lists what is missing):\n" + "\n".join(failed))


def _evaluated(workdir: Path, eval_flags, current: bool = False) -> bool:
    """Whether the run's best epoch was evaluated with the study's sections; ``current``: and has every score
    of today's eval.py (else it is evaluated again; the report still shows the scores it has)."""
    path = ROOT / workdir / "eval" / "metrics.json"
    if not path.is_file():
        return False
    metrics = json.loads(path.read_text())
    sections = set(SECTIONS.split(","))
    return (
        metrics.get("epoch") == best_epoch(workdir)
        and metrics.get("eval_flags", {}).get("step") == "best"
        and sections <= set(metrics.get("eval_flags", {}).get("sections", ()))
        and (not current or all(k in metrics for k in NEWER_SCORES))
    )


def _metrics(workdir: Path) -> dict | None:
    path = ROOT / workdir / "eval" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() and _evaluated(workdir, ()) else None


SCORES = (  # (title, section, key) of the study's tables
    ("x->w", "coherence", "x->w"),
    ("y->w", "coherence", "y->w"),
    ("w->x", "coherence", "w->x"),
    ("w->y", "coherence", "w->y"),
    ("sampled w->x", "label_coherence", "w->x"),
    ("sampled w->y", "label_coherence", "w->y"),
    ("prior coherence", "coherence", "prior"),
    ("FID w->x", "fid", "w->x"),
    ("FID w->y", "fid", "w->y"),
    ("FID prior->x", "fid", "prior->x"),
    ("FID prior->y", "fid", "prior->y"),
    ("diversity w->x", "diversity", "w->x"),
    ("diversity w->y", "diversity", "w->y"),
)


def _row(name: str, runs: list[dict]) -> str:
    from mvae_jax.evaluation.report import format_cell

    cells = []
    for _, section, key in SCORES:
        values = [m[section][key] for m in runs if key in m.get(section, {})]
        cells.append(format_cell(values, 4 if section in ("coherence", "label_coherence") else 2))
    return "| " + " | ".join([name, *cells]) + " |"


def write_report(args, parts, betas, seeds, commands, python) -> None:
    from mvae_jax.training import BEST_DIR
    from mvae_jax.training.validation import read_records

    head = "| run | " + " | ".join(t for t, _, _ in SCORES) + " |\n|" + "---|" * (len(SCORES) + 1)
    reading = kept_reading(ROOT / args.out)
    lines = [
        "# pemvae: the paper's beta study and adversarial claim, on the trimodal data",
        "",
        *(["What the tables say is written [at the end](#reading)."] if reading else []),
        "",
        f"Budget: {args.epochs} epochs, {args.validation:,} training pairs held out for validation; each run is "
        "scored on the test pairs at its best-validation epoch (`eval.py --step=best`). Coherence on the 10,000 "
        "test pairs; FID and diversity in the scoring CNNs' features (FID: the first 5,000 test pairs; "
        "diversity: 100 images per class, with the real images' own value for scale). `S->t` decodes the "
        "posterior mean of q(z|S); `sampled w->t` classifies images decoded from draws z ~ q(z|w), 100 per class "
        "(the images of the diversity column): whether the samples match the query. "
        f"Machine: {machine_of(Path(args.runs), not args.summarize_only)}.",
        "",
    ]
    missing, trained = [], []  # trained: (name, workdir) of the runs in the tables
    if "beta" in parts:
        rows, figure_rows = [], []
        for b in betas:
            workdir = Path(args.runs) / "beta" / f"beta{b}"
            metrics = _metrics(workdir)
            if metrics is None:
                missing.append(str(workdir))
                continue
            rows.append(_row(f"beta {b}", [metrics]))
            figure_rows.append((b, workdir))
            trained.append((f"beta {b}", workdir))
        figure = Path(args.out).parent / "study_beta_samples.png"
        if figure_rows and all((ROOT / w / BEST_DIR).is_dir() for _, w in figure_rows):
            _beta_figure(figure_rows, ROOT / figure)
        elif figure_rows:  # e.g. --summarize_only from the metrics alone, on another machine
            print(f"  no checkpoints under {args.runs}/beta: {figure} kept as it is", flush=True)
        real = next((m for m in map(_metrics, (w for _, w in figure_rows)) if m), {}).get("diversity", {})
        lines += [
            "## 1. Beta (one compiled sweep, seed 0)",
            "",
            head,
            *rows,
            "",
            f"Real images' diversity for scale: x {real.get('real x', float('nan')):.2f}, "
            f"y {real.get('real y', float('nan')):.2f}.",
            "",
            f"![samples from the label per beta]({figure.name})",
            "",
            f"Rows: beta (x, then y); columns: {SAMPLES_PER_CLASS} images generated from each label w = 0..9, "
            "z ~ q(z|w), pixel means.",
            "",
        ]
    if "adversarial" in parts:
        rows, curves = [], {}
        for kind in ("plain", "adversarial"):
            per_seed = []
            for seed in seeds:
                workdir = Path(args.runs) / kind / f"seed{seed}"
                metrics = _metrics(workdir)
                if metrics is None:
                    missing.append(str(workdir))
                    continue
                per_seed.append(metrics)
                rows.append(_row(f"{kind}, seed {seed}", [metrics]))
                trained.append((f"{kind}, seed {seed}", workdir))
                if kind == "adversarial":
                    curves[seed] = read_records(ROOT / workdir / "metrics.jsonl")
            if len(per_seed) > 1:
                rows.append(_row(f"**{kind}, mean ± std**", per_seed))
        figure = Path(args.out).parent / "study_adversarial.png"
        if curves:
            _adversarial_figure(curves, ROOT / figure)
        lines += [
            f"## 2. Adversarial against plain (beta {args.beta}, --adv_weight={args.adv_weight}, seeds "
            f"{', '.join(map(str, seeds))})",
            "",
            head,
            *rows,
            "",
            f"![discriminator and generator losses per epoch]({figure.name})",
            "",
            "Per epoch means: the discriminators' loss (`disc_loss`, R1 included) and the generator's GAN loss "
            "(`adv_generator`), a line per seed.",
            "",
        ]
    if missing:
        lines += [f"**Missing** (not yet trained or evaluated): {', '.join(missing)}.", ""]
    if trained:
        lines += [
            "## Convergence and cost",
            "",
            "The epoch each run was scored at (its lowest validation objective) and its training time: the sum of "
            "the epoch and validation times in metrics.jsonl (a sweep's members share those epochs; other jobs "
            "shared the machine, so these are not speed measurements).",
            "",
            "| run | best epoch | of | train s |",
            "|---|---|---|---|",
            *(_convergence_row(name, workdir) for name, workdir in trained),
            "",
        ]
    lines += [
        "## Commands",
        "",
        "`python scripts/paper_study.py` runs these in this order, from the repository root:",
        "",
        *command_block(commands, python),
        "",
    ]
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + reading))
    print(f"wrote {out}")


def _convergence_row(name: str, workdir: Path) -> str:
    from mvae_jax.training.validation import read_records

    seconds = train_seconds(read_records(ROOT / workdir / "metrics.jsonl"))
    return f"| {name} | {best_epoch(workdir)} | {epochs_done(workdir)} | {seconds:.0f} |"


def _beta_figure(rows, path: Path) -> None:
    """A row per beta and image modality: SAMPLES_PER_CLASS images generated from each label."""
    import jax

    from mvae_jax import figures, training
    from mvae_jax.evaluation import label_samples

    panels = []
    for beta, workdir in rows:
        _, model, state = training.restore_model(ROOT / workdir, best_epoch(workdir), training.BEST_DIR)
        label = next(m for m in model.modalities if m.likelihood == "categorical")
        images = tuple(m.name for m in model.modalities if len(m.shape) == 3)
        classes = range(label.shape[-1])
        means = label_samples(
            model, state.params, label.name, classes, SAMPLES_PER_CLASS, images, jax.random.PRNGKey(0)
        )
        panels += [(f"beta {beta}: {name}", means[name]) for name in images]
    figures.plot_image_rows(panels, path, columns=SAMPLES_PER_CLASS * len(classes))


def _adversarial_figure(curves, path: Path) -> None:
    """The discriminators' and the generator's GAN loss per epoch, a line per seed."""
    from mvae_jax.figures import plot_metric_panels

    panels = {
        term: {
            f"seed {seed}": [(r["epoch"], r[term]) for r in records if term in r] for seed, records in curves.items()
        }
        for term in ("disc_loss", "adv_generator")
    }
    plot_metric_panels(panels, path)


if __name__ == "__main__":
    main(sys.argv[1:])
