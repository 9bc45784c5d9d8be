"""JMVAE-kl: the loss against a numpy hand computation of the paper's formula; encode for every subset."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import networks
from mvae_jax.config import Config
from mvae_jax.data import trimodal
from mvae_jax.models import get_model
from mvae_jax.modality import Modality

MODALITIES = (Modality("x", (2, 3, 1), "bernoulli"), Modality("y", (4,), "bernoulli"), Modality("w", (3,), "categorical"))


def _mlp(params, h):
    """Numpy forward of networks.MLP: Dense layers with ReLU between them."""
    layers = sorted(params["mlp"], key=lambda k: int(k.split("_")[1]))
    for i, name in enumerate(layers):
        h = h @ np.asarray(params["mlp"][name]["kernel"], np.float64) + np.asarray(params["mlp"][name]["bias"], np.float64)
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def _gaussian(params, h):
    out = _mlp(params, h)
    return np.split(out, 2, axis=-1)


def _kl(mu1, lv1, mu2, lv2):
    return 0.5 * (lv2 - lv1 + (np.exp(lv1) + (mu1 - mu2) ** 2) / np.exp(lv2) - 1).sum(-1)


def _batch(rng, n=3):
    return {
        "x": rng.random((n, 2, 3, 1)).astype(np.float32),
        "y": rng.random((n, 4)).astype(np.float32),
        "w": np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)],
    }


@pytest.mark.parametrize("beta,alpha", [(1.0, 0.1), (2.0, 1.0), (0.5, 0.0)])
def test_jmvae_loss_matches_hand_computation(beta, alpha):
    config = Config(hidden_dims=(5, 4), latent_dim=2, beta=beta, alpha=alpha)
    model = get_model(config, MODALITIES)
    params = model.init(jax.random.PRNGKey(0))
    batch = _batch(np.random.default_rng(0))
    key = jax.random.PRNGKey(7)
    terms = model.loss(params, batch, key)

    flat = {k: v.reshape(len(v), -1).astype(np.float64) for k, v in batch.items()}
    mu, lv = _gaussian(params["joint_encoder"], np.concatenate([flat["x"], flat["y"], flat["w"]], 1))
    z = mu + np.exp(lv / 2) * np.asarray(jax.random.normal(key, mu.shape), np.float64)
    lx, ly, lw = (_mlp(params["decoders"][n], z) for n in "xyw")
    bern = lambda t, l: (t * l - np.logaddexp(0, l)).sum(1)
    ll = bern(flat["x"], lx) + bern(flat["y"], ly) + (flat["w"] * (lw - np.log(np.exp(lw).sum(1, keepdims=True)))).sum(1)
    kl_prior = 0.5 * (mu**2 + np.exp(lv) - lv - 1).sum(1)
    kl_uni = sum(_kl(mu, lv, *_gaussian(params["encoders"][n], flat[n])) for n in "xyw")
    expected = -(ll - beta * kl_prior - alpha * kl_uni)
    np.testing.assert_allclose(terms["loss"], expected, rtol=2e-5)
    assert terms["loss"].shape == (3,)


def test_encode_every_subset_has_the_right_shape_and_source():
    config = Config(hidden_dims=(8,), latent_dim=3)
    model = get_model(config, MODALITIES)
    params = model.init(jax.random.PRNGKey(1))
    batch = _batch(np.random.default_rng(1), n=5)
    for r in (1, 2, 3):
        for present in itertools.combinations("xyw", r):
            only = {k: batch[k] for k in present}  # absent modalities are not needed
            mu, lv = model.encode(params, only, present)
            assert mu.shape == lv.shape == (5, 3), present
    # One modality: its unimodal encoder. Two: the product of their experts.
    ex = model.encode(params, batch, ("x",))
    ey = model.encode(params, batch, ("y",))
    mu, lv = model.encode(params, batch, ("y", "x"))
    prec = np.exp(-ex[1]) + np.exp(-ey[1])
    np.testing.assert_allclose(lv, -np.log(prec), rtol=1e-5)
    np.testing.assert_allclose(mu, (ex[0] * np.exp(-ex[1]) + ey[0] * np.exp(-ey[1])) / prec, rtol=1e-5)
    logits = model.decode(params, mu)
    assert {k: v.shape for k, v in logits.items()} == {"x": (5, 2, 3, 1), "y": (5, 4), "w": (5, 3)}


@pytest.mark.parametrize("present", [(), ("q",), ("x", "x")])
def test_encode_rejects_bad_subsets(present):
    model = get_model(Config(hidden_dims=(8,), latent_dim=3), MODALITIES)
    params = model.init(jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="present="):
        model.encode(params, _batch(np.random.default_rng(0)), present)


def test_gradients_are_finite_and_reach_every_network():
    model = get_model(Config(hidden_dims=(8,), latent_dim=3, alpha=0.1), MODALITIES)
    params = model.init(jax.random.PRNGKey(2))
    batch = _batch(np.random.default_rng(2))
    grads = jax.grad(lambda p: jnp.mean(model.loss(p, batch, jax.random.PRNGKey(0))["loss"]))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
    for group in ("joint_encoder", "encoders", "decoders"):
        assert any(np.abs(g).sum() > 0 for g in jax.tree_util.tree_leaves(grads[group])), group


def test_default_trimodal_jmvae_parameter_count():
    """784-512-512 MLPs, latent 20: joint + 3 unimodal encoders + 3 decoders, counted by hand."""
    model = get_model(Config(), trimodal.MODALITIES)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    dense = lambda i, o: i * o + o
    mlp = lambda i, o: dense(i, 512) + dense(512, 512) + dense(512, o)
    expected = (mlp(1578, 40) + 2 * mlp(784, 40) + mlp(10, 40)) + (2 * mlp(20, 784) + mlp(20, 10))
    assert networks.count_params(params) == expected == 4_380_362


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model='nope'.*allowed: \['jmvae'\]"):
        get_model(Config(model="nope"), MODALITIES)
