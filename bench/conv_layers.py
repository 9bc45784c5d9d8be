"""Forward + backward time of each convolution of MoPoE's PolyMNIST networks, by XLA's convolution and by matmul.

    python bench/conv_layers.py [--batch_size=640] [--repeats=5] [--features=1,3,8,16,32]

``mvae_jax.convolution`` computes a layer as matmuls on a CPU where it has ``MATMUL_MIN_FEATURES`` or more
output channels, and by XLA's convolution otherwise. This prints, for every layer of the MoPoE encoder
(3x3 stride-2 convolutions 28x28x3 -> 32 -> 64 -> 128) and decoder (transposed, 4x4x128 -> 64 -> 32 -> 3), and
for a transposed 14x14x32 layer of each ``--features`` output channels (where the threshold comes from), the
best of ``--repeats`` jitted forward + backward passes (gradients with respect to the input and the kernel)
with ``impl="xla"`` and ``impl="matmul"``. A batch of 640 is one step of batch 128 over 5 modalities.
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

from mvae_jax import cli  # noqa: E402
from mvae_jax.convolution import CONV_IMPLS, Conv, ConvTranspose, conv_impl  # noqa: E402

# (name, module, input side, input channels, output channels): MoPoE's networks on PolyMNIST
LAYERS = [
    ("encoder conv 28x28x3 -> 14x14x32", Conv, 28, 3, 32),
    ("encoder conv 14x14x32 -> 7x7x64", Conv, 14, 32, 64),
    ("encoder conv 7x7x64 -> 4x4x128", Conv, 7, 64, 128),
    ("decoder deconv 4x4x128 -> 8x8x64", ConvTranspose, 4, 128, 64),
    ("decoder deconv 7x7x64 -> 14x14x32", ConvTranspose, 7, 64, 32),
    ("decoder deconv 14x14x32 -> 28x28x3", ConvTranspose, 14, 32, 3),
]


def best_ms(module, side: int, channels: int, batch: int, repeats: int) -> float:
    """Best milliseconds of one jitted forward + backward pass of ``module`` on random input."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, side, side, channels)), jnp.float32)
    params = module.init(jax.random.PRNGKey(0), x[:1])

    def loss(params, x):
        return jnp.sum(jnp.sin(module.apply(params, x)))

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready(step(params, x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(params, x))
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--features", default="1,3,8,16,32", help="output channels of the 14x14x32 sweep")
    cli.add_compilation_cache_flag(parser, bench=True)
    args = parser.parse_args(argv)
    cli.enable_compilation_cache(args.compilation_cache)
    sweep = [(f"deconv 14x14x32 -> 28x28x{f}", ConvTranspose, 14, 32, int(f)) for f in args.features.split(",") if f]
    device = jax.devices()[0].device_kind
    print(f"device: {device}, batch {args.batch_size}, forward + backward, best of {args.repeats}")
    for name, kind, side, channels, features in LAYERS + sweep:
        ms = {
            impl: best_ms(kind(features, 3, 2, impl=impl), side, channels, args.batch_size, args.repeats)
            for impl in CONV_IMPLS
        }
        record = {"layer": name, **{f"{impl}_ms": round(t, 1) for impl, t in ms.items()}, "chosen": conv_impl(features)}
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
