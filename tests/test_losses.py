"""The multimodal ELBO (paper Eq. 1) on a tiny fixed network with fixed noise, against a hand computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import losses
from mvae_jax.modality import Modality


def _softplus(v):
    return np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0)


def test_a_likelihood_weight_for_an_unknown_modality_is_an_error():
    """A weight whose name is no modality of the batch (a typo) was a silent weight of 1 for the real one."""
    modalities = (Modality("x", (2,), "bernoulli"),)
    batch = {"x": np.zeros((3, 2), np.float32)}
    posterior = (jnp.zeros((3, 1)), jnp.zeros((3, 1)))
    decode = lambda z: {"x": jnp.zeros((3, 2))}
    with pytest.raises(ValueError, match=r"weights name \['X'\], which are not modalities of this batch \(x\)"):
        losses.multimodal_elbo(jax.random.PRNGKey(0), posterior, decode, batch, modalities, weights={"X": 50.0})
    elbo, _ = losses.multimodal_elbo(jax.random.PRNGKey(0), posterior, decode, batch, modalities, weights={"x": 2.0})
    np.testing.assert_allclose(elbo, 2.0 * 2 * -np.log(2.0), rtol=1e-6)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_multimodal_elbo_matches_hand_computation(beta):
    rng = np.random.default_rng(0)
    modalities = (Modality("x", (2, 2), "bernoulli"), Modality("w", (3,), "categorical"))
    batch = {"x": rng.random((2, 2, 2)).astype(np.float32), "w": np.eye(3, dtype=np.float32)[[0, 2]]}
    mu, logvar = rng.normal(size=(2, 2)).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32) * 0.3
    A, b = rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    C, d = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)

    def decode(z):
        return {"x": (z @ A + b).reshape(-1, 2, 2), "w": z @ C + d}

    key = jax.random.PRNGKey(42)
    elbo, terms = losses.multimodal_elbo(key, (mu, logvar), decode, batch, modalities, beta)

    # By hand, in float64: z = mu + sigma * eps with the same fixed noise eps.
    eps = np.asarray(jax.random.normal(key, mu.shape), np.float64)
    z = mu + np.exp(logvar / 2) * eps
    lx = z @ A + b
    tx = batch["x"].reshape(2, 4)
    ll_x = (tx * lx - _softplus(lx)).sum(1)
    lw = z @ C + d
    ll_w = (batch["w"] * (lw - np.log(np.exp(lw).sum(1, keepdims=True)))).sum(1)
    kl = 0.5 * (mu**2 + np.exp(logvar) - logvar - 1).sum(1)
    np.testing.assert_allclose(terms["log_likelihood_x"], ll_x, rtol=1e-5)
    np.testing.assert_allclose(terms["log_likelihood_w"], ll_w, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(elbo, ll_x + ll_w - beta * kl, rtol=1e-5)
    assert elbo.shape == (2,)


def test_kl_to_experts_uses_each_experts_own_variance():
    joint = (jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    experts = {"x": (jnp.zeros((1, 2)), jnp.full((1, 2), np.log(4.0)))}
    # KL(N(0,1) || N(0,4)) per dim = 1/2 (log 4 + 1/4 - 1).
    expected = 2 * 0.5 * (np.log(4.0) + 0.25 - 1)
    np.testing.assert_allclose(losses.kl_to_experts(joint, experts)["x"], [expected], rtol=1e-6)


def test_kl_weight_rises_linearly_over_the_warm_up_epochs():
    assert losses.kl_weight(2.0, 0, 0) == 2.0
    assert [float(losses.kl_weight(2.0, e, 4)) for e in (0, 1, 2, 4, 9)] == [0.0, 0.5, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("name", ["jmvae", "telbo", "mvae", "pemvae", "mopoe", "mvtcae"])
def test_kl_warm_up_scales_beta_inside_each_models_loss(name):
    """With warm-up over 4 epochs, the loss at epoch 2 (beta/2) equals the loss of beta/2 without warm-up."""
    from tests import reference

    batch = reference.batch(np.random.default_rng(0), 4)
    warm, params = reference.tiny_model(name, beta=2.0, kl_warmup_epochs=4)
    plain, _ = reference.tiny_model(name, beta=1.0)
    # pemvae: epoch 2 is past its default 1 warm-up epoch in both models, so both run stage 2.
    rng = jax.random.PRNGKey(3)
    got = warm.loss(params, batch, rng, 2)["loss"]
    np.testing.assert_allclose(got, plain.loss(params, batch, rng, 2)["loss"], rtol=1e-6)
    assert not np.allclose(got, warm.loss(params, batch, rng, 4)["loss"])
