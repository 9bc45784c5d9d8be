"""Training and evaluation speed of every model, against this machine's measured matmul peak.

    python bench/throughput.py [--models=jmvae,telbo,...] [--batch_size=128] [--epochs=2]
                               [--devices=1,8] [--precision=fp32|bf16] [--no_eval]
                               [--examples=60000] [--eval_points=10000] [--tsne_points=5000]
                               [--adversarial=auto|conv] [--missing=RATE] [--dataset=trimodal|polymnist]

For each model, on random data of the shapes of ``--dataset`` held on the device (60,000 training
examples): the trimodal set's (x, y 28x28 pixel probabilities binarized afresh at every step, as
mnist_label's x is in train.py and as bench/peer_multivae.py's MultiVae side does; train.py's trimodal set
is not binarized, and the draws cost little beside the step; w one-hot labels) with the models' default
MLPs, or PolyMNIST's (5 RGB 28x28 images, a Laplace likelihood) with MoPoE's conv networks. Each model
runs with the settings of ``bench/settings.py`` (on PolyMNIST its published recipe: latent 512, beta 2.5;
MMVAE+ and CMVAE 32 + 32, K = 1):

- training samples/s: the best of ``--epochs`` timed epochs (one compiled
  ``lax.scan`` each), after an epoch that compiles;
- GFLOP/s: XLA's own FLOP count of one compiled step (every op, summed over
  the devices; for JMVAE on one device 98% of it is the dense layers) times
  steps per second, and its fraction
  of the float32 matmul peak (the best of large jitted matmuls, measured
  before the models; each model is printed as soon as it is measured, and the
  peak measured again after them is printed at the end); on a GPU or TPU also of
  the bfloat16 peak, and the fraction is against the peak of ``--precision``;
- compile_s: compiling the epoch's chunk programs (``EpochFn.compile``), which
  the timed epochs then reuse, as train.py does;
- memory: XLA's buffers of the compiled chunk of 10 steps (arguments + temporaries),
  the device's peak bytes in use where the backend reports it (GPU, TPU),
  and this process's peak resident memory;
- evaluation (unless ``--no_eval``): coherence of every subset -> modality
  pair over 10,000 test pairs (images scored by the evaluation classifier
  CNN; its weights do not change the time), and the tSNE of eval.py (openTSNE) of
  5,000 posterior means (eval.py's default; one panel, eval.py draws three).

``--adversarial=auto`` also times each model's adversarial step (VAE-GAN,
``train.py --adversarial``) with the discriminators ``--disc_network=auto``
builds (MLPs for the trimodal images), ``conv`` with conv ones, and prints its
cost against the plain step of the same run.

``--missing=RATE`` also times each model's step on incomplete data (``train.py
--missing=RATE``: the presence mask travels with every batch) and prints its
cost against the complete step, their timed epochs interleaved.

``--devices=1,8`` runs the training measurement again in a subprocess per
count with that many forced CPU devices (XLA_FLAGS), for a CPU-only machine.
Every result is also printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import settings  # bench/settings.py: each model's settings per data set, shared with peer_multivae.py

from mvae_jax import cli, missing, training
from mvae_jax.config import Config
from mvae_jax.data import DATASETS
from mvae_jax.models import INCOMPLETE, MODELS, PRESENT, get_model

BINARIZED = {"trimodal": ("x", "y"), "polymnist": ()}  # the modalities the benchmark binarizes at every step


PEAK_SIZES = {"cpu": (1024, 2048, 3072), "accelerator": (4096, 8192)}  # n of the n x n matmuls the peak is the best of
PEAK_DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


def matmul_peak_gflops(sizes=None, repeats=5, dtype=jnp.float32) -> float:
    """Best GFLOP/s of a jitted n x n matmul (2 n^3 FLOPs) over ``sizes`` (default: ``PEAK_SIZES`` of the
    backend; a GPU needs larger ones to reach its peak). float32 runs at JAX's default matmul precision."""
    if sizes is None:
        sizes = PEAK_SIZES["cpu" if jax.default_backend() == "cpu" else "accelerator"]
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
        f = jax.jit(jnp.matmul)
        f(a, b).block_until_ready()
        for _ in range(repeats):
            start = time.perf_counter()
            f(a, b).block_until_ready()
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def dense_flops_per_example(params) -> int:
    """JMVAE: forward + backward FLOPs of every Dense kernel for one example (a hand count to check XLA's).

    6 * in * out per layer, less 2 * in * out for an encoder's first layer
    (no gradient flows into the data).
    """
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [getattr(p, "key", "") for p in path]
        if keys[-1] != "kernel":
            continue
        fan_in, fan_out = leaf.shape
        total += 6 * fan_in * fan_out
        if keys[0] in ("joint_encoder", "encoders") and "dense_0" in keys:
            total -= 2 * fan_in * fan_out
    return total


