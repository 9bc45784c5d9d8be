"""The PolyMNIST reproduction table: each model trained at its published recipe (``configs/<model>_polymnist.py``)
over several seeds, the best-validation epoch scored once on the test set, beside the published numbers and
MultiVae's reproduction; written to docs/REPRODUCTIONS_POLYMNIST.md.

    python scripts/reproduce_polymnist.py --data_dir=../shared/datasets
    python scripts/reproduce_polymnist.py --data_dir=DIR --train_minutes=6 --models=mopoe,mmvaeplus

Each model's seeds train as one seed sweep (``train.py --config=configs/<model>_polymnist.py --seed=0,1``,
each seed in ``<runs>/<model>/seed<s>``), every model at the same time: on a GPU a step of these networks is
launch-bound, so models side by side cost little more than one (the processes start with
``XLA_PYTHON_CLIENT_PREALLOCATE=false``, each taking only the memory it uses). ``--train_minutes=M`` is for a
fixed lease of a machine: the trainings still running after M minutes are stopped with SIGTERM (train.py
checkpoints and exits; the same command later goes on from there), and the report gives, for each model, the
epochs reached against its recipe's, so a cut budget is never hidden. Then ``eval.py --step=best`` scores each
seed's best-validation epoch on the test set as the papers score it (``--generation=sample``: one z drawn
from the posterior per example, private latents drawn from their prior; ``--sections``, default the
coherences; ``--eval_flags`` for more eval.py flags), a model's first seed first and its other seeds after,
loading the first one's compiled programs from JAX's persistent cache when ``JAX_COMPILATION_CACHE_DIR`` is
set.

A run at its recipe's epochs, or evaluated at its current best epoch with the same flags, is kept, so the
script resumes where it stopped; ``--summarize_only`` writes the report from the runs there are. The report's
section from ``## Reading`` on is written by hand and kept. ``--train_flags`` go to every train.py after the
recipe (``--train_examples=256 --epochs=1`` makes a smoke run; the report states the flags).
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import json
import os
from pathlib import Path
import shlex
import signal
import subprocess
import sys
import threading
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import results  # noqa: E402  (scripts/results.py: its run, resume and report helpers)

MODELS = ("mopoe", "mvtcae", "mmvaeplus", "cmvae", "jnfdcca")
INPUTS = ("1", "2", "3", "4")
# What each paper, and MultiVae's reproduction, report on PolyMNIST (docs/POLYMNIST.md): coherence by number of
# inputs (1 to 4) where given, else one mean coherence (from one modality to each other, averaged: our "1").
PUBLISHED = {
    "mopoe": [("Sutter et al. 2021 (read from their figure)", {"1": 0.66, "2": 0.77, "3": 0.81, "4": 0.83})],
    "mvtcae": [
        ("Hwang et al. 2021 (read from their figure)", {"1": 0.59, "2": 0.77, "3": 0.83, "4": 0.86}),
        ("MultiVae's reproduction", {"1": 0.64, "2": 0.82, "3": 0.88, "4": 0.91}),
    ],
    "mmvaeplus": [
        ("Palumbo et al. 2023 (mean conditional coherence)", {"1": 0.869}),
        ("MultiVae's reproduction", {"1": "0.886 ± 0.008"}),
    ],
    "cmvae": [("Palumbo et al. 2024 (0.897 / 0.781; which metric: docs/BASELINES.md)", {})],
    "jnfdcca": [("MultiVae's benchmark (read from its figure)", {"1": 0.76, "2": 0.89, "3": 0.93, "4": 0.95})],
}
STOP_GRACE_S = 180  # seconds a stopped train.py gets to write its checkpoint before it is killed


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="as in train.py")
    parser.add_argument("--models", default=",".join(MODELS[:4]), help=f"comma separated, of {','.join(MODELS)}")
    parser.add_argument("--seeds", default="0,1", help="comma separated; the table gives mean ± std over them")
    parser.add_argument("--runs", default="runs/reproduce_polymnist", help="parent of the per-model workdirs")
    parser.add_argument(
        "--train_minutes",
        type=float,
        default=None,
        help="stop the trainings still running after this many minutes (a fixed lease); default: no limit",
    )
    parser.add_argument("--train_flags", default="", help="more train.py flags for every model, after the recipe")
    parser.add_argument("--sections", default="coherence", help="eval.py's sections (default: coherence)")
    parser.add_argument("--eval_flags", default="", help="more eval.py flags, e.g. --coherence_points=2000")
    parser.add_argument("--eval_jobs", type=int, default=4, help="runs evaluated at once (default 4)")
    parser.add_argument("--out", default="docs/REPRODUCTIONS_POLYMNIST.md")
    parser.add_argument("--summarize_only", action="store_true", help="write the report from the runs there are")
    return parser


def check_args(parser: argparse.ArgumentParser, args) -> tuple[list[str], list[int]]:
    """(models, seeds), or parser.error naming the bad flag and what is allowed, before any work."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models or len(set(models)) != len(models):
        parser.error(f"--models={args.models}: unknown or repeated {unknown}; allowed: {','.join(MODELS)}")
    seeds = results.parse_seeds(parser, args.seeds)
    if args.train_minutes is not None and not args.train_minutes > 0:
        parser.error(f"--train_minutes={args.train_minutes}: allowed: a number of minutes > 0")
    if args.eval_jobs < 1:
        parser.error(f"--eval_jobs={args.eval_jobs} is invalid; allowed: an integer >= 1")
    from mvae_jax import api

    try:
        api.parse_sections(args.sections)
    except ValueError as e:
        parser.error(f"--sections={e}")
    for model in models:  # each recipe with the extra flags must make valid runs
        try:
            for config in run_configs(args, model, seeds):
                config.validate()
        except SystemExit:
            parser.error(f"--train_flags={args.train_flags!r} do not make a valid train.py command for {model}")
        except ValueError as e:
            parser.error(f"{model}: {e}")
    return models, seeds


