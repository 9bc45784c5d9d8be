"""What a seed sweep of N runs costs against one run: train.py itself, on real data, N = 1, 4, 16.

    python bench/sweep_cost.py --data_dir=../shared/datasets [--dataset=polymnist] [--model=mopoe]
                               [--seeds=1,4,16] [--train_examples=12800] [--train_flags=...]

For each N, ``train.py --seed=0,...,N-1`` (one vmapped program, docs/training.md) trains 2 epochs of the first
``--train_examples`` training examples (``--validation`` held out first), in a scratch folder; the second
epoch's time (``time_s`` in metrics.jsonl: the compiled epoch alone, after the first epoch compiled it) is the
measurement. Printed per N: the epoch's seconds, its cost against one run's epoch (``over_one_run``; issue
28's target for N = 16 on a GPU: at most 2), and against N runs of one after another (``over_n_runs``: 1/N
would be free, 1 no gain). PolyMNIST runs at ``bench/settings.py``'s
recipe for the model (MoPoE's: latent 512, beta 2.5, a Laplace likelihood) unless ``--train_flags`` say
otherwise. Each result is also printed as one JSON line.

On a GPU a step of batch 128 is launch-bound (docs/PERFORMANCE.md), so a sweep of 16 should cost far less
than 16 runs (issue 28's target: at most 2 times one run). On a CPU the sweep's work grows with N.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import shlex
import subprocess
import sys
import tempfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import settings  # noqa: E402  (bench/settings.py)


def model_flags(dataset: str, model: str) -> list[str]:
    """train.py flags of bench/settings.py's options for ``model`` on ``dataset`` (none for other data sets)."""
    if dataset not in settings.DATASETS:
        return []
    options = {k: v for k, v in settings.model_options(dataset, model).items() if k != "epochs"}
    return [f"--{k}={v}" for k, v in options.items()]


def measure(args, n: int, scratch: Path) -> dict:
    workdir = scratch / f"n{n}"
    command = [
        sys.executable,
        "train.py",
        f"--model={args.model}",
        f"--dataset={args.dataset}",
        f"--seed={','.join(map(str, range(n)))}",
        "--epochs=2",
        f"--train_examples={args.train_examples}",
        f"--validation={args.validation}",
        f"--batch_size={args.batch_size}",
        f"--workdir={workdir}",
        *([f"--data_dir={args.data_dir}"] if args.data_dir else []),
        *model_flags(args.dataset, args.model),
        *shlex.split(args.train_flags),
    ]
    print("$", shlex.join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"train.py exited {done.returncode}:\n{done.stderr[-3000:]}")
    first = workdir / "seed0" if n > 1 else workdir
    lines = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines() if line.strip()]
    second = next(r for r in lines if r["epoch"] == 2)
    return {"runs": n, "epoch_s": second["time_s"], "first_epoch_s": lines[0]["time_s"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="as in train.py")
    parser.add_argument("--dataset", default="polymnist")
    parser.add_argument("--model", default="mopoe")
    parser.add_argument("--seeds", default="1,4,16", help="the sweep sizes N, comma separated")
    parser.add_argument("--train_examples", type=int, default=12_800)
    parser.add_argument("--validation", type=int, default=1_000)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--train_flags", default="", help="more train.py flags")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds={args.seeds!r}: allowed: comma-separated integers >= 1, e.g. 1,4,16")
    if not sizes or min(sizes) < 1:
        parser.error(f"--seeds={args.seeds!r}: allowed: comma-separated integers >= 1, e.g. 1,4,16")
    if args.train_examples < 2 * args.batch_size:
        parser.error(f"--train_examples={args.train_examples}: allowed: at least 2 batches ({2 * args.batch_size})")
    import jax

    device = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in sizes:
            results.append(measure(args, n, Path(scratch)))
    single = next((r["epoch_s"] for r in results if r["runs"] == 1), None)
    steps = args.train_examples // args.batch_size
    print(f"\n{args.model} on {args.dataset}, {steps} steps of {args.batch_size} per epoch, {device}")
    print("| runs N | epoch s | against one run | against N runs of one |\n|---|---|---|---|")
    for r in results:
        r.update(model=args.model, dataset=args.dataset, device=device, steps=steps, batch_size=args.batch_size)
        if single:
            r.update(over_one_run=r["epoch_s"] / single, over_n_runs=r["epoch_s"] / (r["runs"] * single))
        ratios = f"{r['over_one_run']:.2f}x | {r['over_n_runs']:.2f}" if single else " | "
        print(f"| {r['runs']} | {r['epoch_s']:.2f} | {ratios} |")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main(sys.argv[1:])
