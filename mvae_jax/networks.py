"""Flax (linen) modules: encoders and decoders. Modules only; objectives live in models/."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mvae_jax.convolution import Conv, ConvTranspose

# Every module takes ``dtype``, the dtype its layers compute in (None: float32).
# Parameters stay float32 (``param_dtype``); outputs are cast back to float32,
# so likelihoods, KLs and losses are always computed in float32.
Dtype = Any


def _f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.float32)


ACTIVATIONS = {"relu": nn.relu, "swish": nn.swish}
"""The nonlinearities of the MLPs (``Config.activation``); swish(x) = x sigmoid(x) (Ramachandran et al. 2017)."""


class MLP(nn.Module):
    """Dense layers with ``activation`` (ReLU by default) between them; the last layer is linear."""

    features: Sequence[int]
    dtype: Dtype = None
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.features):
            x = nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x)
            if i < len(self.features) - 1:
                x = ACTIVATIONS[self.activation](x)
        return x


@dataclasses.dataclass(frozen=True)
class ConvStack:
    """A convolutional stack's shape: channels per stride-2 layer, kernel size and activation.

    The default is DCGAN's (Radford et al. 2016): 4x4 kernels, leaky ReLU of
    slope 0.2. MoPoE's PolyMNIST networks (Sutter et al. 2021) are
    ``ConvStack((32, 64, 128), 3, "relu")``.
    """

    widths: tuple[int, ...]
    kernel: int = 4
    activation: str = "leaky_relu"

    def act(self, x: jax.Array) -> jax.Array:
        return nn.leaky_relu(x, 0.2) if self.activation == "leaky_relu" else ACTIVATIONS[self.activation](x)


def as_stack(conv) -> ConvStack:
    """``conv`` as a ConvStack: a ConvStack, or a sequence of widths (DCGAN's kernel and activation)."""
    return conv if isinstance(conv, ConvStack) else ConvStack(tuple(conv))


class ConvFeatures(nn.Module):
    """A convolutional stack: (batch, H, W, C) -> (batch, features).

    One convolution of stride 2 per width (each halves H and W, rounding up:
    28 -> 14 -> 7 -> 4), each followed by the stack's activation, then
    flattened. ``stack``: a ``ConvStack`` or the widths of a DCGAN-style one.
    """

    stack: Any
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        stack = as_stack(self.stack)
        for i, width in enumerate(stack.widths):
            x = stack.act(Conv(width, stack.kernel, 2, self.dtype, name=f"conv_{i}")(x))
        return x.reshape(x.shape[0], -1)


def features(x: jax.Array, conv, name: str, dtype: Dtype = None) -> jax.Array:
    """(batch, *shape) -> (batch, features): ``ConvFeatures(conv)`` named ``name`` if ``conv``, else flattened.

    ``conv``: a ``ConvStack``, widths, or empty. Call inside a compact module; the conv layers become its
    submodule ``name``.
    """
    return ConvFeatures(conv, dtype, name=name)(x) if conv else x.reshape(x.shape[0], -1)


def halvings(size: int, n: int) -> list[int]:
    """[size, ceil(size / 2), ...]: the side after each of ``n`` stride-2 SAME convolutions (28 -> 14, 7, 4)."""
    out = [size]
    for _ in range(n):
        out.append(-(-out[-1] // 2))
    return out


class ConvDecoder(nn.Module):
    """p(image | z) by transposed convolutions: (batch, latent) -> logits (batch, H, W, C).

    A dense layer (ReLU) to the (h_n, w_n, widths[-1]) map that ``ConvFeatures``
    ends in, then n transposed convolutions of stride 2 with widths[-2], ...,
    widths[0], C (ReLU between them), n = len(widths): the mirror of
    ``ConvFeatures``. Each doubles the side, and a side the encoder had rounded
    up (7 -> 4) is cropped back (8 -> 7), as PyTorch's ``output_padding`` does
    in MoPoE's decoder. ``stack`` as in ``ConvFeatures``; the kernel is the stack's.
    """

    stack: Any
    shape: Sequence[int]
    dtype: Dtype = None

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        stack = as_stack(self.stack)
        height, width, channels = self.shape
        n = len(stack.widths)
        heights, widths = halvings(height, n), halvings(width, n)
        lead = z.shape[:-1]
        h = nn.Dense(heights[-1] * widths[-1] * stack.widths[-1], dtype=self.dtype, name="dense")(
            z.reshape(-1, z.shape[-1])
        )
        h = nn.relu(h).reshape(-1, heights[-1], widths[-1], stack.widths[-1])
        outs = (*stack.widths[-2::-1], channels)
        for i, features in enumerate(outs):
            h = ConvTranspose(features, stack.kernel, 2, self.dtype, name=f"deconv_{i}")(h)
            h = h[:, : heights[n - 1 - i], : widths[n - 1 - i]]
            if i < len(outs) - 1:
                h = nn.relu(h)
        return _f32(h).reshape(*lead, height, width, channels)


class GaussianEncoder(nn.Module):
    """q(z | x) = N(mu, diag(exp(logvar))): (batch, *shape) -> ((batch, latent), (batch, latent)).

    With ``conv`` widths the input image goes through ``ConvFeatures`` first;
    else it is flattened. Then an MLP of widths ``hidden`` and a linear output.
    """

    hidden: Sequence[int]
    latent: int
    conv: Any = ()
    dtype: Dtype = None
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = MLP((*self.hidden, 2 * self.latent), self.dtype, self.activation, name="mlp")(
            features(x, self.conv, "conv", self.dtype)
        )
        mu, logvar = jnp.split(_f32(h), 2, axis=-1)
        return mu, logvar


class JointGaussianEncoder(nn.Module):
    """q(z | x_1..x_M) from all modalities: (mu, logvar), each (batch, latent).

    Each modality is flattened, or for names in ``conv`` passed through its own
    ``ConvFeatures`` (``conv_<name>``); the features are concatenated into one
    MLP (``mlp``). Without conv modalities this is a ``GaussianEncoder`` on the
    concatenated inputs, with the same parameters.
    """

    names: Sequence[str]
    hidden: Sequence[int]
    latent: int
    conv: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dtype: Dtype = None
    activation: str = "relu"

    @nn.compact
    def __call__(self, inputs) -> tuple[jax.Array, jax.Array]:
        parts = [features(inputs[n], self.conv.get(n, ()), f"conv_{n}", self.dtype) for n in self.names]
        h = MLP((*self.hidden, 2 * self.latent), self.dtype, self.activation, name="mlp")(
            jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        )
        mu, logvar = jnp.split(_f32(h), 2, axis=-1)
        return mu, logvar


class FusionEncoder(nn.Module):
    """q(z | the present modalities) from one network: per-modality features, fused, then a fusion head.

    h = act(b + fuse_m(W_m x_m)) -> MLP(hidden[1:], 2 latent) -> (mu, logvar), act = ``activation`` (ReLU).
    The feature map of modality m is W_m (its block of the first layer of a
    joint MLP over all modalities concatenated). ``fusion`` says how the
    features of the present modalities P combine:

    - ``"tokens"``: sum_m [W_m x_m if m in P, else t_m], an absent modality
      contributing its learned mask token t_m (one vector of width hidden[0]
      per modality, initialised at 0). With every modality present this *is*
      the joint MLP, with the same parameter count plus the tokens.
    - ``"zero"``: sum_{m in P} W_m x_m (absent modalities contribute 0).
    - ``"mean"``: (1/|P|) sum_{m in P} W_m x_m.

    Modalities named in ``conv`` go through their own ``ConvFeatures``
    (``conv_<name>``) before W_m; the others are flattened.

    Call with ``inputs`` {name: (batch, *shape)} for the modalities given and
    ``mask`` {name: (batch,) of 0/1} (optional) to drop given ones per example;
    names not in ``inputs`` are absent for every example.
    """

    names: Sequence[str]
    hidden: Sequence[int]
    latent: int
    conv: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dtype: Dtype = None
    fusion: str = "tokens"
    activation: str = "relu"

    @nn.compact
    def __call__(self, inputs, mask=None) -> tuple[jax.Array, jax.Array]:
        if self.fusion not in ("tokens", "zero", "mean"):
            raise ValueError(f"fusion={self.fusion!r} is invalid; allowed: tokens, zero, mean")
        width = self.hidden[0]
        tokens = (
            self.param("mask_tokens", nn.initializers.zeros, (len(self.names), width))
            if self.fusion == "tokens"
            else None
        )
        batch = next(iter(inputs.values())).shape[0]
        h = jnp.broadcast_to(self.param("bias", nn.initializers.zeros, (width,)), (batch, width))
        total, count = jnp.zeros((batch, width), jnp.float32), jnp.zeros((batch,), jnp.float32)
        for i, name in enumerate(self.names):
            if name not in inputs:
                if tokens is not None:
                    h = h + tokens[i]
                continue
            x = features(inputs[name], self.conv.get(name, ()), f"conv_{name}", self.dtype)
            feature = _f32(nn.Dense(width, use_bias=False, dtype=self.dtype, name=f"features_{name}")(x))
            present = jnp.ones((batch,), jnp.float32)
            if mask is not None and name in mask:
                present = (mask[name] > 0).astype(jnp.float32)
                feature = jnp.where(present[:, None] > 0, feature, tokens[i] if tokens is not None else 0.0)
            if self.fusion == "mean":
                total, count = total + feature, count + present
            else:
                h = h + feature
        if self.fusion == "mean":
            h = h + total / jnp.maximum(count, 1.0)[:, None]
        activation = ACTIVATIONS[self.activation]
        out = MLP((*self.hidden[1:], 2 * self.latent), self.dtype, self.activation, name="fusion")(activation(h))
        mu, logvar = jnp.split(_f32(out), 2, axis=-1)
        return mu, logvar


class Decoder(nn.Module):
    """p(x | z): (batch, latent) -> logits (batch, *shape)."""

    hidden: Sequence[int]
    shape: Sequence[int]
    dtype: Dtype = None
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        logits = _f32(MLP((*self.hidden, math.prod(self.shape)), self.dtype, self.activation, name="mlp")(z))
        return logits.reshape(z.shape[:-1] + tuple(self.shape))


class Discriminator(nn.Module):
    """D(image) -> real-vs-generated logit: (batch, H, W, C) -> (batch,).

    ``ConvFeatures`` of widths ``widths`` (DCGAN's discriminator without batch
    normalisation, which an R1 penalty replaces) and a linear output.
    """

    widths: Sequence[int]
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = ConvFeatures(self.widths, self.dtype, name="conv")(x)
        return _f32(nn.Dense(1, dtype=self.dtype, name="logit")(h))[:, 0]


class MLPDiscriminator(nn.Module):
    """D(x) -> real-vs-generated logit for a modality with MLP networks: (batch, *shape) -> (batch,).

    The input is flattened, then dense layers of widths ``hidden`` with leaky
    ReLU (slope 0.2, as the conv ``Discriminator``) and a linear output. No
    normalisation across the batch, so the R1 penalty's per-example gradient holds.
    """

    hidden: Sequence[int]
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            h = nn.leaky_relu(nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(h), 0.2)
        return _f32(nn.Dense(1, dtype=self.dtype, name="logit")(h))[:, 0]


def count_params(params) -> int:
    """Number of scalars in a parameter tree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


class Classifier(nn.Module):
    """A small CNN that scores generated images: (batch, H, W, C) in [0, 1] -> (batch, classes) logits.

    Two 3x3 convolutions (32, 64 channels, ReLU, 2x2 average pooling), a
    128-unit hidden layer and a linear output; the architecture of Flax's
    MNIST example, narrowed. Any H and W: a pooling of an odd side repeats its last row or column.
    """

    classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, channels in enumerate((32, 64)):
            x = nn.relu(Conv(channels, 3, name=f"conv_{i}")(x))
            b, h, w, c = x.shape
            if h % 2 or w % 2:  # an odd side (a 14x28 half image has 7 rows here): pad it by repeating its edge
                x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                h, w = h + h % 2, w + w % 2
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))  # 2x2 average pooling
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128, name="dense_0")(x))
        return nn.Dense(self.classes, name="dense_1")(x)
