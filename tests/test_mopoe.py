"""MoPoE (Sutter et al. 2021): the mixture-of-products ELBO against a numpy hand computation, and
subset posteriors as mixtures of the products of their subsets."""

import itertools

import jax
import numpy as np
import pytest

from tests import reference as ref

SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations("xyw", r)]


def _model(**kw):
    return ref.tiny_model("mopoe", **kw)


@pytest.mark.parametrize("beta,weights", [(1.0, ()), (2.0, (1.0, 0.5, 20.0))])
def test_mopoe_loss_matches_hand_computation(beta, weights):
    model, params = _model(beta=beta, likelihood_weights=weights)
    lam = dict(zip("xyw", weights or (1.0, 1.0, 1.0)))
    batch = ref.batch(np.random.default_rng(0), n=4)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(7)
    terms = model.loss(params, batch, key)

    experts = {m: ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"}
    # q(z|x_S) = PoE of the experts in S (no prior expert), for each non-empty S.
    posteriors = [ref.product([experts[m][0] for m in s], [experts[m][1] for m in s], prior=False) for s in SUBSETS]
    # One z per example, from the subset drawn for it; it reconstructs every modality.
    k_component, k_z = jax.random.split(key)
    component = np.asarray(jax.random.randint(k_component, (4,), 0, 7))
    mu = np.stack([posteriors[c][0][b] for b, c in enumerate(component)])
    lv = np.stack([posteriors[c][1][b] for b, c in enumerate(component)])
    z = mu + np.exp(lv / 2) * np.asarray(jax.random.normal(k_z, (4, 2)), np.float64)
    lls = ref.log_likelihoods(params["decoders"], z, flat)
    # KL of the mixture -> mean of the subsets' KLs.
    mean_kl = np.mean([ref.kl_prior(*q) for q in posteriors], axis=0)
    expected = sum(lam[m] * lls[m] for m in "xyw") - beta * mean_kl
    np.testing.assert_allclose(terms["loss"], -expected, rtol=2e-5)
    np.testing.assert_allclose(terms["kl_x,w"], ref.kl_prior(*posteriors[SUBSETS.index(("x", "w"))]), rtol=2e-5)


def test_subset_posterior_is_the_mixture_of_its_subsets_products():
    model, params = _model()
    batch = ref.batch(np.random.default_rng(1), n=3)
    flat = ref.flat(batch)
    experts = {m: ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"}
    mus, lvs = model.posterior(params, batch, ("x", "y"))
    components = [
        ref.product([experts[m][0] for m in s], [experts[m][1] for m in s], prior=False)
        for s in [("x",), ("y",), ("x", "y")]
    ]
    np.testing.assert_allclose(mus, [c[0] for c in components], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lvs, [c[1] for c in components], rtol=1e-5, atol=1e-6)
    # encode: the mixture's mean and variance (law of total variance).
    mean = np.mean([c[0] for c in components], axis=0)
    var = np.mean([np.exp(c[1]) + c[0] ** 2 for c in components], axis=0) - mean**2
    mu, lv = model.encode(params, batch, ("x", "y"))
    np.testing.assert_allclose(mu, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lv, np.log(var), rtol=1e-4, atol=1e-5)
    # A single modality's posterior is its expert.
    mu, lv = model.encode(params, batch, ("w",))
    np.testing.assert_allclose(mu, experts["w"][0], rtol=1e-5, atol=1e-6)
