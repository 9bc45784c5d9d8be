"""Convolutions with Flax's parameters and results, computed as matmuls over patches on a CPU.

``Conv`` and ``ConvTranspose`` stand where ``nn.Conv`` and ``nn.ConvTranspose`` (SAME padding, square kernel and
stride) stood: the same parameter names, shapes and initialisers, so a checkpoint of either loads in the
other, and the same result (tests/test_convolution.py, float64). On a CPU a layer of 16 or more output
channels computes as matmuls over patches (``conv_by_matmul``; ``conv_transpose_by_matmul``, one per output
phase), where XLA's own CPU convolutions are slow (``conv_impl``); on a GPU or TPU as XLA's convolutions.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

CONV_IMPLS = ("matmul", "xla")
MATMUL_MIN_FEATURES = 16  # fewer output channels: XLA's convolution is the faster on a CPU too


def conv_impl(features: int) -> str:
    """How ``Conv`` and ``ConvTranspose`` with ``features`` output channels compute: ``"matmul"`` on a CPU when
    ``features >= MATMUL_MIN_FEATURES``, else ``"xla"`` (XLA's convolutions, and always on a GPU or TPU).

    XLA's CPU convolution gradients are slow on small images. Measured on 2 CPU cores (AVX-512), forward and
    backward of a stride-2 transposed 3x3 convolution from 14x14x32, batch 640: 16 output channels 639 ms by
    XLA against 305 ms by matmul, 32 channels 1,250 against 486 ms; but 8 channels 151 against 189 ms and 3
    channels 67 against 200 ms (the patches cost more memory traffic than so few channels repay). The whole
    MoPoE PolyMNIST encoder and decoder: docs/PERFORMANCE.md.
    """
    return "matmul" if jax.default_backend() == "cpu" and features >= MATMUL_MIN_FEATURES else "xla"


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(output side, low pad, high pad) of a SAME convolution, as XLA pads it (the odd pixel at the high end)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def conv_by_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, (stride, stride), "SAME")`` in NHWC / HWIO as one matmul.

    The k x k strided slices of the padded input are concatenated on the channel axis, (i, j, c) in the
    kernel's order, into patches (batch, H', W', k k C) that multiply the kernel reshaped to (k k C, O).
    Their gradients are pads and one matmul each, where XLA's CPU convolution gradients are slow.
    """
    b, height, width, channels = x.shape
    k = kernel.shape[0]
    out_h, top, bottom = _same_padding(height, k, stride)
    out_w, left, right = _same_padding(width, kernel.shape[1], stride)
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    last = ((out_h - 1) * stride + 1, (out_w - 1) * stride + 1)
    patches = jnp.concatenate(
        [
            jax.lax.slice(padded, (0, i, j, 0), (b, i + last[0], j + last[1], channels), (1, stride, stride, 1))
            for i in range(k)
            for j in range(kernel.shape[1])
        ],
        axis=-1,
    )
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def _phase_taps(kernel: int, stride: int) -> list[list[tuple[int, int]]]:
    """Per output phase r (0 <= r < stride), the (input offset d, kernel tap i) pairs that reach it.

    ``lax.conv_transpose(..., "SAME")`` dilates the input by the stride, pads it by a low pad ``a`` (k - 1 if
    s > k - 1, else ceil((k + s - 2) / 2)) and correlates it with the kernel (not flipped): input pixel q meets
    tap i at output q s + a - i. Output p = m s + r is therefore the sum over d of x[m + d] times tap
    i = s d + a - r, for the d that give 0 <= i < k.
    """
    a = kernel - 1 if stride > kernel - 1 else -(-(kernel + stride - 2) // 2)
    offsets = range(-kernel, kernel + 1)
    return [[(d, stride * d + a - r) for d in offsets if 0 <= stride * d + a - r < kernel] for r in range(stride)]


def conv_transpose_by_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """``lax.conv_transpose(x, kernel, (stride, stride), "SAME")`` in NHWC / HWIO (kernel not flipped, as Flax's
    ``ConvTranspose``) as one matmul per output phase (the sub-pixel form).

    Each of the s x s phases of the output (rows m s + r, columns n s + t) is a stride-1 correlation of the input
    with the taps that reach it (``_phase_taps``): patches of shifted input slices times those taps stacked.
    The phases are then interleaved, (batch, H, s, W, s, O) -> (batch, H s, W s, O). No multiply by the zeros
    that dilating the input inserts, and the gradients are slices and matmuls.
    """
    b, height, width, _ = x.shape
    features = kernel.shape[-1]
    rows, cols = _phase_taps(kernel.shape[0], stride), _phase_taps(kernel.shape[1], stride)
    dr = [d for phase in rows for d, _ in phase] or [0]
    dc = [d for phase in cols for d, _ in phase] or [0]
    top, left = max(0, -min(dr)), max(0, -min(dc))
    padded = jnp.pad(x, ((0, 0), (top, max(0, max(dr))), (left, max(0, max(dc))), (0, 0)))
    phases = []
    for row in rows:
        line = []
        for col in cols:
            taps = [(d, i, e, j) for d, i in row for e, j in col]
            if not taps:  # a kernel smaller than the stride leaves this phase at 0
                line.append(jnp.zeros((b, height, width, features), x.dtype))
                continue
            patches = [padded[:, top + d : top + d + height, left + e : left + e + width] for d, _, e, _ in taps]
            weights = jnp.concatenate([kernel[i, j] for _, i, _, j in taps], axis=0)
            line.append(jnp.concatenate(patches, axis=-1) @ weights)
        phases.append(jnp.stack(line, axis=3))  # (batch, H, W, s, O): the column phases
    return jnp.stack(phases, axis=2).reshape(b, height * stride, width * stride, features)


LAYOUT = ("NHWC", "HWIO", "NHWC")  # Flax's: images (batch, H, W, C), kernels (k, k, in, out)


def conv_by_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """What ``nn.Conv`` computes: XLA's convolution, SAME padding."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=LAYOUT)


def conv_transpose_by_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """What ``nn.ConvTranspose`` computes: XLA's transposed convolution, SAME padding, kernel not flipped."""
    return jax.lax.conv_transpose(x, kernel, (stride, stride), "SAME", dimension_numbers=LAYOUT)


def _layer(module, x: jax.Array, by_matmul, by_xla) -> jax.Array:
    """The body of ``Conv`` and ``ConvTranspose``: Flax's parameters (``kernel`` lecun-normal, ``bias`` zeros,
    float32), its dtype promotion, then ``by_matmul`` or ``by_xla`` as ``module.impl`` or ``conv_impl`` says."""
    shape = (module.kernel, module.kernel, x.shape[-1], module.features)
    kernel = module.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
    bias = module.param("bias", nn.initializers.zeros_init(), (module.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)
    compute = by_matmul if (module.impl or conv_impl(module.features)) == "matmul" else by_xla
    return compute(x, kernel, module.stride) + bias


class Conv(nn.Module):
    """``nn.Conv(features, (k, k), strides=(s, s), padding="SAME")``: its parameters (names, shapes, initialisers),
    so checkpoints are interchangeable, and its result; computed by ``conv_impl(features)`` (or ``impl``)."""

    features: int
    kernel: int
    stride: int = 1
    dtype: Dtype = None
    impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _layer(self, x, conv_by_matmul, conv_by_xla)


class ConvTranspose(nn.Module):
    """``nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME")``: its parameters and result (each
    side times s); computed by ``conv_impl(features)`` (or ``impl``)."""

    features: int
    kernel: int
    stride: int = 2
    dtype: Dtype = None
    impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _layer(self, x, conv_transpose_by_matmul, conv_transpose_by_xla)
