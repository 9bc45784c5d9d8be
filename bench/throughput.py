"""Training throughput of the default JMVAE-kl step, and its share of this machine's float32 matmul peak.

    python bench/throughput.py [--batch_sizes=128,512] [--epochs=3]

Prints samples/s and achieved GFLOP/s per batch size. FLOPs count the dense
layers only, forward + backward: 6 * in * out per layer and example, less
2 * in * out for each encoder's first layer (no gradient flows into the data).
The peak is the best of several large jitted float32 matmuls, measured here.
Data are random arrays of the trimodal shapes (60,000 examples), on the device.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax import training
from mvae_jax.config import Config
from mvae_jax.data import trimodal
from mvae_jax.models import get_model


def matmul_peak_gflops(sizes=(1024, 2048, 3072), repeats=5) -> float:
    """Best GFLOP/s of a jitted float32 n x n matmul (2 n^3 FLOPs)."""
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
        f = jax.jit(jnp.matmul)
        f(a, b).block_until_ready()
        for _ in range(repeats):
            start = time.perf_counter()
            f(a, b).block_until_ready()
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def dense_flops_per_example(params) -> int:
    """Forward + backward FLOPs of every Dense kernel for one example (see module docstring)."""
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


def synthetic_trimodal(n: int, seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.random((n, 28, 28, 1), np.float32),
        "y": rng.random((n, 28, 28, 1), np.float32),
        "w": np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)],
    }


def measure(batch_size: int, epochs: int, n: int = 60_000, model_name: str = "jmvae", **options) -> dict:
    config = Config(model=model_name, batch_size=batch_size, **options).validate()
    model = get_model(config, trimodal.MODALITIES)
    tx = training.make_optimizer(config)
    mesh = training.make_mesh()
    state = training.replicate(training.create_train_state(model, tx, 0), mesh)
    data = training.replicate(synthetic_trimodal(n), mesh)
    epoch_fn = training.make_epoch_fn(model, tx, n, batch_size, mesh)
    start = time.perf_counter()
    state, terms = epoch_fn(state, data)  # compiles
    jax.block_until_ready(terms)
    first = time.perf_counter() - start
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        state, terms = epoch_fn(state, data)
        jax.block_until_ready(terms)
        times.append(time.perf_counter() - start)
    samples = (n // batch_size) * batch_size
    best = min(times)
    flops = dense_flops_per_example(state.params)
    return {
        "batch_size": batch_size,
        "samples_per_s": samples / best,
        "gflops": samples * flops / best / 1e9,
        "first_epoch_s_with_compile": first,
        "epoch_s": times,
        "mflop_per_example": flops / 1e6,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_sizes", default="128,512")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the compiling one (best is kept)")
    parser.add_argument("--model", default="jmvae", help="registry name; GFLOP/s are counted for jmvae only")
    parser.add_argument("--num_samples", type=int, default=None, help="mmvae's K (default: the config's)")
    args = parser.parse_args()
    options = {} if args.num_samples is None else {"num_samples": args.num_samples}
    peak = matmul_peak_gflops()
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}")
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s")
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        r = measure(bs, args.epochs, model_name=args.model, **options)
        if args.model != "jmvae":
            # The FLOP count applies each layer once per example: true for jmvae only.
            r = {k: v for k, v in r.items() if k not in ("gflops", "mflop_per_example")}
            print(f"{args.model} batch {bs}: {r['samples_per_s']:.0f} samples/s")
            print(json.dumps(r))
            continue
        r["fraction_of_peak"] = r["gflops"] / peak
        print(f"batch {bs}: {r['samples_per_s']:.0f} samples/s, {r['gflops']:.1f} GFLOP/s "
              f"= {100 * r['fraction_of_peak']:.0f}% of peak ({r['mflop_per_example']:.1f} MFLOP/example)")
        print(json.dumps(r))


if __name__ == "__main__":
    main()
