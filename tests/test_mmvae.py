"""MMVAE (Shi et al. 2019): the stratified importance-weighted bound against a numpy hand computation,
and DReG gradients against their definition (Tucker et al. 2019)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from mvae_jax import distributions
from tests import reference as ref

K = 5


def _model(**kw):
    return ref.tiny_model("mmvae", num_samples=K, **kw)


@pytest.mark.parametrize("beta,weights", [(1.0, ()), (2.0, (1.0, 0.5, 30.0))])
def test_mmvae_loss_matches_hand_computation(beta, weights):
    model, params = _model(beta=beta, likelihood_weights=weights)
    lam = dict(zip("xyw", weights or (1.0, 1.0, 1.0)))
    batch = ref.batch(np.random.default_rng(0), n=4)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(7)
    terms = model.loss(params, batch, key)

    experts = [ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"]
    eps = np.asarray(jax.random.normal(key, (3, K, 4, 2)), np.float64)
    bounds = []
    for i in range(3):
        z = experts[i][0] + np.exp(experts[i][1] / 2) * eps[i]  # (K, batch, latent) from q(z|x_i)
        lls = ref.log_likelihoods(params["decoders"], z, flat)
        # log q(z|x,y,w) = log (1/3) sum_j q(z|x_j): the mixture of experts.
        log_q = logsumexp([ref.log_normal(z, mu, lv) for mu, lv in experts], axis=0) - np.log(3)
        log_w = sum(lam[m] * lls[m] for m in "xyw") + beta * (ref.log_normal(z, 0.0, 0.0) - log_q)
        bounds.append(logsumexp(log_w, axis=0) - np.log(K))
    np.testing.assert_allclose(terms["iwae_y"], bounds[1], rtol=2e-5)
    np.testing.assert_allclose(terms["loss"], -np.mean(bounds, axis=0), rtol=2e-5)


@pytest.mark.slow
def test_gradients_are_dreg():
    """Decoders: the IWAE gradient sum_k w~_k grad log w_k. Encoders: sum_k w~_k^2 d log w_k/dz dz/dphi,
    with q's parameters held fixed inside log w (Tucker et al. 2019, Eq. 8)."""
    model, params = _model()
    batch = ref.batch(np.random.default_rng(1), n=3)
    key = jax.random.PRNGKey(3)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.loss(p, batch, key)["loss"])))(params)

    def log_weights(p, fixed):
        """log w (3, K, batch) from each expert's samples; ``fixed`` supplies q's parameters in log q."""
        mus, lvs = zip(*[model.encode(p, batch, (m,)) for m in "xyw"])
        f_mus, f_lvs = zip(*[model.encode(fixed, batch, (m,)) for m in "xyw"])
        eps = jax.random.normal(key, (3, K, 3, 2))
        out = []
        for i in range(3):
            z = mus[i] + jnp.exp(lvs[i] / 2) * eps[i]
            logits = model.decode(p, z)
            ll = sum(m.log_likelihood(logits[m.name], batch[m.name]) for m in ref.MODALITIES)
            log_q = distributions.mixture_log_density(z, jnp.stack(f_mus)[:, None], jnp.stack(f_lvs)[:, None])
            out.append(ll + distributions.gaussian_log_density(z, 0.0 * z, 0.0 * z) - log_q)
        return jnp.stack(out)

    w = jax.nn.softmax(jax.jit(log_weights)(params, params), axis=1)  # normalised over K
    # Decoder gradient of -(1/3) sum_i IWAE_i: plain IWAE gradient (fixed = current, so log q is live but
    # independent of the decoders).
    iwae = lambda p: -jnp.sum(jax.nn.logsumexp(log_weights(p, params), axis=1) - jnp.log(K)) / 3
    dec_ref = jax.jit(jax.grad(iwae))(params)["decoders"]
    for a, b in zip(jax.tree_util.tree_leaves(grads["decoders"]), jax.tree_util.tree_leaves(dec_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Encoder gradient: -(1/3) sum_i sum_k w~_ik^2 grad_phi log w_ik(z(phi)), q's parameters and decoders fixed.
    frozen = jax.lax.stop_gradient(params)
    dreg = lambda p: (
        -jnp.sum(
            jax.lax.stop_gradient(w**2)
            * log_weights({"encoders": p["encoders"], "decoders": frozen["decoders"]}, frozen)
        )
        / 3
    )
    enc_ref = jax.jit(jax.grad(dreg))(params)["encoders"]
    for a, b in zip(jax.tree_util.tree_leaves(grads["encoders"]), jax.tree_util.tree_leaves(enc_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # And the loss value is the bound itself, not the surrogate.
    assert float(jnp.sum(model.loss(params, batch, key)["loss"])) == pytest.approx(
        float(jax.jit(iwae)(params)), rel=1e-5
    )


def test_posterior_is_the_mixture_of_the_present_experts():
    model, params = _model()
    batch = ref.batch(np.random.default_rng(2), n=3)
    flat = ref.flat(batch)
    experts = {m: ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"}
    mus, lvs = model.posterior(params, batch, ("x", "w"))
    np.testing.assert_allclose(mus, [experts["x"][0], experts["w"][0]], rtol=1e-5, atol=1e-6)
    mu, _ = model.encode(params, batch, ("x", "w"))
    np.testing.assert_allclose(mu, (experts["x"][0] + experts["w"][0]) / 2, rtol=1e-5, atol=1e-6)
