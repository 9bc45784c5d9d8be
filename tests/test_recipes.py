"""Network options that published recipes need (issue 18): MVAE's swish MLPs and 3-hidden-layer decoders."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax.config import Config
from mvae_jax.data import DATASETS
from mvae_jax.models import get_model
from mvae_jax.networks import MLP


def _model(**options):
    config = Config(model="mvae", dataset="mnist_label", **options).validate()
    return get_model(config, DATASETS["mnist_label"].modalities(config))


def test_mlp_swish_is_x_times_sigmoid_x_between_layers():
    mlp = MLP((3, 2), activation="swish")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
    params = mlp.init(jax.random.PRNGKey(0), x)["params"]
    h = x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"]
    want = (h * jax.nn.sigmoid(h)) @ params["dense_1"]["kernel"] + params["dense_1"]["bias"]
    np.testing.assert_allclose(mlp.apply({"params": params}, x), want, rtol=1e-5, atol=1e-6)
    relu = MLP((3, 2)).apply({"params": params}, x)  # the default is unchanged: ReLU
    np.testing.assert_allclose(relu, jnp.maximum(h, 0) @ params["dense_1"]["kernel"] + params["dense_1"]["bias"])


@pytest.mark.slow  # over 7 s: the everyday tier stays under 4 minutes
def test_the_mvae_recipe_networks():
    """latent 64, swish encoders 784-512-512, decoders of 3 hidden layers of 512; the defaults mirror the encoders."""
    params = _model(latent_dim=64, activation="swish", decoder_hidden_dims=(512, 512, 512)).init(jax.random.PRNGKey(0))
    decoder = params["decoders"]["x"]["mlp"]
    assert [decoder[f"dense_{i}"]["kernel"].shape for i in range(4)] == [(64, 512), (512, 512), (512, 512), (512, 784)]
    encoder = params["encoders"]["x"]["mlp"]
    assert [encoder[f"dense_{i}"]["kernel"].shape for i in range(3)] == [(784, 512), (512, 512), (512, 128)]
    default = _model(latent_dim=64).init(jax.random.PRNGKey(0))["decoders"]["x"]["mlp"]
    assert [default[f"dense_{i}"]["kernel"].shape for i in range(3)] == [(64, 512), (512, 512), (512, 784)]
    assert "dense_3" not in default


def test_swish_changes_the_function_not_the_parameters():
    relu, swish = _model(), _model(activation="swish")
    params = relu.init(jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(swish.init(jax.random.PRNGKey(0)))
    batch = {"x": jnp.full((2, 28, 28, 1), 0.5), "w": jax.nn.one_hot(jnp.arange(2), 10)}
    a, b = relu.encode(params, batch, ("x",))[0], swish.encode(params, batch, ("x",))[0]
    assert not np.allclose(a, b)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"activation": "tanh"}, "activation='tanh' is invalid; allowed: relu, swish"),
        ({"decoder_hidden_dims": (512, 0)}, "decoder_hidden_dims=(512, 0) is invalid; allowed: empty"),
    ],
)
def test_bad_network_options_are_refused(option, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(Config(), **option).validate()


@pytest.mark.slow  # over 7 s: the everyday tier stays under 4 minutes
def test_mvae_without_random_subsets_is_the_joint_plus_unimodal_elbos():
    """num_subsets=0 (2 modalities: the paper's objective): loss = -(ELBO(x,w) + ELBO(x) + ELBO(w)), nothing else."""
    model = _model(num_subsets=0, likelihood_weights=(1.0, 50.0))
    params = model.init(jax.random.PRNGKey(0))
    batch = {"x": jnp.full((3, 28, 28, 1), 1.0), "w": jax.nn.one_hot(jnp.arange(3), 10)}
    terms = model.loss(params, batch, jax.random.PRNGKey(1))
    assert not any(k.startswith("elbo_subset") for k in terms)
    np.testing.assert_allclose(terms["loss"], -(terms["elbo_joint"] + terms["elbo_x"] + terms["elbo_w"]), rtol=1e-6)
    with pytest.raises(ValueError, match="num_subsets=0 is invalid"):
        Config(model="pemvae", subset_sampling="random", num_subsets=0).validate()
