"""PEMVAE's ablations on validation, then the test comparison with JMVAE, TELBO and MVAE (docs/PEMVAE.md).

    python scripts/pemvae_study.py --data_dir=../shared/datasets

1. Validation. Every variant of ``VARIANTS`` is trained on each of ``--seeds``
   with ``train.py --model=pemvae --validation=N`` (the last N training pairs
   of the fixed permutation are held out), then scored with
   ``eval.py --split=validation`` (coherence and latent accuracy). JMVAE,
   TELBO and MVAE are trained and scored on validation the same way, on every
   seed of ``--final_seeds``.
2. Choice. The variant with the best mean, over its seeds, of the six target
   metrics on validation (latent accuracy of q(z|x) and q(z|y); coherence
   x->w, y->w, x->y, y->x) is chosen. Nothing of the test pairs is read.
3. Test. The chosen variant is trained on the seeds of ``--final_seeds`` it
   lacks, and the four models are scored once on the test pairs
   (``eval.py --split=test``), with the tSNE figure for seed 0.

Every step is the command a user types (printed into the log), run from the
repository root; up to ``--jobs`` run at once. A training already at its
epochs, or an evaluation already done with the same flags, is kept, so an
interrupted study resumes where it stopped. ``--deadline_s`` stops starting
new commands after that many seconds: the study is then incomplete, and the
summary says which runs are missing. The summary (``<runs>/study.json``) and
the Markdown tables (``<runs>/study.md``) are written at the end.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import json
from pathlib import Path
import shlex
import statistics
import subprocess
import sys
import threading
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mvae_jax.data import DATASETS  # noqa: E402 (needs ROOT on the path)
from mvae_jax.evaluation.report import single_modality_scores  # noqa: E402

TARGETS = single_modality_scores(DATASETS["trimodal"], ("x", "y", "w"))

# The pemvae defaults of the code before this study; the study chose other ones (all subsets, unimodal weight 3),
# so every variant states these, and a rerun trains what docs/PEMVAE.md reports.
BEFORE = {"subset_sampling": "random", "unimodal_weight": 1.0}

# name: pemvae flags beyond the defaults of the code before this study; each tests one question of docs/PEMVAE.md.
_CHANGES = {
    "baseline": {},  # one uniform random proper subset per example, subset ELBO + KL, tokens, warm-up 1
    "all_subsets": {"subset_sampling": "all"},
    "all_subsets_uni3": {"subset_sampling": "all", "unimodal_weight": 3.0},
    "kl_only": {"subset_objective": "kl"},
    "elbo_only": {"subset_objective": "elbo"},
    "kl_weight_0.1": {"subset_kl_weight": 0.1},
    "kl_weight_5": {"subset_kl_weight": 5.0},
    "freeze_encoder": {"freeze_encoder": True},
    "warmup_0": {"warmup_epochs": 0},
    "warmup_5": {"warmup_epochs": 5},
    "fusion_mean": {"fusion": "mean"},
    "fusion_zero": {"fusion": "zero"},
    "dropout_0.5": {"modality_dropout": 0.5},
    "targets_all": {"subset_targets": "all"},
    "all_subsets_targets_all": {"subset_sampling": "all", "subset_targets": "all"},
    "all_subsets_kl_only": {"subset_sampling": "all", "subset_objective": "kl"},
    "all_subsets_kl_only_0.1": {"subset_sampling": "all", "subset_objective": "kl", "subset_kl_weight": 0.1},
    "all_subsets_targets_all_uni3": {"subset_sampling": "all", "subset_targets": "all", "unimodal_weight": 3.0},
    # Round 2: combinations of the single changes that helped on validation in round 1 (docs/PEMVAE.md).
    "all_dropout": {"subset_sampling": "all", "modality_dropout": 0.5},
    "all_uni3_dropout": {"subset_sampling": "all", "unimodal_weight": 3.0, "modality_dropout": 0.5},
    "all_kl5": {"subset_sampling": "all", "subset_kl_weight": 5.0},
    "all_uni3_kl5": {"subset_sampling": "all", "unimodal_weight": 3.0, "subset_kl_weight": 5.0},
    "all_uni3_dropout_kl5": {
        "subset_sampling": "all",
        "unimodal_weight": 3.0,
        "modality_dropout": 0.5,
        "subset_kl_weight": 5.0,
    },
    "all_uni3_dropout_kl5_warmup0": {
        "subset_sampling": "all",
        "unimodal_weight": 3.0,
        "modality_dropout": 0.5,
        "subset_kl_weight": 5.0,
        "warmup_epochs": 0,
    },
    "all_dropout_kl_only": {"subset_sampling": "all", "modality_dropout": 0.5, "subset_objective": "kl"},
}
VARIANTS = {name: {**BEFORE, **changes} for name, changes in _CHANGES.items()}
BASELINES = ("jmvae", "telbo", "mvae")
SECTIONS = "coherence,latent_accuracy"


class Study:
    def __init__(self, args):
        self.args = args
        self.python = sys.executable
        self.runs = Path(args.runs)
        (ROOT / self.runs).mkdir(parents=True, exist_ok=True)
        self.log = open(ROOT / self.runs / "study.log", "a")
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.commands: list[list[str]] = []
        self.skipped: list[str] = []
        self.deadline = args.deadline_s

    def out_of_time(self) -> bool:
        return self.deadline > 0 and time.monotonic() - self.start > self.deadline

    def run(self, command: list[str]) -> bool:
        """Run ``command`` from the repository root, output into the log; False if skipped for the deadline."""
        text = shlex.join(["python" if c == self.python else c for c in command])
        with self.lock:
            self.commands.append(command)
            if self.args.summarize_only:
                return False
            if self.out_of_time():
                self.skipped.append(text)
                return False
            print(f"[{time.monotonic() - self.start:6.0f} s] $ {text}", flush=True)
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        with self.lock:
            self.log.write(f"$ {text}\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}\n")
            self.log.flush()
        if proc.returncode:
            print(f"FAILED ({proc.returncode}): {text}\n{proc.stderr[-3000:]}", flush=True)
        return proc.returncode == 0

    def train(self, workdir: Path, model: str, flags: dict, seed: int) -> bool:
        command = [
            self.python,
            "train.py",
            f"--model={model}",
            f"--epochs={self.args.epochs}",
            f"--seed={seed}",
            f"--validation={self.args.validation}",
            f"--workdir={workdir}",
        ]
        command += [f"--{k}" if v is True else f"--{k}={v}" for k, v in flags.items()]
        if self.args.data_dir:
            command.append(f"--data_dir={self.args.data_dir}")
        command += shlex.split(self.args.train_flags)
        if _epochs_done(ROOT / workdir) >= self.args.epochs:
            with self.lock:
                self.commands.append(command)
            return True
        return self.run(command)

    def evaluate(self, workdir: Path, split: str, tsne: bool = False) -> bool:
        sections = SECTIONS + (",tsne" if tsne else "")
        command = [
            self.python,
            "eval.py",
            f"--workdir={workdir}",
            f"--split={split}",
            f"--sections={sections}",
            f"--latent_train_points={self.args.latent_train_points}",
            f"--tsne_points={self.args.tsne_points}",
        ]
        if self.args.classifier_dir:
            command.append(f"--classifier_dir={self.args.classifier_dir}")
        command += shlex.split(self.args.eval_flags)
        if _evaluated(ROOT / workdir, split, sections.split(","), self.args):
            with self.lock:
                self.commands.append(command)
            return True
        return self.run(command)

    def job(self, workdir: Path, model: str, flags: dict, seed: int, splits: tuple[str, ...], tsne: bool = False):
        if self.train(workdir, model, flags, seed):
            for split in splits:
                self.evaluate(workdir, split, tsne=tsne and split == "test")


def _epochs_done(workdir: Path) -> int:
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return 0
    epochs = [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]
    return max(epochs, default=0)


def _evaluated(workdir: Path, split: str, sections, args) -> bool:
    path = workdir / ("eval" if split == "test" else f"eval_{split}") / "metrics.json"
    if not path.is_file():
        return False
    metrics = json.loads(path.read_text())
    flags = metrics.get("eval_flags", {})
    return (
        metrics.get("epoch") == args.epochs
        and set(sections) <= set(flags.get("sections", ()))
        and flags.get("latent_train_points") == args.latent_train_points
        and all(s in metrics for s in sections if s != "tsne")
    )


def _metrics(workdir: Path, split: str) -> dict | None:
    path = workdir / ("eval" if split == "test" else f"eval_{split}") / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _targets(metrics: dict) -> dict[str, float]:
    return {f"{'acc' if s == 'latent_accuracy' else 'coh'} {k}": metrics[s][k] for s, k in TARGETS}


def _mean_std(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else (None, None)


def summarize(study: Study, chosen: str | None, selection: dict) -> dict:
    args = study.args
    out = {
        "epochs": args.epochs,
        "validation": args.validation,
        "seeds": args.seeds,
        "final_seeds": args.final_seeds,
        "latent_train_points": args.latent_train_points,
        "chosen": chosen,
        "selection": selection,
        "validation_runs": {},
        "test": {},
        "skipped": study.skipped,
    }
    rows = [(f"pemvae:{v}", study.runs / "pemvae" / v, args.seeds) for v in VARIANTS]
    rows += [(m, study.runs / m, args.final_seeds) for m in args.baselines]
    for name, parent, seeds in rows:
        per_seed = {}
        for seed in seeds:
            m = _metrics(ROOT / parent / f"seed{seed}", "validation")
            if m is not None:
                per_seed[seed] = {**_targets(m), "params": m["params"]}
        out["validation_runs"][name] = per_seed
    finals = [(m, study.runs / m) for m in args.baselines]
    if chosen is not None:
        finals.append((f"pemvae:{chosen}", study.runs / "pemvae" / chosen))
    for name, parent in finals:
        per_seed = {}
        for seed in args.final_seeds:
            workdir = ROOT / parent / f"seed{seed}"
            m = _metrics(workdir, "test")
            if m is not None:
                epochs = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
                per_seed[seed] = {
                    **_targets(m),
                    "params": m["params"],
                    "coherence": m["coherence"],
                    "latent_accuracy": m["latent_accuracy"],
                    "train_s": sum(e["time_s"] for e in epochs),
                }
        out["test"][name] = per_seed
    return out


def markdown(summary: dict) -> str:
    keys = [f"{'acc' if s == 'latent_accuracy' else 'coh'} {k}" for s, k in TARGETS]
    lines = [
        f"**Validation** (each seed, then the mean; {summary['validation']} held-out training pairs)",
        "",
        "| run | seed | params | " + " | ".join(keys) + " | mean of six |",
        "|" + "---|" * (len(keys) + 4),
    ]
    for name, per_seed in summary["validation_runs"].items():
        for seed, m in sorted(per_seed.items()):
            vals = [m[k] for k in keys]
            lines.append(
                f"| {name} | {seed} | {m['params']:,} | "
                + " | ".join(f"{v:.4f}" for v in vals)
                + f" | {statistics.mean(vals):.4f} |"
            )
        if len(per_seed) > 1:
            means = [statistics.mean(m[k] for m in per_seed.values()) for k in keys]
            lines.append(
                f"| **{name}** | mean | | "
                + " | ".join(f"{v:.4f}" for v in means)
                + f" | **{statistics.mean(means):.4f}** |"
            )
    lines += ["", f"Chosen on validation: **{summary['chosen']}**", ""]
    lines += [
        "**Test** (mean ± std over seeds " + ",".join(map(str, summary["final_seeds"])) + ")",
        "",
        "| model | seeds | params | " + " | ".join(keys) + " | train s |",
        "|" + "---|" * (len(keys) + 4),
    ]
    for name, per_seed in summary["test"].items():
        if not per_seed:
            continue
        cells = []
        for k in keys:
            mean, std = _mean_std([m[k] for m in per_seed.values()])
            cells.append(f"{mean:.4f} ± {std:.4f}")
        params = next(iter(per_seed.values()))["params"]
        train_s, _ = _mean_std([m["train_s"] for m in per_seed.values()])
        lines.append(f"| {name} | {len(per_seed)} | {params:,} | " + " | ".join(cells) + f" | {train_s:.0f} |")
    if summary["skipped"]:
        lines += ["", "Not run (deadline): " + "; ".join(f"`{c}`" for c in summary["skipped"])]
    return "\n".join(lines) + "\n"


def choose(study: Study) -> tuple[str | None, dict]:
    """The variant with the best mean of the six validation targets over ``--seeds``, among complete ones."""
    scores = {}
    for variant in VARIANTS:
        values = []
        for seed in study.args.seeds:
            m = _metrics(ROOT / study.runs / "pemvae" / variant / f"seed{seed}", "validation")
            if m is None:
                break
            values.append(statistics.mean(_targets(m).values()))
        else:
            scores[variant] = statistics.mean(values)
    if not scores:
        return None, scores
    return max(scores, key=scores.get), scores


def main(argv=None) -> None:
    """The script's steps in the order they run (long: a script, read top to bottom)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None, help="as in train.py")
    parser.add_argument("--runs", default="runs/pemvae_study", help="parent of the workdirs")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--validation", type=int, default=5000, help="training pairs held out (train.py --validation)")
    parser.add_argument("--seeds", default="0,1", help="seeds of the ablation runs")
    parser.add_argument("--final_seeds", default="0,1,2", help="seeds of the test comparison")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma separated subset of VARIANTS")
    parser.add_argument(
        "--latent_train_points",
        type=int,
        default=10_000,
        help="training pairs the latent-accuracy regressions are fit on (eval.py flag)",
    )
    parser.add_argument("--tsne_points", type=int, default=2000)
    parser.add_argument("--classifier_dir", default=None, help="eval.py --classifier_dir")
    parser.add_argument(
        "--baselines", default=",".join(BASELINES), help=f"comma separated, of {','.join(BASELINES)} (default: all)"
    )
    parser.add_argument("--train_flags", default="", help="more train.py flags for every run (e.g. smaller networks)")
    parser.add_argument("--eval_flags", default="", help="more eval.py flags for every evaluation")
    parser.add_argument("--jobs", type=int, default=1, help="commands run at once")
    parser.add_argument(
        "--summarize_only",
        action="store_true",
        help="run nothing: choose and tabulate from the evaluations already in --runs",
    )
    parser.add_argument(
        "--deadline_s",
        type=float,
        default=0,
        help="start no command of the ablations and baselines after this many seconds (0: none)",
    )
    parser.add_argument(
        "--final_deadline_s",
        type=float,
        default=0,
        help="once the variant is chosen, start no command after this many seconds (0: none)",
    )
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.final_seeds = [int(s) for s in args.final_seeds.split(",")]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; allowed: {','.join(VARIANTS)}")
    for v in list(VARIANTS):
        if v not in variants:
            del VARIANTS[v]

    args.baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    if bad := [b for b in args.baselines if b not in BASELINES]:
        parser.error(f"--baselines: unknown {bad}; allowed: {','.join(BASELINES)}")
    study = Study(args)
    # Own scoring CNNs (--classifier_dir or --classifier_epochs) once, before parallel evaluations could race to
    # train them; by default eval.py scores with the shipped ones and nothing is trained.
    from mvae_jax import classifiers

    flags = shlex.split(args.eval_flags)
    epochs = next((int(f.split("=")[1]) for f in flags if f.startswith("--classifier_epochs=")), 0)
    if not args.summarize_only and (args.classifier_dir or epochs):
        for name in ("mnist", "fashion_mnist"):
            recipe = classifiers.Recipe(epochs=epochs) if epochs else classifiers.default_recipe(name)
            classifiers.load_or_train(name, args.data_dir, args.classifier_dir, recipe)

    with ThreadPoolExecutor(args.jobs) as pool:
        ablations, baselines = [], []
        final_seeds = args.final_seeds
        for i in range(max(len(args.seeds), len(final_seeds))):  # seed by seed, so a deadline cuts whole seeds
            if i < len(final_seeds):
                for model in args.baselines:
                    baselines.append(
                        pool.submit(
                            study.job,
                            study.runs / model / f"seed{final_seeds[i]}",
                            model,
                            {},
                            final_seeds[i],
                            ("validation", "test"),
                            tsne=i == 0,
                        )
                    )
            if i < len(args.seeds):
                for variant, flags in VARIANTS.items():
                    ablations.append(
                        pool.submit(
                            study.job,
                            study.runs / "pemvae" / variant / f"seed{args.seeds[i]}",
                            "pemvae",
                            flags,
                            args.seeds[i],
                            ("validation",),
                        )
                    )
        for f in ablations:
            f.result()
        chosen, scores = choose(study)
        study.deadline = args.final_deadline_s
        print(
            f"[{time.monotonic() - study.start:6.0f} s] validation means: "
            + ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items(), key=lambda kv: -kv[1])),
            flush=True,
        )
        finals = []
        if chosen is not None:
            print(f"chosen on validation: {chosen} {VARIANTS[chosen]}", flush=True)
            for seed in final_seeds:
                workdir = study.runs / "pemvae" / chosen / f"seed{seed}"
                finals.append(
                    pool.submit(
                        study.job, workdir, "pemvae", VARIANTS[chosen], seed, ("test",), tsne=seed == final_seeds[0]
                    )
                )
        for f in baselines + finals:
            f.result()

    summary = summarize(study, chosen, scores)
    if chosen is not None:
        seed0 = [study.runs / m / f"seed{final_seeds[0]}" for m in args.baselines]
        seed0.append(study.runs / "pemvae" / chosen / f"seed{final_seeds[0]}")
        if all((ROOT / w / "eval" / "tsne.npz").is_file() for w in seed0):
            study.run(
                [study.python, "eval.py", "--compare", *map(str, seed0), f"--out={study.runs / 'compare_tsne.png'}"]
            )
    summary["commands"] = [shlex.join(["python" if c == study.python else c for c in cmd]) for cmd in study.commands]
    summary["wall_s"] = round(time.monotonic() - study.start, 1)
    (ROOT / study.runs / "study.json").write_text(json.dumps(summary, indent=2) + "\n")
    (ROOT / study.runs / "study.md").write_text(markdown(summary))
    print(markdown(summary))
    print(f"wrote {study.runs / 'study.json'} and study.md in {summary['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
