"""Train every model on a data set (the trimodal data by default) over several seeds, select on validation,
score the test pairs once, write docs/RESULTS.md (another data set: docs/RESULTS_<DATASET>.md).

    python scripts/results.py --data_dir=../shared/datasets
    python scripts/results.py --data_dir=../shared/datasets --dataset=polymnist \
        --train_flags="--latent_dim=32 --train_examples=10000" --epochs=5 --seeds=0,1

The tables' columns come from the data set's contract (``mvae_jax.data.DATASETS``): its scored modalities,
its label, the coherence by number of inputs where it has more than two modalities.

For each model it trains the seeds (``--seeds``, default 0,1,2) as one
compiled seed sweep, ``train.py --seed=0,1,2`` (each seed its own
initialisation, batch order and noise, in ``--runs/<model>/seed<s>``), with
``--validation`` held-out training pairs, which scores them after every epoch
and keeps the best epoch; then ``eval.py --step=best`` scores each seed on the
test pairs (``--select=last``: the last epoch instead). The commands are the
ones a user types, printed as they start. Then ``eval.py --compare`` draws
the tSNE comparison of the first seed (the only seed whose evaluation
computes the tSNE). The report has every table as mean ± std over the seeds,
the validation curves that show whether ``--epochs`` is enough
(docs/results_validation.png), the parameters, the times and every command.
A run already trained, or evaluated with the same flags, is kept, so an
interrupted script resumes by being started again (only the seeds not yet
trained to ``--epochs`` are swept); ``--summarize_only`` writes the report
from the runs there are.

``--jobs=N`` trains N models at once and ``--eval_jobs=M`` (default N)
evaluates M runs at once, each model's as soon as it is trained, the slowest
models first. A model's first seed is evaluated first: the other seeds then
load its compiled programs from JAX's persistent cache (when
``JAX_COMPILATION_CACHE_DIR`` is set) instead of compiling them again. On a
GPU, where a step of batch 128 is launch-bound (about 2% of the matmul peak,
docs/PERFORMANCE.md), a seed sweep costs little more than one seed (about 1.6
times for 3 JMVAE seeds on a shared H100), and a few processes share the GPU (they are started with
``XLA_PYTHON_CLIENT_PREALLOCATE=false``, so that each takes only the memory
it uses; with M > 1 each evaluation's BLAS/OpenMP threads are capped at
cores / M, since evaluation is mostly CPU work). A command that fails is
reported, the others go on, and the report lists its runs as missing.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import json
import os
from pathlib import Path
import shlex
import subprocess
import sys
import threading
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = (
    "jmvae", "telbo", "mvae", "pemvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus", "dmvae", "cmvae", "jnf", "jnfdcca",
)  # fmt: skip
SELECTIONS = ("best", "last")
FLAT_WINDOW = 10  # epochs: the report gives the validation objective's change over the last ones
# Slowest first, so that --jobs ends together.
COST_ORDER = (
    "mmvae", "cmvae", "mmvaeplus", "dmvae", "jnfdcca", "jnf", "mopoe", "mvae", "pemvae", "telbo", "jmvae", "mvtcae",
)  # fmt: skip


def run(command: list[str], log, env: dict | None = None) -> float:
    """Run a command from the repository root, its output appended to ``log``; seconds taken."""
    print("$", shlex.join(command), flush=True)
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True, env=env)
    return time.perf_counter() - start


def run_or_report(command: list[str], log, env: dict | None, failed: list[str]) -> bool:
    """``run``; on a failure, append what failed (with its log) to ``failed``, print it and return False."""
    try:
        run(command, log, env)
        return True
    except subprocess.CalledProcessError as error:
        failed.append(f"{shlex.join(error.cmd)} (exit {error.returncode}; log: {log.name})")
        print(f"FAILED: {failed[-1]}", flush=True)
        return False


def jobs_env(jobs: int, cap_threads: bool = False) -> dict | None:
    """The environment of ``jobs`` commands run at once (None for one): each JAX process takes only the device
    memory it uses; ``cap_threads``: BLAS/OpenMP threads capped at cores / jobs (CPU-bound work)."""
    if jobs <= 1:
        return None
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if cap_threads:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env.update({v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    return env


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None, help="as in train.py")
    parser.add_argument("--dataset", default="trimodal", help="as in train.py (default: trimodal)")
    parser.add_argument(
        "--sections",
        default=None,
        help="eval.py's sections of every run, comma separated (default: all; e.g. leave out log_likelihood "
        "where it costs too much)",
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma separated (default: all)")
    parser.add_argument(
        "--epochs", type=int, default=100, help="the budget of every run (50 was not converged: docs/RESULTS.md)"
    )
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--seeds", default="0,1,2", help="comma separated; tables give mean ± std over them")
    parser.add_argument("--validation", type=int, default=5000, help="training pairs held out (train.py --validation)")
    parser.add_argument(
        "--select",
        choices=SELECTIONS,
        default="best",
        help="which epoch is scored on the test pairs: best = the lowest validation objective (eval.py "
        "--step=best), last = the last one (default: best)",
    )
    parser.add_argument(
        "--reference",
        default="pemvae",
        help="the model the report compares with each other one (difference of the means, Welch's p); "
        "default: the paper's pemvae",
    )
    parser.add_argument("--runs", default="runs/results", help="parent of the per-model workdirs")
    parser.add_argument("--iw_samples", type=int, default=1000)
    parser.add_argument("--ll_points", type=int, default=500, help="test pairs of the likelihoods (0: all 10,000)")
    parser.add_argument("--tsne_points", type=int, default=2000)
    parser.add_argument(
        "--prior_samples", type=int, default=10_000, help="z ~ p(z) of the prior coherence and FID (eval.py's default)"
    )
    parser.add_argument(
        "--coherence_points",
        type=int,
        default=0,
        help="test pairs the conditional coherences score: the first N (0: all, the papers' protocol)",
    )
    parser.add_argument(
        "--out", default=None, help="the report (default: docs/RESULTS.md, another data set docs/RESULTS_<DATASET>.md)"
    )
    parser.add_argument(
        "--train_flags",
        default="",
        help="more train.py flags for every run (e.g. smaller networks; the report says so)",
    )
    parser.add_argument(
        "--model_flags",
        action="append",
        default=[],
        metavar="MODEL:FLAGS",
        help="more train.py flags for one model, e.g. 'mmvae:--num_samples=1' (repeatable; the report says so)",
    )
    parser.add_argument(
        "--summarize_only", action="store_true", help="run nothing: write the report from the runs already done"
    )
    parser.add_argument(
        "--sweep",
        choices=("vmap", "each"),
        default="vmap",
        help="vmap: a model's seeds as one seed sweep, one compiled program (default); each: one train.py per "
        "seed, after one another: faster for conv networks on a CPU, where XLA runs a vmapped convolution about "
        "2x slower per member (docs/PERFORMANCE.md)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once (e.g. several on one GPU)")
    parser.add_argument("--eval_jobs", type=int, default=None, help="runs evaluated at once (default: --jobs)")
    return parser


def check_args(parser: argparse.ArgumentParser, args) -> tuple[list[str], list[int]]:
    """(models, seeds), or parser.error naming the bad flag and what is allowed, before any work."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        parser.error(f"--models={args.models}: unknown {unknown}; allowed: {','.join(MODELS)}")
    seeds = parse_seeds(parser, args.seeds)
    if args.epochs < 1:
        parser.error(f"--epochs={args.epochs} is invalid; allowed: an integer >= 1")
    if args.reference not in MODELS:
        parser.error(f"--reference={args.reference!r}: allowed: one of {','.join(MODELS)}")
    for entry in args.model_flags:
        if entry.split(":", 1)[0] not in MODELS or ":" not in entry:
            parser.error(f"--model_flags={entry!r}: allowed: MODEL:FLAGS with MODEL one of {','.join(MODELS)}")
    for flag in ("jobs", "eval_jobs", "prior_samples"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag}={getattr(args, flag)} is invalid; allowed: an integer >= 1")
    if args.select == "best" and args.validation < 1:
        parser.error(f"--validation={args.validation} with --select=best: model selection needs a validation split")
    from mvae_jax.data import DATASETS

    if args.dataset not in DATASETS:
        parser.error(f"--dataset={args.dataset!r}: allowed: one of {','.join(sorted(DATASETS))}")
    if args.sections is not None:
        from mvae_jax import api

        try:
            api.parse_sections(args.sections)
        except ValueError as e:
            parser.error(f"--sections={e}")
    return models, seeds


