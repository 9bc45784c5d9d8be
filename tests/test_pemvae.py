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


def _encode(enc, flat, mask, fusion="tokens"):
    """h = relu(b + fuse) -> fusion MLP -> (mu, logvar); mask (3, batch).

    fuse = sum_m [mask_m W_m x_m + (1 - mask_m) t_m] (tokens), sum_m mask_m W_m x_m (zero),
    or that sum / sum_m mask_m (mean).
    """
    h = np.asarray(enc["bias"], np.float64)
    total = 0
    for i, m in enumerate("xyw"):
        feature = flat[m] @ np.asarray(enc[f"features_{m}"]["kernel"], np.float64)
        total = total + mask[i][:, None] * feature
        if fusion == "tokens":
            total = total + (1 - mask[i][:, None]) * np.asarray(enc["mask_tokens"][i], np.float64)
    h = h + (total / np.maximum(mask.sum(0), 1)[:, None] if fusion == "mean" else total)
    return np.split(ref.dense_stack(enc["fusion"], np.maximum(h, 0)), 2, axis=-1)


@pytest.mark.parametrize("epoch,beta,num_subsets", [(0, 1.0, 1), (1, 1.0, 1), (4, 2.0, 2)])
def test_pemvae_loss_matches_hand_computation(epoch, beta, num_subsets):
    """The objective before the study's defaults: one random proper subset per example and draw, all weights 1."""
    model, params = _model(
        beta=beta, num_subsets=num_subsets, warmup_epochs=1, subset_sampling="random", unimodal_weight=1.0
    )
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
    joint = {
        "mlp": {
            "dense_0": {"kernel": kernel, "bias": enc["bias"]},
            "dense_1": enc["fusion"]["dense_0"],
            "dense_2": enc["fusion"]["dense_1"],
        }
    }
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


@pytest.mark.slow  # over 7 s: the everyday tier stays under 4 minutes
def test_subset_stage_holds_the_joint_posterior_and_decoders_fixed():
    """In stage 2 the KL and subset-ELBO terms train the encoder only, not the decoders."""
    model, params = _model(warmup_epochs=1, subset_sampling="random")
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


PROPER = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)]  # x, y, w, xy, xw, yw


def _variant_model(**kw):
    fusion = kw.get("fusion", "tokens")
    if fusion == "tokens":
        return _model(**kw)
    model = get_model(Config(model="pemvae", hidden_dims=(5, 4), latent_dim=2, **kw), ref.MODALITIES)
    return model, model.init(jax.random.PRNGKey(0))


