"""MVAE (Wu & Goodman 2018): the sub-sampled objective against a numpy hand computation; subset
posteriors are the analytic product of the experts and the prior."""

import itertools

import jax
import numpy as np
import pytest
from scipy import stats

from tests import reference as ref


def _model(**kw):
    return ref.tiny_model("mvae", **kw)


@pytest.mark.parametrize("beta,weights,num_subsets", [(1.0, (), 1), (2.0, (1.0, 2.0, 50.0), 3)])
def test_mvae_loss_matches_hand_computation(beta, weights, num_subsets):
    model, params = _model(beta=beta, likelihood_weights=weights, num_subsets=num_subsets)
    lam = np.array(weights or (1.0, 1.0, 1.0))
    batch = ref.batch(np.random.default_rng(0), n=6)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(7)
    terms = model.loss(params, batch, key)

    experts = [ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"]
    noise = lambda k, mu: np.asarray(jax.random.normal(k, mu.shape), np.float64)

    def elbo(k, mask):
        """ELBO of each example's subset (mask (3, batch)): q = p(z) prod_{m in S} q~(z|x_m)."""
        precision = 1.0 + sum(mask[i][:, None] * np.exp(-experts[i][1]) for i in range(3))
        mu = sum(mask[i][:, None] * experts[i][0] * np.exp(-experts[i][1]) for i in range(3)) / precision
        lv = -np.log(precision)
        z = mu + np.exp(lv / 2) * noise(k, mu)
        lls = ref.log_likelihoods(params["decoders"], z, flat)
        return sum(mask[i] * lam[i] * lls[m] for i, m in enumerate("xyw")) - beta * ref.kl_prior(mu, lv)

    k_joint, k_single, k_subsets = jax.random.split(key, 3)
    ones = np.ones((3, 6))
    total = elbo(k_joint, ones)
    for i, k in enumerate(jax.random.split(k_single, 3)):
        total = total + elbo(k, np.eye(3)[i][:, None] * ones)
    for k in jax.random.split(k_subsets, num_subsets):
        k_mask, k_z = jax.random.split(k)
        mask = ref.subset_bits(np.asarray(jax.random.randint(k_mask, (6,), 1, 8)))
        total = total + elbo(k_z, mask)
    np.testing.assert_allclose(terms["loss"], -total, rtol=2e-5)


def test_subset_posteriors_are_the_product_of_experts_and_prior():
    """q(z|x_S) is proportional to p(z) prod_{m in S} q~(z|x_m): log-density gap constant in z."""
    model, params = _model()
    batch = ref.batch(np.random.default_rng(1), n=2)
    flat = ref.flat(batch)
    experts = {m: ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"}
    zs = np.random.default_rng(2).normal(size=(40, 1, 2)) * 2
    for r in (1, 2, 3):
        for present in itertools.combinations("xyw", r):
            mu, lv = (np.asarray(a, np.float64) for a in model.encode(params, batch, present))
            log_product = stats.norm.logpdf(zs).sum(-1) + sum(
                stats.norm.logpdf(zs, experts[m][0], np.exp(experts[m][1] / 2)).sum(-1) for m in present
            )
            gap = ref.log_normal(zs, mu, lv) - log_product  # (40, batch)
            np.testing.assert_allclose(gap, np.broadcast_to(gap[0], gap.shape), atol=1e-4)
            ref_mu, ref_lv = ref.product([experts[m][0] for m in present], [experts[m][1] for m in present], True)
            np.testing.assert_allclose(mu, ref_mu, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(lv, ref_lv, rtol=1e-5, atol=1e-6)


def test_product_stays_finite_for_extreme_variances():
    """The log-space product: experts with logvar -100 or +80 give no inf or NaN (published MVAE's NaNs)."""
    from mvae_jax import distributions

    mus = np.array([[[1.0, -2.0]], [[3.0, 0.5]]], np.float32)
    lvs = np.array([[[-100.0, 80.0]], [[0.0, 80.0]]], np.float32)
    mu, lv = distributions.product_of_experts(mus, lvs, prior_expert=True)
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(lv))
    np.testing.assert_allclose(mu[0, 0], 1.0, rtol=1e-6)  # the sharpest expert wins
    np.testing.assert_allclose(lv[0], [-100.0, -np.log(1 + 2 * np.exp(-80.0))], rtol=1e-6, atol=1e-6)