def parse_seeds(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """The seeds of ``--seeds=text`` (distinct integers >= 0), or parser.error naming the bad value."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds={text!r} is not comma-separated integers, e.g. 0,1,2")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        parser.error(f"--seeds={text!r}: allowed: distinct integers >= 0, e.g. 0,1,2")
    return seeds


def wanted_sections(args) -> list[str]:
    """eval.py's sections of every run: ``--sections``, or all of them."""
    from mvae_jax import api

    return list(api.section_names() if args.sections is None else api.parse_sections(args.sections))


def main(argv=None) -> None:
    """The script's steps in the order they run (long: a script, read top to bottom)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    models, seeds = check_args(parser, args)
    if args.out is None:
        args.out = "docs/RESULTS.md" if args.dataset == "trimodal" else f"docs/RESULTS_{args.dataset.upper()}.md"

    python = sys.executable
    runs = Path(args.runs)  # paths relative to the repository root, where the commands run
    (ROOT / runs).mkdir(parents=True, exist_ok=True)
    stem = "results" if args.dataset == "trimodal" else f"results_{args.dataset}"
    figure = Path(args.out).parent / f"{stem}_tsne.png"
    curves = Path(args.out).parent / f"{stem}_validation.png"
    commands, done = [], {}  # done: {model: {seed: workdir}} of the runs evaluated
    pairs = [(m, s) for m in models for s in seeds]
    groups = [seeds] if args.sweep == "vmap" else [[s] for s in seeds]  # the seeds each train.py trains
    commands += [train_command(args, m, group, runs, python) for m in models for group in groups]
    commands += [eval_command(args, m, s, seeds, runs, python) for m, s in pairs]
    failed = []
    if not args.summarize_only:
        eval_jobs = args.eval_jobs or args.jobs
        train_env = jobs_env(args.jobs)
        eval_env = jobs_env(eval_jobs, cap_threads=True)  # evaluation is mostly CPU work: M processes share the cores
        (ROOT / runs / "logs").mkdir(exist_ok=True)

        def attempt(command, log_name: str, env) -> bool:
            with open(ROOT / runs / "logs" / log_name, "a") as log:
                return run_or_report(command, log, env, failed)

        slots = threading.BoundedSemaphore(eval_jobs)  # evaluations at once, over all models

        def evaluate(model, seed):
            workdir = runs / model / f"seed{seed}"
            if evaluated(workdir, args, seed, seeds, current=True):
                print(f"  {workdir} was evaluated with these flags already: kept", flush=True)
            else:
                with slots:
                    attempt(eval_command(args, model, seed, seeds, runs, python), f"{model}_seed{seed}.log", eval_env)

        def evaluate_model(model):
            # The first seed alone, then the others at once: they load its compiled programs from JAX's
            # persistent cache (JAX_COMPILATION_CACHE_DIR) instead of each compiling the same ones.
            evaluate(model, seeds[0])
            with ThreadPoolExecutor(len(seeds)) as seed_pool:
                list(seed_pool.map(lambda seed: evaluate(model, seed), seeds[1:]))

        with ThreadPoolExecutor(len(models)) as eval_pool, ThreadPoolExecutor(args.jobs) as train_pool:

            def train(model):
                pending = [s for s in seeds if epochs_done(runs / model / f"seed{s}") < args.epochs]
                for group in [pending] if args.sweep == "vmap" else [[s] for s in pending]:
                    if not group:  # every seed trained already
                        continue
                    if not attempt(train_command(args, model, group, runs, python), f"{model}.log", train_env):
                        return
                eval_pool.submit(evaluate_model, model)  # as soon as the model is trained

            list(train_pool.map(train, sorted(models, key=COST_ORDER.index)))
    for model, seed in pairs:
        if evaluated(runs / model / f"seed{seed}", args, seed, seeds):
            done.setdefault(model, {})[seed] = runs / model / f"seed{seed}"
    first = [done[m][seeds[0]] for m in models if seeds[0] in done.get(m, {})]
    compare = [python, "eval.py", "--compare", *map(str, first), f"--out={figure}"]
    commands.append(compare)
    if first and not args.summarize_only:
        with open(ROOT / runs / "logs" / "compare.log", "a") as log:
            run(compare, log)
    write_report(args, models, seeds, done, commands, figure, curves, python)
    if failed:
        raise SystemExit("failed runs (the report lists them as missing):\n" + "\n".join(failed))


def train_command(args, model: str, seeds: list[int], runs: Path, python: str) -> list[str]:
    """The train.py command of a model's ``seeds``: one seed sweep (``<runs>/<model>/seed<s>``), or one run."""
    where = runs / model if len(seeds) > 1 else runs / model / f"seed{seeds[0]}"
    train = [
        python,
        "train.py",
        f"--model={model}",
        f"--beta={args.beta}",
        f"--epochs={args.epochs}",
        f"--seed={','.join(map(str, seeds))}",
        f"--validation={args.validation}",
        f"--workdir={where}",
    ]
    if args.data_dir:
        train.append(f"--data_dir={args.data_dir}")
    if args.dataset != "trimodal":
        train.append(f"--dataset={args.dataset}")
    return train + shlex.split(args.train_flags) + shlex.split(model_flags(args).get(model, ""))


def model_flags(args) -> dict[str, str]:
    """{model: its own train.py flags} of ``--model_flags=MODEL:FLAGS`` (checked by ``check_args``)."""
    return dict(entry.split(":", 1) for entry in args.model_flags)


def eval_sections(args, seed: int, seeds: list[int]) -> list[str]:
    """eval.py's sections for ``seed``: those wanted, less the tSNE (drawn for the first seed only) for the others."""
    return [s for s in wanted_sections(args) if seed == seeds[0] or s != "tsne"]


def eval_command(args, model: str, seed: int, seeds: list[int], runs: Path, python: str) -> list[str]:
    """The eval.py command of one run."""
    evaluate = [
        python,
        "eval.py",
        f"--workdir={runs / model / f'seed{seed}'}",
        f"--iw_samples={args.iw_samples}",
        f"--ll_points={args.ll_points}",
        f"--tsne_points={args.tsne_points}",
        f"--coherence_points={args.coherence_points}",
        f"--prior_samples={args.prior_samples}",
        f"--seed={seed}",
    ]
    if seed != seeds[0] or args.sections is not None:
        evaluate.append(f"--sections={','.join(eval_sections(args, seed, seeds))}")
    if args.select == "best":
        evaluate.append("--step=best")
    return evaluate


def write_report(args, models, seeds, done, commands, figure: Path, curves: Path, python: str) -> None:
    """docs/RESULTS.md (and the validation-curve figure): the test tables from the evaluated runs in ``done``,
    the convergence and cost tables and the figure from every run trained (evaluated or not)."""
    from mvae_jax import figures
    from mvae_jax.evaluation import report
    from mvae_jax.training.validation import SELECTION_TERM, best_record, read_records

    metrics = {m: [_metrics(w) for _, w in sorted(s.items())] for m, s in done.items()}
    runs = Path(args.runs)
    records = {}  # {model: {seed: metrics.jsonl records}} of every run with epochs
    for m in models:
        for s in seeds:
            if epochs_done(runs / m / f"seed{s}"):
                records.setdefault(m, {})[s] = read_records(ROOT / runs / m / f"seed{s}" / "metrics.jsonl")
    figures.plot_validation_curves(records, ROOT / curves)
    evaluated_runs = [(m, metrics[m]) for m in models if m in metrics]
    table = report.results_table(evaluated_runs)
    spec, names = run_modalities(args, models, seeds)
    text = describe(args, spec, names)
    compared = (*report.single_modality_scores(spec, names), ("coherence", "prior"))
    if len(names) > 3:  # PolyMNIST: the pairs are too many columns; the latents, then coherence by inputs
        by_inputs = sorted({k for ms in metrics.values() for m in ms for k in m.get("coherence_by_inputs", {})})
        compared = (
            *(c for c in compared if c[0] == "latent_accuracy"),
            *(("coherence_by_inputs", k) for k in by_inputs),
            ("coherence", "prior"),
        )
    differences = report.difference_table(args.reference, evaluated_runs, compared)
    reading = kept_reading(ROOT / args.out)
    missing = [f"{m} seed {s}" for m in models for s in seeds if s not in done.get(m, {})]
    unevaluated = [
        f"{m} seed {s}" for m in models for s in seeds if s in records.get(m, {}) and s not in done.get(m, {})
    ]

    def cell(values, digits=0):
        return report.format_cell(values, digits) if values else ""

    convergence = []
    for m in models:
        per_seed = [r for _, r in sorted(records.get(m, {}).items())]
        bests = [best_record(r) for r in per_seed]
        changes = []
        for r in per_seed:
            held = [x[SELECTION_TERM] for x in r if SELECTION_TERM in x]
            if len(held) > FLAT_WINDOW:
                changes.append(held[-1] - held[-1 - FLAT_WINDOW])
        convergence.append(
            f"| {m} | {', '.join(str(b['epoch']) for b in bests if b)} | "
            f"{cell([b[SELECTION_TERM] for b in bests if b], 2)} | {cell(changes, 2)} |"
        )
    timing, total_s = [], 0.0
    for m in models:
        per_seed = [r for _, r in sorted(records.get(m, {}).items())]
        train_s = [train_seconds(r) for r in per_seed if r]
        rates = [max(e["samples_per_s"] for e in r) for r in per_seed if r]
        eval_s = [x["eval_seconds"] for x in metrics.get(m, [])]
        params = f"{metrics[m][0]['params']:,}" if m in metrics else ""
        timing.append(f"| {m} | {params} | {cell(train_s)} | {cell(rates)} | {cell(eval_s)} |")
        total_s += max(train_s, default=0.0) + sum(eval_s)  # a seed sweep's seeds share their epochs' time
    flags = (
        f"train.py flags `{args.train_flags}`, " if args.train_flags else "default widths (512, 512) and latent 20, "
    ) + "".join(f"{m} also `{f}`, " for m, f in model_flags(args).items())
    selection = (
        "the epoch of the lowest validation objective (`eval.py --step=best`)"
        if args.select == "best"
        else "the last epoch"
    )
    lines = [
        f"# Results: every model on {text['data']}, several seeds, selected on validation",
        "",
        *(["What the tables say is written [at the end](#reading)."] if reading else []),
        "",
        f"Budget: {args.epochs} epoch{'s' if args.epochs != 1 else ''} of the training pairs less "
        f"{args.validation:,} held out for validation "
        f"({text['pairs']}), batch 128, Adam 1e-3, beta {args.beta}, "
        f"seeds {', '.join(map(str, seeds))}, {flags}"
        "each model's own defaults otherwise (MMVAE K = 10, PEMVAE its defaults of docs/PEMVAE.md, MVAE 1 "
        f"random subset). Scored on the test pairs once per run: {selection}. Conditional coherence on "
        f"{f'the first {args.coherence_points:,}' if args.coherence_points else 'the 10,000'} test pairs, latent "
        "accuracy and FID on the 10,000 (FID: the first 5,000); log-likelihoods on the first "
        f"{args.ll_points or 10000:,} "
        f"with K = {args.iw_samples} importance samples; prior coherence and FID from the prior on "
        f"{args.prior_samples:,} draws. Every cell is mean ± sample std over the seeds. "
        f"Sections evaluated: {', '.join(wanted_sections(args) if args.sections else SCORED + ('tsne',))}. "
        f"Machine: {machine_of(Path(args.runs), not args.summarize_only)}.",
        "",
        text["published"],
        "",
        *([f"**Missing runs** (not yet trained or evaluated): {', '.join(missing)}.", ""] if missing else []),
        *(
            [
                f"Trained but not evaluated: {', '.join(unevaluated)}. Their validation curves are in the convergence "
                "table and figure below; the test tables have only the runs evaluated.",
                "",
            ]
            if unevaluated
            else []
        ),
        text["columns"],
        "",
        table,
        "",
        *(
            [
                f"**{args.reference} against each model**: the difference of the means over the seeds "
                f"({args.reference} minus the model) and the two-sided p-value of Welch's t-test, with no "
                "correction for the several comparisons. Latent accuracy of each single modality's posterior "
                "is how far apart the single-modality clusters are.",
                "",
                differences,
            ]
            if differences
            else []
        ),
        "",
        "**Convergence**: the validation objective (the model's loss with its final weights, on the held-out "
        f"pairs) per epoch is in [{curves.name}]({curves.name}). Best epoch per seed, its validation loss, and "
        f"the change of the validation loss over the last {FLAT_WINDOW} epochs (negative: still falling).",
        "",
        f"| model | best epoch (per seed) | best validation loss | change over the last {FLAT_WINDOW} epochs |",
        "|---|---|---|---|",
        *convergence,
        "",
        f"![validation objective against the epoch]({curves.name})",
        "",
        "**Cost** (seconds, wall clock, other jobs may have shared the machine"
        + (
            f"; `--jobs={args.jobs}`: that many runs shared it at a time, so these are not speed measurements"
            if args.jobs > 1
            else ""
        )
        + "): training is the sum of the epoch and validation times in metrics.jsonl, evaluation the time "
        "eval.py spent on its sections. The seeds of a model train as one seed sweep, so its training time is that "
        "of all its seeds at once, and samples/s counts one seed's samples.",
        "",
        "| model | params | train s | samples/s (best epoch) | eval s |",
        "|---|---|---|---|---|",
        *timing,
        "",
        f"In all {total_s / 3600:.1f} hours of training (once per seed sweep) and evaluation.",
        "",
        *(
            [
                f"![tSNE of posterior means]({figure.name})",
                "",
                f"tSNE of the posterior means of the first {args.tsne_points} test pairs, seed {seeds[0]}: rows "
                f"are models, columns {text['tsne']}; colour = class.",
                "",
            ]
            if "tsne" in (wanted_sections(args) if args.sections else ("tsne",))
            else []
        ),
        *(
            [
                f"Images decoded from z ~ p(z), seed {seeds[0]}, a row pair per model: "
                f"[{figure.stem}_samples.png]({figure.stem}_samples.png).",
                "",
            ]
            if "samples" in wanted_sections(args)
            else []
        ),
        "## Commands",
        "",
        f"`{_invocation(args)}` runs these, in this order, from the repository root. A training already at its "
        "epochs, or an evaluation already done with the same flags, is kept, so an interrupted script resumes "
        "where it stopped.",
        "",
        *command_block(commands, python),
        "",
    ]
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + reading))
    print(
        f"wrote {out} and {ROOT / curves}"
        + (f" (and {ROOT / figure} by eval.py --compare)" if not args.summarize_only else "")
    )


