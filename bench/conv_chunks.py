"""Seconds per training step of a conv model when the jitted epoch loops over its steps or unrolls them.

    python bench/conv_chunks.py [--model=mopoe] [--latent_dim=32] [--batch_size=128] [--steps=20]
                                [--chunks=loop,2,10]

On PolyMNIST-shaped random images (5 modalities of 28x28x3, MoPoE's networks)
held on the device, one epoch of ``--steps`` steps through
``training.make_epoch_fn`` per setting: ``loop`` runs the steps inside a
``lax.scan`` loop (chunks of 10, as MLP models do), a number N unrolls chunks
of N steps (``unroll=True``). Prints, per setting, the first epoch's seconds
(compiling included) and the seconds per step of a second epoch. Why:
XLA's CPU convolutions run several times slower inside a loop body, which
``training.epochs.CONV_CHUNK_STEPS`` avoids (docs/POLYMNIST.md has the numbers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from mvae_jax import cli  # noqa: E402
from mvae_jax.config import Config  # noqa: E402
from mvae_jax.data import DATASETS  # noqa: E402
from mvae_jax.models import get_model  # noqa: E402
from mvae_jax.training.epochs import make_epoch_fn  # noqa: E402
from mvae_jax.training.state import create_train_state  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mopoe")
    parser.add_argument("--latent_dim", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chunks", default="loop,2,10")
    cli.add_compilation_cache_flag(parser, bench=True)
    args = parser.parse_args(argv)
    cli.enable_compilation_cache(args.compilation_cache)
    config = Config(dataset="polymnist", model=args.model, latent_dim=args.latent_dim).validate()
    modalities = DATASETS["polymnist"].modalities(config)
    model, tx = get_model(config, modalities), optax.adam(1e-3)
    n = args.batch_size * args.steps
    rng = np.random.default_rng(0)
    data = {m.name: jnp.asarray(rng.random((n, *m.shape), np.float32)) for m in modalities}
    for setting in args.chunks.split(","):
        loop = setting == "loop"
        fn = make_epoch_fn(model, tx, n, args.batch_size, unroll=not loop, chunk_steps=10 if loop else int(setting))
        state = create_train_state(model, tx, 0)
        began = time.perf_counter()
        state, terms = fn(state, data)
        jax.block_until_ready(terms)
        first = time.perf_counter() - began
        began = time.perf_counter()
        state, terms = fn(state, data)
        jax.block_until_ready(terms)
        per_step = (time.perf_counter() - began) / args.steps
        record = {"chunk": setting, "first_epoch_s": round(first, 1), "s_per_step": round(per_step, 3)}
        print(json.dumps({**record, "model": args.model, "latent_dim": args.latent_dim}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