VARIANTS = [
    dict(),  # the defaults: every proper subset each step, single-modality subsets weighted 3
    dict(subset_sampling="random", unimodal_weight=1.0),
    dict(subset_sampling="all"),
    dict(subset_sampling="all", unimodal_weight=3.0),
    dict(subset_sampling="random", num_subsets=2, unimodal_weight=0.5),
    dict(subset_objective="kl"),
    dict(subset_objective="kl", subset_kl_weight=0.1),
    dict(subset_objective="elbo"),
    dict(subset_kl_weight=2.5),
    dict(subset_targets="all"),
    dict(subset_sampling="all", subset_targets="all", subset_objective="elbo"),
    dict(fusion="mean"),
    dict(fusion="zero", subset_sampling="all"),
    dict(modality_dropout=0.4),
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_pemvae_variants_match_hand_computation(options):
    """Every option of the subset objective against the module docstring's L_2, computed in float64 numpy."""
    beta = 1.5
    model, params = _variant_model(beta=beta, warmup_epochs=1, **options)
    fusion = options.get("fusion", "tokens")
    sampling = options.get("subset_sampling", "all")
    objective = options.get("subset_objective", "elbo_kl")
    u, a = options.get("unimodal_weight", 3.0), options.get("subset_kl_weight", 1.0)
    n = 6
    batch = ref.batch(np.random.default_rng(4), n=n)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(11)
    terms = model.loss(params, batch, key, 2)

    noise = lambda k, mu: np.asarray(jax.random.normal(k, mu.shape), np.float64)
    k_joint, k_subsets = jax.random.split(key)
    mu, lv = _encode(params["encoder"], flat, np.ones((3, n)), fusion)
    source = np.ones((3, n))
    if options.get("modality_dropout"):
        from mvae_jax.models.pemvae import modality_dropout_masks

        source = np.asarray(
            modality_dropout_masks(jax.random.fold_in(key, 2), 3, n, options["modality_dropout"]), np.float64
        )
        assert np.all(source.sum(0) >= 1) and np.any(source.sum(0) < 3)
    mu_j, lv_j = _encode(params["encoder"], flat, source, fusion)
    z = mu_j + np.exp(lv_j / 2) * noise(k_joint, mu_j)
    total = sum(ref.log_likelihoods(params["decoders"], z, flat).values()) - beta * ref.kl_prior(mu_j, lv_j)
    if sampling == "all":
        draws = [
            (k, np.array(bits, np.float64)[:, None] * np.ones((3, n)))
            for k, bits in zip(jax.random.split(k_subsets, 6), PROPER)
        ]
    else:
        draws = []
        for k in jax.random.split(k_subsets, options.get("num_subsets", 1)):
            draws.append((k, ref.subset_bits(np.asarray(jax.random.randint(jax.random.split(k)[0], (n,), 1, 7)))))
    for k, mask in draws:
        k_z = jax.random.split(k)[1]
        mu_s, lv_s = _encode(params["encoder"], flat, mask, fusion)
        part = 0
        if objective in ("elbo_kl", "elbo"):
            z_s = mu_s + np.exp(lv_s / 2) * noise(k_z, mu_s)
            lls = ref.log_likelihoods(params["decoders"], z_s, flat)
            targets = mask if options.get("subset_targets", "present") == "present" else np.ones((3, n))
            part = sum(targets[i] * lls[m] for i, m in enumerate("xyw")) - beta * ref.kl_prior(mu_s, lv_s)
        if objective in ("elbo_kl", "kl"):
            part = part - a * ref.kl(mu, lv, mu_s, lv_s)
        total = total + np.where(mask.sum(0) == 1, u, 1.0) * part
    np.testing.assert_allclose(terms["loss"], -total, rtol=3e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", ["mean", "zero"])
def test_fusions_encode_subsets_by_hand(fusion):
    model, params = _variant_model(fusion=fusion)
    assert "mask_tokens" not in params["encoder"]
    batch = ref.batch(np.random.default_rng(5), n=4)
    flat = ref.flat(batch)
    for present, mask in [(("x",), [1, 0, 0]), (("y", "w"), [0, 1, 1]), (("x", "y", "w"), [1, 1, 1])]:
        mu, lv = model.encode(params, {k: batch[k] for k in present}, present)
        ref_mu, ref_lv = _encode(params["encoder"], flat, np.array(mask, np.float64)[:, None] * np.ones((3, 4)), fusion)
        np.testing.assert_allclose(mu, ref_mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lv, ref_lv, rtol=1e-5, atol=1e-6)


def test_modality_dropout_keeps_each_with_the_stated_probability_and_never_none():
    from mvae_jax.models.pemvae import modality_dropout_masks

    masks = np.asarray(modality_dropout_masks(jax.random.PRNGKey(0), 3, 200_000, 0.3))
    assert set(np.unique(masks)) == {0.0, 1.0}
    assert masks.sum(0).min() == 1
    # P(kept) = 0.7 + P(none kept) / 3 = 0.7 + 0.027 / 3
    np.testing.assert_allclose(masks.mean(1), 0.7 + 0.3**3 / 3, atol=0.004)


@pytest.mark.slow  # over 7 s: the everyday tier stays under 4 minutes
def test_freeze_encoder_trains_only_the_mask_tokens_after_the_warm_up():
    """With freeze_encoder, a training step leaves the encoder's networks unchanged after the warm-up;
    the mask tokens and the decoders still move, and in the warm-up everything used moves."""
    import optax

    from mvae_jax import training

    model, _ = _model(freeze_encoder=True, warmup_epochs=1)
    tx = optax.adam(1e-2)
    state = training.create_train_state(model, tx, 0)
    step = jax.jit(training.make_train_step(model, tx))
    batch = {k: jnp.asarray(v) for k, v in ref.batch(np.random.default_rng(6), n=8).items()}
    changed = lambda a, b: {
        path: bool(np.any(np.asarray(x) != np.asarray(y)))
        for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b))
    }
    first, _ = step(state, batch)  # epoch 0: the warm-up (the mask tokens are not used yet)
    assert all(
        did != ("mask_tokens" in jax.tree_util.keystr(path))
        for path, did in changed(state.params, first.params).items()
    )
    later = state.replace(epoch=jnp.int32(1))
    for _ in range(3):
        later, _ = step(later, batch)
    moved = changed(state.params, later.params)
    for path, did in moved.items():
        name = jax.tree_util.keystr(path)
        if "encoder" in name and "mask_tokens" not in name:
            assert not did, name
        else:
            assert did, name


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(num_subsets=2), "num_subsets=2"),
        (dict(subset_objective="elbo", subset_kl_weight=0.5), "subset_kl_weight=0.5"),
        (dict(subset_objective="kl", subset_kl_weight=0.0), "subset_kl_weight=0.0"),
        (dict(fusion="sum"), "fusion='sum' is invalid; allowed: tokens, mean, zero"),
        (dict(modality_dropout=1.0), "modality_dropout=1.0"),
        (dict(unimodal_weight=-1.0), "unimodal_weight=-1.0"),
    ],
)
def test_bad_pemvae_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config(model="pemvae", **options).validate()


def test_pemvae_options_are_refused_for_other_models():
    with pytest.raises(ValueError, match="fusion='mean' applies to model pemvae only"):
        Config(model="jmvae", fusion="mean").validate()


def test_a_pemvae_config_saved_before_the_options_keeps_its_objective():
    """config.json of a pemvae run trained before subset_sampling and unimodal_weight existed loads with the
    values it trained with (one random subset, weight 1), not today's defaults; other models are unaffected."""
    old = Config(model="pemvae").to_dict()
    for key in ("subset_sampling", "unimodal_weight"):
        del old[key]
    loaded = Config.from_dict(old).validate()
    assert (loaded.subset_sampling, loaded.unimodal_weight) == ("random", 1.0)
    assert (Config().subset_sampling, Config().unimodal_weight) == ("all", 3.0)
    jmvae = Config().to_dict()
    del jmvae["subset_sampling"], jmvae["unimodal_weight"]
    assert Config.from_dict(jmvae).validate() == Config()
