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


def _hand_elbo(params, flat, lam, beta):
    """(key, mask (3, batch)) -> the float64 ELBO of each example's subset: q = p(z) prod_{m in S} q~(z|x_m),
    one draw from ``key``, log-likelihoods weighted by ``lam``."""
    experts = [ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"]

    def elbo(k, mask):
        precision = 1.0 + sum(mask[i][:, None] * np.exp(-experts[i][1]) for i in range(3))
        mu = sum(mask[i][:, None] * experts[i][0] * np.exp(-experts[i][1]) for i in range(3)) / precision
        lv = -np.log(precision)
        z = mu + np.exp(lv / 2) * np.asarray(jax.random.normal(k, mu.shape), np.float64)
        lls = ref.log_likelihoods(params["decoders"], z, flat)
        return sum(mask[i] * lam[i] * lls[m] for i, m in enumerate("xyw")) - beta * ref.kl_prior(mu, lv)

    return elbo


@pytest.mark.parametrize("beta,weights,num_subsets", [(1.0, (), 1), (2.0, (1.0, 2.0, 50.0), 3)])
def test_mvae_loss_matches_hand_computation(beta, weights, num_subsets):
    model, params = _model(beta=beta, likelihood_weights=weights, num_subsets=num_subsets)
    lam = np.array(weights or (1.0, 1.0, 1.0))
    batch = ref.batch(np.random.default_rng(0), n=6)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(7)
    terms = model.loss(params, batch, key)

    elbo = _hand_elbo(params, flat, lam, beta)

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


def test_mvae_with_missing_modalities_is_each_examples_objective_on_what_it_has_by_hand():
    """An example with only the modalities P: ELBO(x_P) + sum_{m in P} ELBO(x_m) + ELBOs of subsets of P drawn
    uniformly (``--missing``), in float64 with the same draws."""
    from mvae_jax.models import PRESENT

    beta, n = 1.5, 6
    model, params = _model(beta=beta, num_subsets=2)
    present = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0]], bool)
    batch = ref.batch(np.random.default_rng(3), n=n)
    for i, m in enumerate("xyw"):  # what an example lacks is erased, as mvae_jax.missing does
        batch[m] = batch[m] * present[:, i].reshape((-1,) + (1,) * (batch[m].ndim - 1))
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(11)
    terms = model.loss(params, {**batch, PRESENT: present}, key)

    elbo = _hand_elbo(params, flat, np.ones(3), beta)

    mask_p = present.T.astype(np.float64)
    k_joint, k_single, k_subsets = jax.random.split(key, 3)
    total = elbo(k_joint, mask_p)
    for i, k in enumerate(jax.random.split(k_single, 3)):
        total = total + mask_p[i] * elbo(k, np.eye(3)[i][:, None] * np.ones((3, n)))
    for k in jax.random.split(k_subsets, 2):
        k_mask, k_z = jax.random.split(k)
        # Each example's allowed subset codes (within P), and the k-th of them with k uniform.
        within = lambda e, c: all(present[e, b] or not (c >> b) & 1 for b in range(3))
        allowed = [[c for c in range(1, 8) if within(e, c)] for e in range(n)]
        draws = np.asarray(jax.random.randint(k_mask, (n,), 0, np.array([len(a) for a in allowed])))
        codes = np.array([allowed[e][draws[e]] for e in range(n)])
        mask = ref.subset_bits(codes)
        assert np.all(mask <= mask_p)
        total = total + elbo(k_z, mask)
    np.testing.assert_allclose(terms["loss"], -total, rtol=2e-5)