def recipe(model: str) -> Path:
    return Path("configs") / f"{model}_polymnist.py"


def run_configs(args, model: str, seeds: list[int]) -> list:
    """The Configs train.py makes of ``model``'s command (its recipe, then ``--train_flags`` over it)."""
    from mvae_jax import recipes
    import train

    flags = vars(train.make_parser().parse_args(train_command(args, model, seeds)[2:]))
    for name in ("verbose", "distributed", "compilation_cache"):
        flags.pop(name, None)
    flags = {**recipes.load(ROOT / flags.pop("config")), **flags}
    return train.configs_from_flags(flags)


def target_epochs(args, model: str) -> int:
    """The epochs a run of ``model`` trains to: its recipe's, or ``--epochs`` in ``--train_flags``."""
    return run_configs(args, model, [0])[0].epochs


def train_command(args, model: str, seeds: list[int]) -> list[str]:
    command = [sys.executable, "train.py", f"--config={recipe(model)}", f"--seed={','.join(map(str, seeds))}"]
    where = Path(args.runs) / model
    command.append(f"--workdir={where if len(seeds) > 1 else where / f'seed{seeds[0]}'}")
    if args.data_dir:
        command.append(f"--data_dir={args.data_dir}")
    return command + shlex.split(args.train_flags)


def eval_command(args, model: str, seed: int) -> list[str]:
    workdir = Path(args.runs) / model / f"seed{seed}"
    return [
        sys.executable,
        "eval.py",
        f"--workdir={workdir}",
        "--step=best",
        f"--seed={seed}",
        f"--sections={args.sections}",
        "--generation=sample",  # the papers' protocol: z ~ q(z|x_S), private latents ~ p(w)
        *shlex.split(args.eval_flags),
    ]


