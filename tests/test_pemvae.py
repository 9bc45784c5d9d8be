"""The parameter-efficient model: its one encoder against a numpy hand computation, both training
stages of its objective, and its parameter count (the joint model plus the mask tokens)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import networks
from mvae_jax.config import Config
from mvae_jax.models import get_model
from tests import reference as ref


def _model(**kw):
    model = get_model(Config(model="pemvae", hidden_dims=(5, 4), latent_dim=2, **kw), ref.MODALITIES)
    params = model.init(jax.random.PRNGKey(0))
    # Non-zero mask tokens, so that a wrong token shows in the numbers.
    tokens = np.random.default_rng(9).normal(size=params["encoder"]["mask_tokens"].shape).astype(np.float32)
    params["encoder"]["mask_tokens"] = jnp.asarray(tokens)
    return model, params


def _encode(enc, flat, mask):
    """h = relu(b + sum_m [mask_m W_m x_m + (1 - mask_m) t_m]) -> fusion MLP -> (mu, logvar); mask (3, batch)."""
    h = np.asarray(enc["bias"], np.float64)
    for i, m in enumerate("xyw"):
        feature = flat[m] @ np.asarray(enc[f"features_{m}"]["kernel"], np.float64)
        token = np.asarray(enc["mask_tokens"][i], np.float64)
        h = h + mask[i][:, None] * feature + (1 - mask[i][:, None]) * token
    return np.split(ref.dense_stack(enc["fusion"], np.maximum(h, 0)), 2, axis=-1)


@pytest.mark.parametrize("epoch,beta,num_subsets", [(0, 1.0, 1), (1, 1.0, 1), (4, 2.0, 2)])
def test_pemvae_loss_matches_hand_computation(epoch, beta, num_subsets):
    model, params = _model(beta=beta, num_subsets=num_subsets, warmup_epochs=1)
    batch = ref.batch(np.random.default_rng(0), n=6)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(7)
    terms = model.loss(params, batch, key, epoch)

    noise = lambda k, mu: np.asarray(jax.random.normal(k, mu.shape), np.float64)
    k_joint, k_subsets = jax.random.split(key)
    # Stage 1 (epoch < warmup): the joint ELBO, as JMVAE.
    mu, lv = _encode(params["encoder"], flat, np.ones((3, 6)))
    z = mu + np.exp(lv / 2) * noise(k_joint, mu)
    total = sum(ref.log_likelihoods(params["decoders"], z, flat).values()) - beta * ref.kl_prior(mu, lv)
    if epoch >= 1:
        # Stage 2: + ELBO of a random proper subset S - KL(q(z|all) || q(z|x_S)), per example.
        for k in jax.random.split(k_subsets, num_subsets):
            k_mask, k_z = jax.random.split(k)
            mask = ref.subset_bits(np.asarray(jax.random.randint(k_mask, (6,), 1, 7)))
            assert np.all(mask.sum(0) >= 1) and np.all(mask.sum(0) <= 2)
            mu_s, lv_s = _encode(params["encoder"], flat, mask)
            z_s = mu_s + np.exp(lv_s / 2) * noise(k_z, mu_s)
            lls = ref.log_likelihoods(params["decoders"], z_s, flat)
            elbo_s = sum(mask[i] * lls[m] for i, m in enumerate("xyw")) - beta * ref.kl_prior(mu_s, lv_s)
            total = total + elbo_s - ref.kl(mu, lv, mu_s, lv_s)
    np.testing.assert_allclose(terms["loss"], -total, rtol=2e-5)


def test_encode_masks_absent_modalities_with_their_tokens():
    model, params = _model()
    batch = ref.batch(np.random.default_rng(1), n=4)
    flat = ref.flat(batch)
    for present, mask in [(("x",), [1, 0, 0]), (("y", "w"), [0, 1, 1]), (("x", "y", "w"), [1, 1, 1])]:
        mu, lv = model.encode(params, {k: batch[k] for k in present}, present)
        ref_mu, ref_lv = _encode(params["encoder"], flat, np.array(mask, np.float64)[:, None] * np.ones((3, 4)))
        np.testing.assert_allclose(mu, ref_mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lv, ref_lv, rtol=1e-5, atol=1e-6)


def test_with_every_modality_the_encoder_is_the_joint_mlp():
    """Per-modality features summed = one Dense layer over the concatenated modalities (JMVAE's joint encoder)."""
    model, params = _model()
    enc = params["encoder"]
    batch = ref.batch(np.random.default_rng(2), n=4)
    kernel = jnp.concatenate([enc[f"features_{m}"]["kernel"] for m in "xyw"], axis=0)
    joint = {"mlp": {"dense_0": {"kernel": kernel, "bias": enc["bias"]},
                     "dense_1": enc["fusion"]["dense_0"], "dense_2": enc["fusion"]["dense_1"]}}
    flat = jnp.concatenate([jnp.reshape(batch[m], (4, -1)) for m in "xyw"], axis=1)
    expected = networks.GaussianEncoder((5, 4), 2).apply({"params": joint}, flat)
    got = model.encode(params, batch, ("x", "y", "w"))
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)


def test_parameter_count_is_the_joint_models_plus_mask_tokens():
    pemvae = get_model(Config(model="pemvae", hidden_dims=(5, 4), latent_dim=2), ref.MODALITIES)
    jmvae = get_model(Config(model="jmvae", hidden_dims=(5, 4), latent_dim=2), ref.MODALITIES)
    p = jax.eval_shape(pemvae.init, jax.random.PRNGKey(0))
    j = jax.eval_shape(jmvae.init, jax.random.PRNGKey(0))
    joint_model = networks.count_params(j["joint_encoder"]) + networks.count_params(j["decoders"])
    assert networks.count_params(p) == joint_model + 3 * 5
    assert p["encoder"]["mask_tokens"].shape == (3, 5)


def test_subset_stage_holds_the_joint_posterior_and_decoders_fixed():
    """In stage 2 the KL and subset-ELBO terms train the encoder only, not the decoders."""
    model, params = _model(warmup_epochs=1)
    batch = ref.batch(np.random.default_rng(3), n=6)
    key = jax.random.PRNGKey(0)

    def subset_part(p):
        terms = model.loss(p, batch, key, 1)
        return jnp.mean(terms["elbo_subset_0"] - terms["kl_joint_to_subset_0"])

    grads = jax.grad(subset_part)(params)
    assert all(np.all(g == 0) for g in jax.tree_util.tree_leaves(grads["decoders"]))
    assert any(np.any(g != 0) for g in jax.tree_util.tree_leaves(grads["encoder"]))
    # Stage 1 sends nothing to the subset terms.
    terms = model.loss(params, batch, key, 0)
    assert np.all(np.asarray(terms["elbo_subset_0"]) == 0)