def run_modalities(args, models, seeds):
    """(the data set's contract, the modality names of its runs): from a trained run's config.json (its
    settings, e.g. --num_modalities, decide them), else from the defaults."""
    from mvae_jax import config as config_lib
    from mvae_jax.data import DATASETS

    spec = DATASETS[args.dataset]
    workdirs = (ROOT / args.runs / m / f"seed{s}" for m in models for s in seeds)
    trained = next((w for w in workdirs if (w / config_lib.CONFIG_FILE).is_file()), None)
    config = config_lib.load_config(trained) if trained else config_lib.Config(dataset=args.dataset)
    return spec, tuple(m.name for m in spec.modalities(config))


def describe(args, spec, names) -> dict[str, str]:
    """The report's words about its data: the trimodal data's as docs/RESULTS.md has them, else from the
    contract."""
    if args.dataset == "trimodal":
        return {
            "data": "the trimodal data",
            "pairs": "60,000 - N on the real data",
            "published": "The published reproductions on binarized MNIST with labels are in "
            "[REPRODUCTIONS.md](REPRODUCTIONS.md).",
            "columns": "Columns: coherence `S->t` is the accuracy of the class of x_t generated from the subset S "
            "(scored by the CNNs below), `joint->t` the same from all three (reconstruction), `prior` the agreement "
            "of x, y, w decoded from z ~ p(z); latent accuracy `S` is a logistic regression on the means of q(z|S); "
            "log-likelihood `m` is log p(x_m); FID compares generated with real test images in the scoring CNN's "
            "penultimate features. The trimodal images are gray levels scored with the Bernoulli likelihood (not "
            "binarized), so `ll x` is not comparable with binarized-MNIST numbers (docs/recipes.md's JMVAE "
            "reproduction has those).",
            "tsne": "q(z|x,y,w), q(z|x), q(z|y)",
        }
    scored = ", ".join(spec.scorers_of(names))
    label = f"; `->{spec.label_modality}` is the argmax of the generated label" if spec.label_modality else ""
    return {
        "data": f"{args.dataset} ({', '.join(names)})",
        "pairs": f"the {args.dataset} training split less N, or the --train_examples of the train.py flags",
        "published": "The published numbers to set these beside, and what differs in data, scorers and budget, are "
        f"in [{args.dataset.upper()}.md]({args.dataset.upper()}.md)."
        if (ROOT / "docs" / f"{args.dataset.upper()}.md").is_file()
        else "",
        "columns": f"Columns: coherence `S->t` is the accuracy of the class of x_t generated from the subset S, "
        f"told by the data set's scoring CNN of t (scored modalities: {scored}){label}; `joint->t` the same from "
        "all of them (reconstruction), `prior` the agreement of the modalities decoded from z ~ p(z); coherence "
        "by number of inputs `k` is the mean over the subsets S of k modalities and the targets outside S, "
        "`mean` over all those pairs (MMVAE+'s mean coherence); latent accuracy `S` is a logistic regression on "
        "the means of q(z|S); log-likelihood `m` is log p(x_m); FID compares generated with real test images in "
        "the scoring CNN's penultimate features (not Inception-v3's: another scale than the papers').",
        "tsne": f"q(z|{','.join(names)}), then q(z|m) of each modality",
    }


