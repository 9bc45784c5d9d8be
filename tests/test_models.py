"""Every model through the shared interface: encode for every subset, finite gradients, a step that
lowers the loss; JMVAE-kl against a numpy hand computation; parameter counts."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mvae_jax import networks
from mvae_jax.config import Config
from mvae_jax.data import trimodal
from mvae_jax.models import MODELS, get_model
from tests import reference as ref

MODALITIES = ref.MODALITIES
ALL_MODELS = sorted(MODELS)


@pytest.mark.parametrize("beta,alpha", [(1.0, 0.1), (2.0, 1.0), (0.5, 0.0)])
def test_jmvae_loss_matches_hand_computation(beta, alpha):
    config = Config(hidden_dims=(5, 4), latent_dim=2, beta=beta, alpha=alpha)
    model = get_model(config, MODALITIES)
    params = model.init(jax.random.PRNGKey(0))
    batch = ref.batch(np.random.default_rng(0))
    key = jax.random.PRNGKey(7)
    terms = model.loss(params, batch, key)

    flat = ref.flat(batch)
    mu, lv = ref.gaussian(params["joint_encoder"], np.concatenate([flat["x"], flat["y"], flat["w"]], 1))
    z = mu + np.exp(lv / 2) * np.asarray(jax.random.normal(key, mu.shape), np.float64)
    ll = sum(ref.log_likelihoods(params["decoders"], z, flat).values())
    kl_uni = sum(ref.kl(mu, lv, *ref.gaussian(params["encoders"][n], flat[n])) for n in "xyw")
    expected = -(ll - beta * ref.kl_prior(mu, lv) - alpha * kl_uni)
    np.testing.assert_allclose(terms["loss"], expected, rtol=2e-5)
    assert terms["loss"].shape == (3,)


def test_jmvae_subsets_use_unimodal_encoders_and_their_product():
    model = get_model(Config(hidden_dims=(8,), latent_dim=3), MODALITIES)
    params = model.init(jax.random.PRNGKey(1))
    batch = ref.batch(np.random.default_rng(1), n=5)
    flat = ref.flat(batch)
    ex, ey = (ref.gaussian(params["encoders"][n], flat[n]) for n in "xy")
    np.testing.assert_allclose(model.encode(params, batch, ("x",))[0], ex[0], rtol=1e-5, atol=1e-6)
    mu, lv = model.encode(params, batch, ("y", "x"))
    ref_mu, ref_lv = ref.product([ex[0], ey[0]], [ex[1], ey[1]], prior=False)
    np.testing.assert_allclose(lv, ref_lv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_encode_every_subset_and_decode_have_the_right_shapes(name):
    model = get_model(Config(model=name, hidden_dims=(8,), latent_dim=3, **ref.FAST.get(name, {})), MODALITIES)
    params = model.init(jax.random.PRNGKey(1))
    batch = ref.batch(np.random.default_rng(1), n=5)
    jitted = jax.jit(model.encode, static_argnums=2)
    for r in (1, 2, 3):
        for present in itertools.combinations("xyw", r):
            only = {k: batch[k] for k in present}  # absent modalities are not needed
            mu, lv = model.encode(params, only, present)
            if present == ("x", "y"):  # jittable (compiling every subset of every model would only slow the suite)
                np.testing.assert_allclose(jitted(params, only, present)[0], mu, rtol=1e-5, atol=1e-6)
            assert mu.shape == lv.shape == (5, 3), present
            assert np.all(np.isfinite(mu)) and np.all(np.isfinite(lv)), present
            mus, lvs = model.posterior(params, only, present)
            assert mus.shape == lvs.shape and mus.shape[1:] == (5, 3), present
    logits = model.decode(params, mu)
    assert {k: v.shape for k, v in logits.items()} == {"x": (5, 2, 3, 1), "y": (5, 4), "w": (5, 3)}


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("present", [(), ("q",), ("x", "x")])
def test_encode_rejects_bad_subsets(name, present):
    model = get_model(Config(model=name, hidden_dims=(8,), latent_dim=3), MODALITIES)
    params = model.init(jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="present="):
        model.encode(params, ref.batch(np.random.default_rng(0)), present)


def _train_config(name, **kw):
    # jnf at epoch 1 with a warm-up of 1: its second stage, where the loss reaches every network
    options = {
        "pemvae": {"warmup_epochs": 0},
        "mmvae": {"num_samples": 4},
        "jnf": {"jnf_warmup": 1, **ref.FAST["jnf"]},
        "jnfdcca": {"jnf_warmup": 1, "jnf_dcca_epochs": 1, "jnf_dcca_dim": 3, **ref.FAST["jnf"]},
    }.get(name, {})
    return Config(model=name, hidden_dims=(16,), latent_dim=3, **options, **kw)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_gradients_are_finite_reach_every_network_and_a_jitted_step_lowers_the_loss(name):
    """One compiled Adam step per model (compiling the gradient, the objective and the step apart tripled the
    cost): its first gradients are finite and reach every network; 30 steps on a fixed batch lower the loss.
    At epoch 1, but jnfdcca at 2: the stage of its unimodal posteriors, which reaches every network but its DCCA
    (trained in stage 0 alone: tests/test_jnf.py)."""
    model = get_model(_train_config(name), MODALITIES)
    epoch, untouched = (2, {"dcca"}) if name == "jnfdcca" else (1, set())
    params = model.init(jax.random.PRNGKey(3))
    batch = ref.batch(np.random.default_rng(3), n=16)
    tx = optax.adam(1e-2)
    key = jax.random.PRNGKey(4)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(model.loss(p, batch, key, epoch)["loss"]))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    params, opt_state, first, grads = step(params, tx.init(params))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
    for group, tree in params.items():
        if group in untouched:
            continue
        for sub in tree if group in ("encoders", "decoders") else [None]:
            leaves = jax.tree_util.tree_leaves(grads[group] if sub is None else grads[group][sub])
            assert any(np.abs(g).sum() > 0 for g in leaves), (group, sub)
    for _ in range(30):
        params, opt_state, loss, _ = step(params, opt_state)
    assert float(loss) < 0.95 * float(first)


def _count(model):
    return networks.count_params(jax.eval_shape(model.init, jax.random.PRNGKey(0)))


def test_default_trimodal_parameter_counts():
    """784-512-512 MLPs, latent 20, counted by hand; pemvae has JMVAE's joint model plus 3 mask tokens."""
    dense = lambda i, o: i * o + o
    mlp = lambda i, o: dense(i, 512) + dense(512, 512) + dense(512, o)
    decoders = 2 * mlp(20, 784) + mlp(20, 10)
    unimodal = 2 * mlp(784, 40) + mlp(10, 40)
    joint = mlp(1578, 40)
    expected = {
        "jmvae": joint + unimodal + decoders,
        "telbo": joint + unimodal + decoders,
        "mvae": unimodal + decoders,
        "mmvae": unimodal + decoders,
        "mopoe": unimodal + decoders,
        "mvtcae": unimodal + decoders,
        # shared z of 20 and private w of 32: encoders give both, decoders read both; r_m's scales, 3 x 32
        "mmvaeplus": 2 * mlp(784, 104) + mlp(10, 104) + 2 * mlp(52, 784) + mlp(52, 10) + 3 * 32,
        # DMVAE: shared z of 20 and a private w of 1 per modality, encoders give both, decoders read both
        "dmvae": 2 * mlp(784, 42) + mlp(10, 42) + 2 * mlp(21, 784) + mlp(21, 10),
        # CMVAE: MMVAE+ and its prior, 40 cluster logits and 40 locations of 20
        "cmvae": 2 * mlp(784, 104) + mlp(10, 104) + 2 * mlp(52, 784) + mlp(52, 10) + 3 * 32 + 40 + 40 * 20,
        "pemvae": joint + decoders + 3 * 512,
        # JNF: JMVAE's networks and per modality a MAF of 2 MADE blocks, 20-128-128-128-40 (loc and scale)
        "jnf": joint + unimodal + decoders + 3 * 2 * (dense(20, 128) + 2 * dense(128, 128) + dense(128, 40)),
        # JNF-DCCA: JNF's joint model and flows; DCCA embeddings of 20, and the unimodal encoders read them
        "jnfdcca": joint
        + decoders
        + 3 * 2 * (dense(20, 128) + 2 * dense(128, 128) + dense(128, 40))
        + 2 * mlp(784, 20)
        + mlp(10, 20)
        + 3 * mlp(20, 40),
    }
    counts = {name: _count(get_model(Config(model=name), trimodal.MODALITIES)) for name in ALL_MODELS}
    assert counts == expected
    assert counts["jmvae"] == 4_380_362 and counts["pemvae"] == 2_722_898
    assert all(counts["pemvae"] < counts[n] for n in ("jmvae", "telbo", "mvae"))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model='nope'.*allowed: \['cmvae', 'dmvae', 'jmvae'"):
        get_model(Config(model="nope"), MODALITIES)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_a_bad_batch_from_python_is_named_before_the_networks_see_it(name):
    """A modality missing from the batch, integer labels where one-hot vectors belong, an image without its
    channel axis: each a ValueError naming the modality and what was expected, from loss and encode alike."""
    model = get_model(Config(model=name, hidden_dims=(5,), latent_dim=2), MODALITIES)
    params = model.init(jax.random.PRNGKey(0))
    good = ref.batch(np.random.default_rng(0))
    key = jax.random.PRNGKey(1)
    loss = jax.jit(model.loss)  # a bad batch is refused while tracing; eager, mmvae's good one took 10 s
    assert np.isfinite(float(jnp.mean(loss(params, good, key)["loss"])))
    cases = [
        ({k: v for k, v in good.items() if k != "y"}, r"the batch has no modality 'y' \(it has \['w', 'x'\]\)"),
        ({**good, "w": np.array([0, 2, 1])}, r"modality 'w': integer labels of shape \(3,\); expected one-hot"),
        ({**good, "x": good["x"][..., 0]}, r"modality 'x': values of shape \(3, 2, 3\); expected \(batch, 2, 3, 1\)"),
    ]
    for batch, message in cases:
        with pytest.raises(ValueError, match=message):
            loss(params, batch, key)
    with pytest.raises(ValueError, match="the channel axis is missing"):
        model.encode(params, cases[2][0], ("x",))
    with pytest.raises(ValueError, match="modality 'w': integer labels"):
        jax.jit(lambda p, b: model.encode(p, b, ("w", "x")))(params, cases[1][0])
