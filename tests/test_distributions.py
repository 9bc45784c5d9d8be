"""Distributions against closed forms, Monte-Carlo estimates and direct formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mvae_jax import distributions as D


def test_kl_gaussians_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=3), rng.normal(size=3)
    lv1, lv2 = rng.normal(size=3) * 0.5, rng.normal(size=3) * 0.5
    z = mu1 + np.exp(lv1 / 2) * rng.normal(size=(400_000, 3))
    log_q = stats.norm.logpdf(z, mu1, np.exp(lv1 / 2)).sum(-1)
    log_p = stats.norm.logpdf(z, mu2, np.exp(lv2 / 2)).sum(-1)
    mc = np.mean(log_q - log_p)
    closed = float(D.kl_gaussians(mu1, lv1, mu2, lv2))
    assert closed == pytest.approx(mc, abs=4 * np.std(log_q - log_p) / np.sqrt(len(z)))


def test_kl_standard_normal_matches_general_kl_and_monte_carlo():
    rng = np.random.default_rng(1)
    mu, lv = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    general = D.kl_gaussians(mu, lv, np.zeros_like(mu), np.zeros_like(lv))
    np.testing.assert_allclose(D.kl_standard_normal(mu, lv), general, rtol=1e-5)
    assert D.kl_standard_normal(mu, lv).shape == (5,)
    z = mu[0] + np.exp(lv[0] / 2) * rng.normal(size=(400_000, 4))
    diff = stats.norm.logpdf(z, mu[0], np.exp(lv[0] / 2)).sum(-1) - stats.norm.logpdf(z).sum(-1)
    assert float(D.kl_standard_normal(mu[0], lv[0])) == pytest.approx(diff.mean(), abs=4 * diff.std() / 632)


def test_kl_is_zero_for_equal_gaussians():
    mu, lv = jnp.array([[0.3, -1.0]]), jnp.array([[0.2, -0.7]])
    np.testing.assert_allclose(D.kl_gaussians(mu, lv, mu, lv), [0.0], atol=1e-7)


def test_sample_gaussian_moments():
    mu, lv = jnp.array([1.0, -2.0]), jnp.array([0.0, np.log(4.0)])
    z = D.sample_gaussian(jax.random.PRNGKey(0), jnp.broadcast_to(mu, (200_000, 2)), jnp.broadcast_to(lv, (200_000, 2)))
    np.testing.assert_allclose(z.mean(0), mu, atol=0.02)
    np.testing.assert_allclose(z.std(0), [1.0, 2.0], rtol=0.01)


def test_gaussian_log_density_matches_scipy():
    z, mu, lv = np.array([0.5, -1.0]), np.array([0.1, 0.2]), np.array([0.3, -0.4])
    expected = stats.norm.logpdf(z, mu, np.exp(lv / 2)).sum()
    assert float(D.gaussian_log_density(z, mu, lv)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("prior_expert", [False, True])
def test_product_of_experts_is_the_product_of_densities(prior_expert):
    """log N(z; poe) - sum_i log N(z; expert_i) [- log N(z; 0, I)] is the same constant for every z."""
    rng = np.random.default_rng(2)
    mus, lvs = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)) * 0.5
    mu, lv = D.product_of_experts(jnp.asarray(mus), jnp.asarray(lvs), prior_expert=prior_expert)
    zs = rng.normal(size=(50, 2)) * 2
    log_product = stats.norm.logpdf(zs[:, None, :], mus, np.exp(lvs / 2)).sum((1, 2))
    if prior_expert:
        log_product += stats.norm.logpdf(zs).sum(-1)
    gap = np.asarray(D.gaussian_log_density(zs, mu, lv)) - log_product
    np.testing.assert_allclose(gap, gap[0], atol=1e-4)
    # The product's precision is the sum of the precisions.
    np.testing.assert_allclose(np.exp(-lv), np.exp(-lvs).sum(0) + prior_expert, rtol=1e-5)


def test_product_of_experts_mask_leaves_experts_out():
    rng = np.random.default_rng(3)
    mus, lvs = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    mask = jnp.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]], jnp.float32)
    mu, lv = D.product_of_experts(mus, lvs, mask, prior_expert=True)
    # Example 3 keeps only the prior expert: N(0, I).
    np.testing.assert_allclose(mu[3], 0.0, atol=1e-7)
    np.testing.assert_allclose(lv[3], 0.0, atol=1e-7)
    ref_mu, ref_lv = D.product_of_experts(mus[[0, 2], 1], lvs[[0, 2], 1], prior_expert=True)
    np.testing.assert_allclose(mu[1], ref_mu, rtol=1e-5)
    np.testing.assert_allclose(lv[1], ref_lv, rtol=1e-5)


def test_a_product_of_no_experts_without_the_prior_is_an_error_naming_the_example():
    """Every expert of an example masked and no prior expert: NaN before; now a ValueError saying which and how
    to fix it (with the prior expert, N(0, I), as above)."""
    mus, lvs = np.zeros((2, 3, 2)), np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match=r"leaves 1 example\(s\) with no expert \(the first at flat index 2\)"):
        D.product_of_experts(mus, lvs, np.array([[1, 0, 0], [0, 1, 0]]))
    mu, _ = D.product_of_experts(mus, lvs, np.array([[1, 0, 1], [0, 1, 0]]))  # one expert each: fine
    assert np.all(np.isfinite(mu))


def test_bernoulli_log_likelihood_matches_direct_formula():
    rng = np.random.default_rng(4)
    logits, targets = rng.normal(size=(3, 4, 5)) * 3, rng.random((3, 4, 5))
    p = 1 / (1 + np.exp(-logits))
    direct = (targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum((1, 2))
    np.testing.assert_allclose(D.bernoulli_log_likelihood(logits, targets, event_ndims=2), direct, rtol=1e-5)
    # Stable where the naive formula overflows.
    assert np.isfinite(D.bernoulli_log_likelihood(jnp.array([[1e4, -1e4]]), jnp.array([[0.0, 1.0]])))


def test_categorical_log_likelihood_matches_direct_formula():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    expected = [3 - np.log(np.exp([1, 2, 3]).sum()), -np.log(3)]
    np.testing.assert_allclose(D.categorical_log_likelihood(logits, targets), expected, rtol=1e-6)


def test_sample_mixture_draws_each_component_equally_and_then_its_gaussian():
    """Components far apart: the share of draws near each is 1/C, and within one the moments are its own."""
    from mvae_jax import distributions

    mus = jnp.asarray([[[-30.0, 0.0]], [[0.0, 0.0]], [[30.0, 5.0]]])  # (3 components, 1 example, 2)
    logvars = jnp.log(jnp.asarray([[[1.0, 1.0]], [[0.25, 0.25]], [[4.0, 4.0]]]))
    z = np.asarray(distributions.sample_mixture(jax.random.PRNGKey(0), mus, logvars, (60_000,)))[:, 0]
    assert z.shape == (60_000, 2)
    nearest = np.argmin(np.abs(z[:, :1] - np.asarray([-30.0, 0.0, 30.0])), axis=1)
    np.testing.assert_allclose(np.bincount(nearest) / len(z), 1 / 3, atol=0.01)
    for c in range(3):
        np.testing.assert_allclose(z[nearest == c].mean(0), np.asarray(mus[c, 0]), atol=0.05)
        np.testing.assert_allclose(z[nearest == c].var(0), np.exp(np.asarray(logvars[c, 0])), rtol=0.05)
    one = distributions.sample_mixture(jax.random.PRNGKey(1), mus, logvars)
    assert one.shape == (1, 2)


@pytest.mark.parametrize("event_ndims", [0, 1, 3])
def test_bernoulli_log_likelihood_broadcasts_samples_over_targets(event_ndims):
    """K samples of logits (K, B, 28, 28, 1) against targets (B, 28, 28, 1), as the IW estimates call it."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 28, 28, 1)).astype(np.float32) * 3
    targets = rng.integers(0, 2, (4, 28, 28, 1)).astype(np.float32)
    per_pixel = targets * np.log(1 / (1 + np.exp(-logits))) + (1 - targets) * np.log(1 / (1 + np.exp(logits)))
    expected = per_pixel.sum(axis=tuple(range(per_pixel.ndim - event_ndims, per_pixel.ndim)))
    got = D.bernoulli_log_likelihood(jnp.asarray(logits), jnp.asarray(targets), event_ndims=event_ndims)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("event_ndims", [1, 3])
