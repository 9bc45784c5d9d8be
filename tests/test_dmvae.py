"""DMVAE (Lee & Pavlovic 2021): the joint and cross ELBOs with private and shared Gaussian latents against a
float64 numpy hand computation, and the shared posterior it encodes (its gradients reach every network:
tests/test_models.py, as every model's)."""

import jax
import numpy as np
import pytest

from tests import reference as ref

NAMES = ("x", "y", "w")
PRIVATE, SHARED = 3, 2


def _experts(params, flat):
    """{m: ((w mu, w logvar), (z mu, z logvar))} of the tiny encoders, float64."""
    out = {}
    for m in NAMES:
        mu, lv = ref.gaussian(params["encoders"][m], flat[m])
        out[m] = ((mu[:, :PRIVATE], lv[:, :PRIVATE]), (mu[:, PRIVATE:], lv[:, PRIVATE:]))
    return out


@pytest.mark.parametrize("beta,weights", [(1.0, ()), (2.5, (1.0, 0.5, 20.0))])
def test_dmvae_loss_is_the_sum_of_the_joint_and_cross_elbos_by_hand(beta, weights):
    model, params = ref.tiny_model("dmvae", beta=beta, likelihood_weights=weights, dmvae_private_dim=PRIVATE)
    lam = dict(zip(NAMES, weights or (1.0, 1.0, 1.0)))
    n = 4
    batch = ref.batch(np.random.default_rng(0), n=n)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(3)
    terms = jax.jit(model.loss)(params, batch, key)

    experts = _experts(params, flat)
    joint = ref.product([experts[m][1][0] for m in NAMES], [experts[m][1][1] for m in NAMES], prior=True)
    sources = [joint] + [experts[m][1] for m in NAMES]  # q(z | X), q(z | x), q(z | y), q(z | w)
    k_shared, k_private = jax.random.split(key)
    eps_z = np.asarray(jax.random.normal(k_shared, (4, n, SHARED)), np.float64)
    eps_w = [np.asarray(jax.random.normal(k, (4, n, PRIVATE)), np.float64) for k in jax.random.split(k_private, 3)]
    elbos = []
    for s, (mu, lv) in enumerate(sources):
        z = mu + np.exp(lv / 2) * eps_z[s]
        elbo = -beta * ref.kl_prior(mu, lv)
        for i, m in enumerate(NAMES):
            (w_mu, w_lv), _ = experts[m]
            w = w_mu + np.exp(w_lv / 2) * eps_w[i][s]
            ll = ref.log_likelihoods(params["decoders"], np.concatenate([w, z], 1), flat)[m]
            elbo = elbo + lam[m] * ll - ref.kl_prior(w_mu, w_lv)
        elbos.append(elbo)
    for source, elbo in zip(("joint", *NAMES), elbos):
        np.testing.assert_allclose(terms[f"elbo_{source}"], elbo, rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(terms["loss"], -np.sum(elbos, axis=0), rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(terms["elbo"], elbos[0], rtol=2e-5, atol=1e-4)


def test_the_shared_posterior_is_one_expert_alone_or_the_product_with_the_prior():
    model, params = ref.tiny_model("dmvae", dmvae_private_dim=PRIVATE)
    batch = ref.batch(np.random.default_rng(1), n=3)
    experts = _experts(params, ref.flat(batch))
    mu, lv = model.encode(params, batch, ("y",))
    np.testing.assert_allclose(mu, experts["y"][1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lv, experts["y"][1][1], rtol=1e-5, atol=1e-6)
    mu, lv = model.encode(params, batch, ("x", "w"))
    want = ref.product([experts[m][1][0] for m in ("x", "w")], [experts[m][1][1] for m in ("x", "w")], prior=True)
    np.testing.assert_allclose(mu, want[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(lv, want[1], rtol=1e-4, atol=1e-6)
    assert mu.shape == (3, SHARED) and model.latent_prior == "gaussian"
    assert model.private_latents  # eval's importance-weighted log-likelihood (over z alone) skips it
    logits = model.decode(params, mu)
    assert logits["x"].shape == (3, 2, 3, 1) and logits["w"].shape == (3, 3)


def test_generation_draws_each_targets_private_code_from_its_prior():
    """--generation=sample: target t decodes (w_t, z) with w_t ~ N(0, I), its own draw (float64 by hand)."""
    model, params = ref.tiny_model("dmvae", dmvae_private_dim=PRIVATE)
    z = np.random.default_rng(2).normal(size=(4, SHARED)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    drawn = model.generate(params, z, None, key)
    assert set(drawn) == set(NAMES)
    for t in NAMES:
        w = np.asarray(jax.random.normal(jax.random.fold_in(key, NAMES.index(t)), (4, PRIVATE)), np.float64)
        expected = ref.mlp(params["decoders"][t], np.concatenate([w, z], 1))
        np.testing.assert_allclose(np.asarray(drawn[t]).reshape(4, -1), expected, rtol=1e-4, atol=1e-4)