def synthetic(modalities, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random values of each modality's shape: pixel values in [0, 1] for images, one-hot rows for labels."""
    rng = np.random.default_rng(seed)
    return {
        m.name: np.eye(m.shape[-1], dtype=np.float32)[rng.integers(0, m.shape[-1], n)]
        if m.likelihood == "categorical"
        else rng.random((n, *m.shape), np.float32)
        for m in modalities
    }


def setup(model_name: str, dataset: str = "trimodal", **fields) -> tuple[Config, tuple]:
    """The validated Config of ``model_name`` on ``dataset`` (``bench/settings.py``'s settings, then ``fields``)
    and the data set's modalities."""
    config = Config(
        dataset=dataset, model=model_name, **{**settings.model_options(dataset, model_name), **fields}
    ).validate()
    return config, DATASETS[dataset].modalities(config)


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    return cost[0] if isinstance(cost, list) else cost


def _prepare(
    model_name: str,
    batch_size: int,
    n: int,
    precision: str,
    adversarial: str | None = None,
    missing_rate: float = 0.0,
    dataset: str = "trimodal",
) -> dict:
    """The compiled epoch of ``model_name`` on ``n`` synthetic examples of ``dataset``'s shapes, its state and
    data, and the facts measured while compiling it (see ``measure_training``)."""
    options = {"adversarial": True, "disc_network": adversarial} if adversarial else {}
    config, modalities = setup(model_name, dataset, batch_size=batch_size, precision=precision, **options)
    model = get_model(config, modalities)
    tx, adversary = training.make_optimizers(config, modalities)
    mesh = training.make_mesh()
    if batch_size % mesh.size:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the {mesh.size} devices")
    binarize = BINARIZED[dataset]
    state = training.replicate(training.create_train_state(model, tx, 0, adversary), mesh)
    pairs = synthetic(modalities, n)
    if missing_rate:
        present = missing.draw(n, model.names, {name: missing_rate for name in model.names}, seed=0)
        pairs = {k: v * present[:, i].reshape((-1,) + (1,) * (v.ndim - 1)) for i, (k, v) in enumerate(pairs.items())}
        pairs[PRESENT] = present
    data = training.replicate(pairs, mesh)
    one_batch = jax.tree_util.tree_map(lambda v: v[:batch_size], data)
    step = jax.jit(training.make_step_fn(model, tx, mesh, binarize, adversary)).lower(state, one_batch).compile()
    step_flops = _cost(step)["flops"] * mesh.size  # XLA counts one device's share of the SPMD program
    epoch_fn = training.make_epoch_fn(model, tx, n, batch_size, mesh, binarize=binarize, adversary=adversary)
    start = time.perf_counter()
    chunks = epoch_fn.compile(state, data)  # {chunk length: program}: what train.py's epochs run
    compile_s = time.perf_counter() - start
    memory = chunks[max(chunks)].memory_analysis()  # the longest chunk (10 steps, or the whole epoch if shorter)
    start = time.perf_counter()
    state, terms = epoch_fn(state, data)  # the programs compiled above are reused
    jax.block_until_ready(terms)
    return {
        "epoch_fn": epoch_fn,
        "state": state,
        "data": data,
        "first_epoch_s": time.perf_counter() - start,
        "compile_s": compile_s,
        "step_flops": step_flops,
        "chunks": chunks,
        "memory": memory,
        "dataset": dataset,
        "name": model_name
        + ("" if adversarial is None else f"+adv({adversarial})")
        + (f"+missing({missing_rate})" if missing_rate else ""),
    }


def _time_epoch(run: dict) -> float:
    """Seconds of one more epoch of a ``_prepare``d run (its state carried on)."""
    start = time.perf_counter()
    run["state"], terms = run["epoch_fn"](run["state"], run["data"])
    jax.block_until_ready(terms)
    return time.perf_counter() - start


def _result(run: dict, times: list[float], batch_size: int, n: int, precision: str) -> dict:
    steps = n // batch_size
    best = min(times)
    memory = run["memory"]
    result = {
        "model": run["name"],
        "dataset": run["dataset"],
        "batch_size": batch_size,
        "precision": precision,
        "devices": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "samples_per_s": steps * batch_size / best,
        "epoch_s": times,
        "compile_s": run["compile_s"],
        "first_epoch_s": run["first_epoch_s"],
        "xla_gflop_per_step": run["step_flops"] / 1e9,
        "gflops": steps * run["step_flops"] / best / 1e9,
        "chunk_steps": max(run["chunks"]),
        "xla_buffers_mib": (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / 2**20,
        "xla_temp_mib": memory.temp_size_in_bytes / 2**20,
    }
    if run["name"] == "jmvae":
        result["hand_dense_gflop_per_step"] = batch_size * dense_flops_per_example(run["state"].params) / 1e9
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    return result


def measure_training(
    model_name: str,
    batch_size: int,
    epochs: int,
    n: int = 60_000,
    precision: str = "fp32",
    adversarial: str | None = None,
    missing_rate: float = 0.0,
    dataset: str = "trimodal",
) -> dict:
    """Samples/s, XLA FLOPs per step and memory of ``model_name``'s training epoch on ``dataset``'s shapes (see
    the module docstring); ``adversarial`` ("auto" or "conv", the --disc_network): of its adversarial training;
    ``missing_rate``: on incomplete data, each modality missing with that probability (``train.py --missing``)."""
    run = _prepare(model_name, batch_size, n, precision, adversarial, missing_rate, dataset)
    times = [_time_epoch(run) for _ in range(epochs)]
    return _result(run, times, batch_size, n, precision)


def measure_masked_cost(
    model_name: str, batch_size: int, epochs: int, n: int, precision: str, missing_rate: float, dataset: str
) -> tuple[dict, dict]:
    """(complete, incomplete) results of ``model_name``'s epoch on complete data and on data with each modality
    missing with ``missing_rate``, their timed epochs interleaved (complete, incomplete, complete, ...) so that
    a machine whose speed drifts (a shared VM) slows both alike; the incomplete result carries
    ``cost_vs_plain``, the ratio of the best epochs."""
    plain = _prepare(model_name, batch_size, n, precision, dataset=dataset)
    masked = _prepare(model_name, batch_size, n, precision, missing_rate=missing_rate, dataset=dataset)
    times = {"plain": [], "masked": []}
    for _ in range(epochs):
        times["plain"].append(_time_epoch(plain))
        times["masked"].append(_time_epoch(masked))
    results = (
        _result(plain, times["plain"], batch_size, n, precision),
        _result(masked, times["masked"], batch_size, n, precision),
    )
    results[1]["cost_vs_plain"] = min(times["masked"]) / min(times["plain"])
    return results


def measure_evaluation(
    model_name: str, n: int = 10_000, tsne_points: int = 5_000, tsne: bool = True, dataset: str = "trimodal"
) -> dict:
    """Seconds of coherence over ``n`` test examples (every subset -> image modality pair) and of one tSNE of
    ``tsne_points`` posterior means."""
    from mvae_jax import classifiers, evaluation, figures
    from mvae_jax.networks import Classifier

    config, modalities = setup(model_name, dataset)
    model = get_model(config, modalities)
    params = model.init(jax.random.PRNGKey(0))
    test = synthetic(modalities, n, seed=1)
    labels = np.random.default_rng(1).integers(0, 10, n)
    images = [m for m in modalities if m.is_image]
    cnn = Classifier(10).init(jax.random.PRNGKey(2), jnp.zeros((1, *images[0].shape)))["params"]
    classify = {m.name: (lambda batch: classifiers.predict(cnn, batch)) for m in images}
    small = {k: v[: min(n, 1000)] for k, v in test.items()}
    evaluation.coherence(model, params, small, labels[: min(n, 1000)], classify)  # compiles
    start = time.perf_counter()
    scores = evaluation.coherence(model, params, test, labels, classify)
    seconds = time.perf_counter() - start
    result = {
        "model": model_name,
        "coherence_pairs": len(scores),
        "coherence_points": n,
        "coherence_s": seconds,
        "coherence_points_per_s": n / seconds,
    }
    if tsne:
        means = evaluation.posterior_means(model, params, {k: v[:tsne_points] for k, v in test.items()}, model.names)
        start = time.perf_counter()
        figures.tsne_embedding(means)
        result.update(tsne_points=tsne_points, tsne_s=time.perf_counter() - start)
    return result


def _in_subprocess(devices: int, args) -> list[dict]:
    """The training measurements of ``args`` with ``devices`` forced CPU devices, from a child process."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    cmd = [
        sys.executable,
        __file__,
        f"--models={args.models}",
        f"--batch_size={args.batch_size}",
        f"--epochs={args.epochs}",
        f"--precision={args.precision}",
        f"--examples={args.examples}",
        f"--dataset={args.dataset}",
        *([f"--adversarial={args.adversarial}"] if args.adversarial else []),
        "--no_eval",
        "--no_peak",
        f"--compilation_cache={args.compilation_cache}",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _report(r: dict, peaks: dict[str, float] | None) -> None:
    """Print one result (and its JSON line); ``peaks``: {precision: GFLOP/s} of the matmul peaks measured."""
    line = f"{r['model']:7s} {r['devices']}: {r['samples_per_s']:8.0f} samples/s, {r['gflops']:6.1f} GFLOP/s"
    if peaks:
        own = peaks.get(r["precision"], peaks["fp32"])
        r["fraction_of_peak"] = r["gflops"] / own
        line += f" = {100 * r['fraction_of_peak']:.0f}% of peak"
        for name, peak in peaks.items():
            r[f"fraction_of_{name}_peak"] = r["gflops"] / peak
        if len(peaks) > 1:
            line += " (" + ", ".join(f"{100 * r['gflops'] / p:.1f}% of the {n} peak" for n, p in peaks.items()) + ")"
    line += f", {r['xla_gflop_per_step']:.2f} GFLOP/step, XLA buffers {r['xla_buffers_mib']:.0f} MiB"
    if "device_peak_mib" in r:
        line += f", device peak {r['device_peak_mib']:.0f} MiB"
    if "cost_vs_plain" in r:
        line += f"; the step costs {r['cost_vs_plain']:.2f}x the plain one"
    print(line, flush=True)
    print(json.dumps(r), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(sorted(MODELS)))
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the compiling one (best is kept)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--devices", default=None, help="e.g. 1,8: forced CPU device counts, one subprocess each")
    parser.add_argument("--no_eval", action="store_true", help="training measurements only")
    parser.add_argument("--no_peak", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=int, default=60_000, help="training examples of the synthetic epoch")
    parser.add_argument(
        "--dataset",
        default="trimodal",
        choices=settings.DATASETS,
        help="the shapes, networks and settings (bench/settings.py) the models run with",
    )
    parser.add_argument("--eval_points", type=int, default=10_000, help="test pairs the coherence timing scores")
    parser.add_argument("--tsne_points", type=int, default=5_000, help="posterior means of the timed tSNE")
    parser.add_argument(
        "--adversarial",
        choices=("auto", "conv"),
        default=None,
        help="also time the adversarial step with the discriminators of train.py --disc_network=this",
    )
    parser.add_argument(
        "--missing",
        type=float,
        default=0.0,
        metavar="RATE",
        help="also time the step on incomplete data, each modality missing with this probability",
    )
    cli.add_compilation_cache_flag(parser, bench=True)
    args = parser.parse_args()
    cli.enable_compilation_cache(args.compilation_cache)
    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; allowed: {', '.join(sorted(MODELS))}")

    if args.devices:
        for count in (int(d) for d in args.devices.split(",")):
            for r in _in_subprocess(count, args):
                _report(r, None)
        return
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}), "
        f"jax {jax.__version__}",
        flush=True,
    )
    # The peaks: float32 everywhere, bfloat16 too on a GPU or TPU (on a CPU it is slower than float32).
    kinds = ["fp32"] if jax.default_backend() == "cpu" else ["fp32", "bf16"]
    peaks = {k: [] if args.no_peak else [matmul_peak_gflops(dtype=PEAK_DTYPES[k])] for k in kinds}
    # Each result is printed as soon as it is measured (a long run that is stopped keeps what it printed),
    # against the peak measured before the models; the peak after them is printed at the end.
    before = {k: v[0] for k, v in peaks.items()} if not args.no_peak else None
    for m in names:
        if args.missing and m in INCOMPLETE:  # the complete epochs interleaved with the incomplete ones
            plain, masked = measure_masked_cost(
                m, args.batch_size, args.epochs, args.examples, args.precision, args.missing, args.dataset
            )
        else:
            plain = measure_training(
                m, args.batch_size, args.epochs, n=args.examples, precision=args.precision, dataset=args.dataset
            )
        _report(plain, before)
        if args.adversarial:
            adv = measure_training(
                m, args.batch_size, args.epochs, args.examples, args.precision, args.adversarial, dataset=args.dataset
            )
            adv["cost_vs_plain"] = plain["samples_per_s"] / adv["samples_per_s"]
            _report(adv, before)
        if args.missing and m in INCOMPLETE:
            _report(masked, before)
    if not args.no_peak:
        for k in kinds:
            peaks[k].append(matmul_peak_gflops(dtype=PEAK_DTYPES[k]))
            name = {"fp32": "float32", "bf16": "bfloat16"}[k]
            print(
                f"{name} matmul peak: {max(peaks[k]):.1f} GFLOP/s (before / after the models: "
                f"{' / '.join(f'{p:.1f}' for p in peaks[k])})",
                flush=True,
            )
    if not args.no_eval:
        for i, m in enumerate(names):
            r = measure_evaluation(m, args.eval_points, args.tsne_points, tsne=i == 0, dataset=args.dataset)
            text = (
                f"{m:7s} eval: coherence of {r['coherence_pairs']} pairs over {r['coherence_points']} test pairs "
                f"in {r['coherence_s']:.1f} s ({r['coherence_points_per_s']:.0f} test pairs/s)"
            )
            if "tsne_s" in r:
                text += f"; tSNE of {r['tsne_points']} means {r['tsne_s']:.1f} s"
            print(text, flush=True)
            print(json.dumps(r), flush=True)
    print(f"process peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
