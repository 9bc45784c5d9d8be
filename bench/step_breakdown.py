"""Where the time of one JMVAE training step goes: the parts timed alone, and epoch variants side by side.

    python bench/step_breakdown.py [--batch_size=128] [--rounds=5] [--steps=60] [--calls=40]

Parts, each jitted alone on one batch (best of 5 x 40 calls): the loss
gradient (forward + backward of every network), the Adam update, and the
Bernoulli draws of dynamic binarization for x and y. Epoch variants (an
epoch of 60 steps, compiled once each, then timed in turns for ``--rounds``
rounds so that the machine's drift hits all alike; the median is printed):
without binarization; with it (as train.py) in one scanned chunk, in chunks
of 10 steps with a progress report after each (train.py: a stop request is
honoured between chunks), and in chunks of 1 step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import matmul_peak_gflops, synthetic  # noqa: E402

from mvae_jax import cli, training  # noqa: E402
from mvae_jax.config import Config  # noqa: E402
from mvae_jax.data import trimodal  # noqa: E402
from mvae_jax.models import get_model  # noqa: E402


def best_ms(f, *args, calls=40, repeats=5) -> float:
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = f(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / calls * 1e3)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="steps of each timed epoch")
    parser.add_argument("--calls", type=int, default=40, help="calls per timing of each part (best of 5)")
    cli.add_compilation_cache_flag(parser, bench=True)
    args = parser.parse_args()
    cli.enable_compilation_cache(args.compilation_cache)
    b, steps = args.batch_size, args.steps
    config = Config(batch_size=b).validate()
    model = get_model(config, trimodal.MODALITIES)
    tx = training.make_optimizer(config)
    state = training.create_train_state(model, tx, 0)
    data = {k: jnp.asarray(v) for k, v in synthetic(trimodal.MODALITIES, b * steps).items()}
    batch = {k: v[:b] for k, v in data.items()}
    key = jax.random.PRNGKey(0)

    def loss(params, batch):
        return jnp.mean(model.loss(params, batch, key)["loss"])

    grads = jax.grad(loss)(state.params, batch)
    print(f"float32 matmul peak: {matmul_peak_gflops():.1f} GFLOP/s")
    gradient_ms = best_ms(jax.jit(jax.grad(loss)), state.params, batch, calls=args.calls)
    print(f"gradient (forward + backward): {gradient_ms:.2f} ms")
    adam = jax.jit(lambda g, o, p: optax.apply_updates(p, tx.update(g, o, p)[0]))
    print(
        f"Adam update of {sum(x.size for x in jax.tree_util.tree_leaves(state.params)):,} params: "
        f"{best_ms(adam, grads, state.opt_state, state.params, calls=args.calls):.2f} ms"
    )
    draws = jax.jit(lambda k, x, y: (jax.random.bernoulli(k, x), jax.random.bernoulli(k, y)))
    print(f"binarization draws (x and y): {best_ms(draws, key, batch['x'], batch['y'], calls=args.calls):.2f} ms")

    variants = {
        "no binarization, chunks of 10": ((), None, 10),
        "binarization, the epoch in one chunk": (("x", "y"), None, steps),
        "binarization, chunks of 10 + progress (train.py)": (("x", "y"), lambda i, loss: None, 10),
        "binarization, chunks of 1": (("x", "y"), None, 1),
    }
    epochs = {}
    for name, (binarize, on_step, chunk) in variants.items():
        fn = training.make_epoch_fn(model, tx, b * steps, b, on_step=on_step, binarize=binarize, chunk_steps=chunk)
        s, _ = fn(training.create_train_state(model, tx, 0), data)
        jax.block_until_ready(s)
        epochs[name] = [fn, s, []]
    for _ in range(args.rounds):
        for entry in epochs.values():
            fn, s, times = entry
            start = time.perf_counter()
            s, terms = fn(s, data)
            jax.block_until_ready(terms)
            times.append((time.perf_counter() - start) / steps * 1e3)
            entry[1] = s
    for name, (_, _, times) in epochs.items():
        print(f"epoch step, {name}: median {np.median(times):.2f} ms ({', '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    main()