def command_block(commands, python: str) -> list[str]:
    """A Markdown code block of ``commands``, this interpreter's path shown as ``python``."""
    return ["```", *[shlex.join(["python" if c[0] == python else c[0], *c[1:]]) for c in commands], "```"]


def _invocation(args) -> str:
    """The script's command line, with the flags that differ from the defaults."""
    defaults = vars(make_parser().parse_args([]))
    given = [f"--{k}={v}" for k, v in vars(args).items() if v != defaults[k] and k not in ("summarize_only",)]
    return shlex.join(["python", "scripts/results.py", *given])


def _metrics(workdir: Path) -> dict:
    return json.loads((ROOT / workdir / "eval" / "metrics.json").read_text())


def best_epoch(workdir: Path) -> int | None:
    """The epoch held in the run's best_checkpoint/; without that folder (the run's metrics copied from the
    machine that trained it), the epoch of the lowest validation objective in its metrics.jsonl, the one
    best_checkpoint/ held there. None if neither has one."""
    from mvae_jax.training import BEST_DIR
    from mvae_jax.training.validation import best_record, read_records

    folder = ROOT / workdir / BEST_DIR
    if folder.is_dir():
        epochs = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        return max(epochs) if epochs else None
    best = best_record(read_records(ROOT / workdir / "metrics.jsonl"))
    return best["epoch"] if best else None


