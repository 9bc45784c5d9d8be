"""mvae_jax.convolution: Flax's convolutions, computed as matmuls over patches on a CPU, to float64 precision."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import convolution
from mvae_jax.convolution import Conv, ConvTranspose

# (kernel, stride, input (H, W, C), features): the networks' layers (MoPoE's 3x3 and DCGAN's 4x4 of stride 2,
# 28 -> 14 -> 7 -> 4; the scoring CNN's 3x3 of stride 1) and odd, non-square sides (a 14x28 half image).
CASES = [
    (3, 2, (28, 28, 3), 32),
    (3, 2, (7, 7, 64), 128),
    (4, 2, (14, 14, 32), 64),
    (4, 2, (7, 7, 64), 128),
    (3, 1, (28, 28, 1), 32),
    (3, 1, (7, 14, 32), 64),
    (3, 2, (5, 9, 2), 3),
    (5, 3, (11, 8, 2), 4),
]


def _input(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(2, *shape)))


# (ours, Flax's, the output side from an input side and the stride, the input's seed)
LAYERS = {
    "conv": (Conv, nn.Conv, lambda side, stride: -(-side // stride), 0),
    "transpose": (ConvTranspose, nn.ConvTranspose, lambda side, stride: side * stride, 1),
}


@pytest.mark.parametrize("impl", convolution.CONV_IMPLS)
@pytest.mark.parametrize("kernel, stride, shape, features", CASES)
@pytest.mark.parametrize("layer", LAYERS)
def test_our_layer_is_flax_layer_with_the_same_parameters(layer, kernel, stride, shape, features, impl):
    module, flax_module, out_side, seed = LAYERS[layer]
    with jax.enable_x64(True):
        x = _input(shape, seed)
        flax_conv = flax_module(features, (kernel, kernel), strides=(stride, stride), padding="SAME")
        params = flax_conv.init(jax.random.PRNGKey(0), x)["params"]
        ours = module(features, kernel, stride, impl=impl)
        # the same parameter tree, drawn the same: a checkpoint of one loads in the other
        mine = ours.init(jax.random.PRNGKey(0), x)["params"]
        assert jax.tree.map(jnp.shape, mine) == jax.tree.map(jnp.shape, params)
        np.testing.assert_array_equal(mine["kernel"], params["kernel"])
        params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.1, params)  # float64, a nonzero bias
        want = flax_conv.apply({"params": params}, x)
        got = ours.apply({"params": params}, x)
        assert got.shape == want.shape == (2, out_side(shape[0], stride), out_side(shape[1], stride), features)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("module", [Conv, ConvTranspose])
def test_gradients_of_the_matmul_form_are_xla_convolution_gradients(module):
    """Training differentiates them: the gradients with respect to the input and the parameters agree too."""
    with jax.enable_x64(True):
        x = _input((7, 7, 16), seed=2)
        params = module(8, 3, 2, impl="xla").init(jax.random.PRNGKey(3), x)["params"]
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)

        def grads(impl):
            def loss(params, x):
                return jnp.sum(jnp.sin(module(8, 3, 2, impl=impl).apply({"params": params}, x)))

            return jax.grad(loss, argnums=(0, 1))(params, x)

        want, got = grads("xla"), grads("matmul")
        for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_a_cpu_computes_by_matmul_and_bfloat16_is_honoured():
    cpu = jax.default_backend() == "cpu"
    assert convolution.conv_impl(32) == ("matmul" if cpu else "xla") and convolution.conv_impl(3) == "xla"
    x = jnp.ones((1, 8, 8, 3), jnp.float32)
    params = Conv(4, 3, 2, dtype=jnp.bfloat16).init(jax.random.PRNGKey(0), x)
    assert params["params"]["kernel"].dtype == jnp.float32  # parameters stay float32
    assert Conv(4, 3, 2, dtype=jnp.bfloat16).apply(params, x).dtype == jnp.bfloat16
