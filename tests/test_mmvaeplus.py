"""MMVAE+ (Palumbo et al. 2023): the K = 1 objective with shared and private Laplace latents against a numpy
hand computation, the shared posterior as the mixture of the present experts, and the prior it generates from."""

import jax
import numpy as np
import pytest

from tests import reference as ref

NAMES = ("x", "y", "w")
PRIVATE, SHARED = 3, 2


def _scales(raw):
    e = np.exp(raw - raw.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True) * raw.shape[-1] + 1e-6


def _laplace(z, loc, scale):
    return (-np.log(2 * scale) - np.abs(z - loc) / scale).sum(-1)


def _experts(params, flat):
    """{m: ((w loc, w scale), (z loc, z scale))} of the tiny encoders, float64."""
    out = {}
    for m in NAMES:
        loc, raw = ref.gaussian(params["encoders"][m], flat[m])
        out[m] = (
            (loc[:, :PRIVATE], _scales(raw[:, :PRIVATE])),
            (loc[:, PRIVATE:], _scales(raw[:, PRIVATE:])),
        )
    return out


def hand_terms(params, flat, key, lam):
    """Per encoding modality r, with the loss's own draws (float64): (sum_d lambda_d log p(x_d | w~_d, z_r),
    z_r, w_r, log q(z_r | X), log q(w_r | x_r)). MMVAE+'s and CMVAE's objectives differ only in p(z)."""
    experts = _experts(params, flat)
    z_locs = np.stack([experts[m][1][0] for m in NAMES])
    z_scales = np.stack([experts[m][1][1] for m in NAMES])
    n_examples = len(flat[NAMES[0]])
    out = []
    for r, (k, n) in enumerate(zip(jax.random.split(key, 3), NAMES)):
        k_z, k_w, k_aux = jax.random.split(k, 3)
        (w_loc, w_scale), (z_loc, z_scale) = experts[n]
        z = z_loc + z_scale * np.asarray(jax.random.laplace(k_z, (n_examples, SHARED)), np.float64)
        w = w_loc + w_scale * np.asarray(jax.random.laplace(k_w, (n_examples, PRIVATE)), np.float64)
        log_likelihood = 0.0
        for d, (k_d, m) in enumerate(zip(jax.random.split(k_aux, 3), NAMES)):
            aux = _scales(np.asarray(params["aux_scales"][m], np.float64))
            w_d = w if d == r else aux * np.asarray(jax.random.laplace(k_d, (n_examples, PRIVATE)), np.float64)
            log_likelihood += lam[m] * ref.log_likelihoods(params["decoders"], np.concatenate([w_d, z], 1), flat)[m]
        per_expert = np.stack([_laplace(z, z_locs[j], z_scales[j]) for j in range(3)])
        log_q_z = np.log(np.mean(np.exp(per_expert), axis=0))
        out.append((log_likelihood, z, w, log_q_z, _laplace(w, w_loc, w_scale)))
    return out


@pytest.mark.parametrize("beta,weights", [(1.0, ()), (2.5, (1.0, 0.5, 20.0))])
def test_mmvaeplus_loss_matches_hand_computation(beta, weights):
    model, params = ref.tiny_model("mmvaeplus", beta=beta, likelihood_weights=weights, private_dim=PRIVATE)
    params = jax.tree_util.tree_map(lambda v: v, params)
    params["aux_scales"]["y"] = params["aux_scales"]["y"] + np.array([0.5, -1.0, 0.2], np.float32)  # learned r_y
    lam = dict(zip(NAMES, weights or (1.0, 1.0, 1.0)))
    batch = ref.batch(np.random.default_rng(0), n=4)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(7)
    terms = jax.jit(model.loss)(params, batch, key)

    elbos = []
    for log_likelihood, z, w, log_q_z, log_q_w in hand_terms(params, flat, key, lam):
        log_prior = _laplace(z, 0.0, 1.0) + _laplace(w, 0.0, 1.0)
        elbos.append(log_likelihood + beta * (log_prior - log_q_z - log_q_w))
    np.testing.assert_allclose(terms["elbo_y"], elbos[1], rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(terms["loss"], -np.mean(elbos, axis=0), rtol=2e-5, atol=1e-4)


def test_the_shared_posterior_is_the_mixture_of_the_present_experts_z_parts():
    model, params = ref.tiny_model("mmvaeplus", private_dim=PRIVATE)
    batch = ref.batch(np.random.default_rng(1), n=3)
    experts = _experts(params, ref.flat(batch))
    mus, logvars = model.posterior(params, batch, ("x", "w"))
    np.testing.assert_allclose(mus, [experts["x"][1][0], experts["w"][1][0]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(logvars), [2 * experts[m][1][1] ** 2 for m in ("x", "w")], rtol=1e-4)
    mu, _ = model.encode(params, batch, ("y",))
    np.testing.assert_allclose(mu, experts["y"][1][0], rtol=1e-5, atol=1e-6)
    assert mu.shape == (3, SHARED) and model.latent_prior == "laplace"


def test_generation_from_the_prior_draws_laplace_codes():
    from mvae_jax.evaluation.metrics import samplers

    z = np.asarray(samplers.prior(2, "laplace").sample(jax.random.PRNGKey(0), 50_000))
    np.testing.assert_allclose(np.mean(np.abs(z), 0), [1.0, 1.0], rtol=0.02)  # E|z| = 1 under Laplace(0, 1)
    assert abs(np.mean(z**2) - 2.0) < 0.05  # its variance is 2, N(0, 1)'s 1


def test_generation_draws_each_targets_private_code_from_its_prior():
    """--generation=sample: target t decodes (w, z) with w ~ p(w) = Laplace(0, 1), its own draw (float64 by
    hand); without a key, generation is ``decode``, w = 0, the prior's mean."""
    model, params = ref.tiny_model("mmvaeplus", private_dim=PRIVATE)
    z = np.random.default_rng(2).normal(size=(4, SHARED)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    drawn = model.generate(params, z, ("y", "w"), key)
    assert set(drawn) == {"y", "w"}
    for t in ("y", "w"):
        w = np.asarray(jax.random.laplace(jax.random.fold_in(key, NAMES.index(t)), (4, PRIVATE)), np.float64)
        expected = ref.mlp(params["decoders"][t], np.concatenate([w, z], 1))
        np.testing.assert_allclose(np.asarray(drawn[t]).reshape(4, -1), expected, rtol=1e-4, atol=1e-4)
    at_mean = model.generate(params, z, ("y",))["y"]
    np.testing.assert_array_equal(at_mean, model.decode(params, z, ("y",))["y"])
    expected = ref.mlp(params["decoders"]["y"], np.concatenate([np.zeros((4, PRIVATE)), z], 1))
    np.testing.assert_allclose(np.asarray(at_mean).reshape(4, -1), expected, rtol=1e-4, atol=1e-4)