def train_seconds(records: list[dict]) -> float:
    """A run's training time: the sum of the epoch and validation times of its metrics.jsonl records."""
    return sum(r["time_s"] + r.get("validation_time_s", 0.0) for r in records if "time_s" in r)


def epochs_done(workdir: Path) -> int:
    path = ROOT / workdir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return max((json.loads(line)["epoch"] for line in lines if line.strip()), default=0)


NEWER_SCORES = ("label_coherence",)  # scores eval.py gained after some runs were evaluated (2026-11-26)
SCORED = ("coherence", "latent_accuracy", "log_likelihood", "fid", "cross_modal")  # without --sections: needed


def evaluated(workdir: Path, args, seed: int, seeds: list[int], current: bool = False) -> bool:
    """Whether eval.py already wrote every section for the selected checkpoint of the finished run, with these
    flags (the tSNE for the first seed only); ``current``: and every score of today's eval.py (``NEWER_SCORES``):
    an evaluation without them is run again, while the report still shows its other scores."""
    path = ROOT / workdir / "eval" / "metrics.json"
    if args.sections:
        sections = set(eval_sections(args, seed, seeds))
    else:
        sections = {*SCORED, *(["tsne"] if seed == seeds[0] else [])}
    if (
        epochs_done(workdir) < args.epochs
        or not path.is_file()
        or ("tsne" in sections and not (path.parent / "tsne.npz").is_file())
        or ("cross_modal" in sections and not (path.parent / "cross_modal.png").is_file())
    ):
        return False
    metrics = json.loads(path.read_text())
    flags = metrics.get("eval_flags", {})
    from mvae_jax.data import DATASETS

    newer_apply = "coherence" in sections and DATASETS[args.dataset].label_modality is not None
    import eval as eval_cli

    defaults = vars(eval_cli.make_parser().parse_args(["--workdir=."]))  # the flags this script leaves to eval.py
    wanted = {k: defaults[k] for k in ("iw_proposal", "classifier_epochs", "latent_train_points", "fid_points")}
    wanted.update(
        iw_samples=args.iw_samples,
        ll_points=args.ll_points,
        tsne_points=args.tsne_points,
        coherence_points=args.coherence_points,
        seed=seed,
        prior_samples=args.prior_samples,
        step="best" if args.select == "best" else None,
    )
    epoch = best_epoch(workdir) if args.select == "best" else args.epochs
    return (
        metrics.get("epoch") == epoch
        and sections <= set(flags.get("sections", ()))
        and all(flags.get(k, 0 if k == "coherence_points" else None) == v for k, v in wanted.items())
        and (not current or not newer_apply or all(k in metrics for k in NEWER_SCORES))
    )


READING = "## Reading"  # a hand-written section from this heading on is kept when a script rewrites its page


def kept_reading(path: Path) -> list[str]:
    """The lines of ``path`` from its ``READING`` heading on (written by hand; none if it has none)."""
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip() == READING), None)
    return [] if start is None else lines[start:]


def machine_of(runs: Path, record: bool) -> str:
    """The machine the runs under ``runs`` were made on: recorded in ``<runs>/machine.txt`` when ``record`` (a
    script that trains or evaluates), read back from there otherwise (``--summarize_only`` elsewhere)."""
    path = ROOT / runs / "machine.txt"
    if record or not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_machine() + "\n")
    return path.read_text().strip()


def _machine() -> str:
    import platform

    import jax

    python = f"{platform.python_implementation()} {platform.python_version()}"
    device = jax.devices()[0]
    accelerator = "" if device.platform == "cpu" else f", one {device.device_kind}"
    return f"{platform.machine()} {os.cpu_count()} CPU cores{accelerator}, JAX {jax.__version__}, {python}"


if __name__ == "__main__":
    main(sys.argv[1:])