def test_laplace_log_likelihood_matches_the_density_in_float64(event_ndims):
    """log Laplace(x; loc, b) = sum [-|x - loc| / b - log 2b], K samples of locations against (B, ...) targets."""
    rng = np.random.default_rng(7)
    loc = rng.normal(size=(2, 4, 28, 28, 3)) * 0.5 + 0.5
    targets = rng.random((4, 28, 28, 3))
    per_value = stats.laplace.logpdf(targets, loc=loc, scale=0.75)
    expected = per_value.sum(axis=tuple(range(per_value.ndim - event_ndims, per_value.ndim)))
    with jax.enable_x64(True):
        got = D.laplace_log_likelihood(jnp.asarray(loc), jnp.asarray(targets), 0.75, event_ndims=event_ndims)
        assert got.dtype == jnp.float64 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_laplace_image_modality_scores_its_location_and_shows_it_clipped():
    from mvae_jax.modality import LAPLACE_SCALE, Modality

    image = Modality("m0", (2, 2, 3), "laplace", "mopoe")
    loc = jnp.asarray(np.linspace(-0.5, 1.5, 12, dtype=np.float32).reshape(1, 2, 2, 3))
    targets = jnp.full((1, 2, 2, 3), 0.25)
    expected = -np.abs(0.25 - np.asarray(loc)).sum() / LAPLACE_SCALE - 12 * np.log(2 * LAPLACE_SCALE)
    np.testing.assert_allclose(image.log_likelihood(loc, targets), [expected], rtol=1e-6)
    assert image.is_image and LAPLACE_SCALE == 0.75
    np.testing.assert_array_equal(image.mean(loc), np.clip(np.asarray(loc), 0, 1))


def test_laplace_density_sampling_and_variance_against_scipy():
    rng = np.random.default_rng(3)
    loc, scale = rng.normal(size=(4, 6)), rng.uniform(0.2, 2.0, size=(4, 6))
    z = rng.normal(size=(4, 6)) * 2
    expected = stats.laplace.logpdf(z, loc=loc, scale=scale).sum(-1)
    np.testing.assert_allclose(D.laplace_log_density(z, loc, scale), expected, rtol=1e-5)
    np.testing.assert_allclose(np.exp(D.laplace_log_variance(scale)), stats.laplace.var(scale=scale), rtol=1e-5)
    draws = np.asarray(D.sample_laplace(jax.random.PRNGKey(0), loc[0], scale[0], (40_000,)))
    assert draws.shape == (40_000, 6)
    np.testing.assert_allclose(np.median(draws, 0), loc[0], atol=0.05 * scale[0].max() + 0.02)
    np.testing.assert_allclose(np.mean(np.abs(draws - loc[0]), 0), scale[0], rtol=0.03)  # E|z - loc| = scale
    grad = jax.grad(lambda s: D.sample_laplace(jax.random.PRNGKey(1), 0.0, s).sum())(jnp.ones(3))
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)  # reparameterised: the scale gets a gradient