def train_all(args, models: list[str], seeds: list[int]) -> dict[str, str]:
    """Start every model's sweep at once; stop those still running after ``--train_minutes``. Returns each
    model's outcome: 'trained', 'stopped at the time limit', 'failed (exit N)' or 'kept' (already trained)."""
    logs = ROOT / args.runs / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    running, outcome = {}, {}
    for model in models:
        epochs = target_epochs(args, model)
        pending = [s for s in seeds if results.epochs_done(Path(args.runs) / model / f"seed{s}") < epochs]
        if not pending:
            outcome[model] = "kept"
            print(f"  {model}: every seed has its {epochs} epochs: kept", flush=True)
            continue
        command = train_command(args, model, pending)
        print("$", shlex.join(command), flush=True)
        log = open(logs / f"{model}.log", "a")
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        running[model] = (subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    deadline = None if args.train_minutes is None else time.monotonic() + 60 * args.train_minutes
    while any(p.poll() is None for p, _ in running.values()):
        if deadline is not None and time.monotonic() > deadline:
            for model, (process, _) in running.items():
                if process.poll() is None:
                    print(f"  {model}: --train_minutes={args.train_minutes} passed: stopping it (SIGTERM)", flush=True)
                    process.send_signal(signal.SIGTERM)
                    outcome[model] = "stopped at the time limit"
            for process, _ in running.values():
                try:
                    process.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
            break
        time.sleep(2)
    for model, (process, log) in running.items():
        log.close()
        if model not in outcome:
            outcome[model] = "trained" if process.returncode == 0 else f"failed (exit {process.returncode})"
        print(f"  {model}: {outcome[model]}", flush=True)
    return outcome


EVALUATED = "reproduce_polymnist.json"  # beside eval/metrics.json: the eval.py command that wrote it


def evaluated(args, model: str, seed: int) -> bool:
    """Whether the run's eval/metrics.json is of its current best epoch, written by this script's eval.py
    command (the same sections and flags)."""
    workdir = ROOT / args.runs / model / f"seed{seed}"
    path, note = workdir / "eval" / "metrics.json", workdir / "eval" / EVALUATED
    if not (path.is_file() and note.is_file()):
        return False
    metrics, command = json.loads(path.read_text()), json.loads(note.read_text()).get("command")
    return metrics.get("epoch") == results.best_epoch(Path(args.runs) / model / f"seed{seed}") and command == (
        eval_key(args, model, seed)
    )


def eval_key(args, model: str, seed: int) -> str:
    return shlex.join(eval_command(args, model, seed)[1:])


def evaluate_all(args, models: list[str], seeds: list[int]) -> list[str]:
    """eval.py on every trained seed (a model's first seed first); the failures, as lines to report."""
    slots, failed = threading.BoundedSemaphore(args.eval_jobs), []
    env = results.jobs_env(args.eval_jobs, cap_threads=True)

    def evaluate(model, seed):
        workdir = Path(args.runs) / model / f"seed{seed}"
        if results.best_epoch(workdir) is None:
            return  # no epoch finished: nothing to score
        if evaluated(args, model, seed):
            print(f"  {workdir} was evaluated at its best epoch with these flags: kept", flush=True)
            return
        with slots, open(ROOT / args.runs / "logs" / f"{model}_seed{seed}.log", "a") as log:
            if results.run_or_report(eval_command(args, model, seed), log, env, failed):
                note = {"command": eval_key(args, model, seed)}
                (ROOT / workdir / "eval" / EVALUATED).write_text(json.dumps(note) + "\n")

    def evaluate_model(model):
        evaluate(model, seeds[0])
        with ThreadPoolExecutor(len(seeds)) as pool:
            list(pool.map(lambda seed: evaluate(model, seed), seeds[1:]))

    with ThreadPoolExecutor(len(models)) as pool:
        list(pool.map(evaluate_model, models))
    return failed


def main(argv=None) -> None:
    # This process only starts and reads the others; were it to start JAX on a GPU (the machine line of the
    # report does), it must not take the memory the trainings and evaluations need.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    parser = make_parser()
    args = parser.parse_args(argv)
    models, seeds = check_args(parser, args)
    outcome, failed = {}, []
    if not args.summarize_only:
        start = time.perf_counter()
        outcome = train_all(args, models, seeds)
        print(f"training: {time.perf_counter() - start:.0f} s", flush=True)
        failed = evaluate_all(args, models, seeds)
    write_report(args, models, seeds, outcome)
    if failed:
        raise SystemExit("failed evaluations (the report leaves them out):\n" + "\n".join(failed))


def write_report(args, models: list[str], seeds: list[int], outcome: dict[str, str]) -> None:
    from mvae_jax.evaluation import report
    from mvae_jax.training.validation import read_records

    machine = results.machine_of(Path(args.runs), record=not args.summarize_only)
    budget_rows, table_rows = [], []
    for model in models:
        workdirs = {s: Path(args.runs) / model / f"seed{s}" for s in seeds}
        done = {s: results.epochs_done(w) for s, w in workdirs.items()}
        best = {s: results.best_epoch(w) for s, w in workdirs.items()}
        seconds = [results.train_seconds(read_records(ROOT / w / "metrics.jsonl")) for w in workdirs.values()]
        epochs = sorted(set(done.values()))
        reached = "-".join(map(str, (epochs[0], epochs[-1]) if len(epochs) > 1 else epochs))
        budget_rows.append(
            f"| {model} | `{recipe(model)}` | {reached} of {target_epochs(args, model)} | "
            f"{', '.join(str(best[s]) for s in seeds)} | {max(seconds, default=0):.0f} s | "
            f"{outcome.get(model, '(not run by this call)')} |"
        )
        scored = []
        for s, w in workdirs.items():
            path = ROOT / w / "eval" / "metrics.json"
            if path.is_file() and evaluated(args, model, s):
                scored.append(json.loads(path.read_text()).get("coherence_by_inputs", {}))
        cells = [report.format_cell([m[k] for m in scored if k in m], 4) if scored else "" for k in (*INPUTS, "mean")]
        table_rows.append(f"| **{model}, ours** ({len(scored)} of {len(seeds)} seeds) | " + " | ".join(cells) + " |")
        for source, values in PUBLISHED[model]:
            table_rows.append(f"| {model}: {source} | " + " | ".join(str(values.get(k, "")) for k in INPUTS) + " | |")
    command = shlex.join(["python", "scripts/reproduce_polymnist.py", *sys.argv[1:]])
    lines = [
        "# PolyMNIST: the published recipes reproduced",
        "",
        "Written by `scripts/reproduce_polymnist.py`.",
        "",
        f"Machine: {machine}. Data: PolyMNIST built from MNIST and the background images (docs/POLYMNIST.md),",
        "the training examples each recipe says held out for validation; each run's best-validation epoch scored",
        "once on the test set; mean ± std over the seeds.",
        "",
        "```",
        command,
        "```",
        "",
        f"Extra train.py flags: `{args.train_flags or 'none'}`; eval.py: `--sections={args.sections}"
        + (f" {args.eval_flags}`" if args.eval_flags else "`"),
        "",
        "## Budget: the epochs each model reached",
        "",
        "| model | recipe | epochs reached (of the recipe's) | best epoch per seed | training time | this call |",
        "|---|---|---|---|---|---|",
        *budget_rows,
        "",
        "## Coherence by number of inputs, against the published numbers",
        "",
        "The share of the test examples whose generated target modality the scorer classifies as their digit,",
        "averaged over the subsets of 1, 2, 3 or 4 inputs and every other modality as target (MoPoE's",
        "definition); `mean` is the mean over all those (subset, target) pairs. Generated as the papers do",
        "(`eval.py --generation=sample`): one z drawn from the posterior of the inputs per example, a model's",
        "private latents drawn from their prior. A model whose epochs reached are short of its recipe's was",
        "cut by the time limit: its row is not at the published budget.",
        "",
        "| model | 1 input | 2 | 3 | 4 | mean |",
        "|---|---|---|---|---|---|",
        *table_rows,
        "",
    ]
    reading = results.kept_reading(ROOT / args.out)
    (ROOT / args.out).parent.mkdir(parents=True, exist_ok=True)
    (ROOT / args.out).write_text("\n".join(lines + reading).rstrip("\n") + "\n")
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
