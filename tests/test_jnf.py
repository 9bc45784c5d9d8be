"""JNF (Senellart et al. 2023): the two-stage objective against a float64 hand computation (the flows' log
determinants from their Jacobians, not flowjax's), the unimodal posteriors as Gaussians pushed through the
inverse flows, HMC on a known Gaussian, the subset posterior (product of experts over the prior) against its
density on a grid, and the stages' frozen networks in the real training step."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax.config import Config
from mvae_jax.models import jnf
from tests import reference as ref

pytest.importorskip("flowjax", reason="JNF's flows need flowjax (the flows extra)")

NAMES = ("x", "y", "w")
FAST = ref.FAST["jnf"]


def _flow_inverse(model_flows, params, name, z):
    """(z0, log|det dz0/dz|) per row of z (n, latent), the determinant from the Jacobian in float64."""
    bijection = model_flows.bijection(params, name)
    z0 = np.asarray(jax.vmap(bijection.inverse)(z), np.float64)
    jacobians = np.asarray(jax.vmap(jax.jacfwd(bijection.inverse))(z), np.float64)
    return z0, np.linalg.slogdet(jacobians)[1]


def _flows():
    """The flows of ``ref.tiny_model("jnf", **FAST)`` (latent 2, 2 MADE blocks; the same fixed permutations)."""
    return jnf.Flows(NAMES, 2, 2, FAST["jnf_flow_width"], FAST["jnf_flow_depth"])


@pytest.mark.parametrize("beta,weights", [(1.0, ()), (2.5, (1.0, 0.5, 20.0))])
def test_jnf_loss_is_the_elbo_then_the_unimodal_fit_by_hand(beta, weights):
    model, params = ref.tiny_model("jnf", beta=beta, likelihood_weights=weights, jnf_warmup=2, **FAST)
    lam = dict(zip(NAMES, weights or (1.0, 1.0, 1.0)))
    batch = ref.batch(np.random.default_rng(0), n=4)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(5)
    loss = jax.jit(model.loss)

    mu, lv = ref.gaussian(params["joint_encoder"], np.concatenate([flat[n] for n in NAMES], 1))
    z = mu + np.exp(lv / 2) * np.asarray(jax.random.normal(key, mu.shape), np.float64)
    lls = ref.log_likelihoods(params["decoders"], z, flat)
    elbo = sum(lam[n] * lls[n] for n in NAMES) - beta * ref.kl_prior(mu, lv)
    flows = _flows()
    fit = {}
    for n in NAMES:
        z0, log_det = _flow_inverse(flows, params, n, jnp.asarray(z, jnp.float32))
        fit[n] = -(ref.log_normal(z0, *ref.gaussian(params["encoders"][n], flat[n])) + log_det)

    for epoch, expected in ((1, -elbo), (2, -elbo + sum(fit.values())), (7, -elbo + sum(fit.values()))):
        terms = loss(params, batch, key, epoch)
        np.testing.assert_allclose(terms["loss"], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms["elbo"], elbo, rtol=1e-4, atol=1e-4)
    for n in NAMES:
        np.testing.assert_allclose(terms[f"neg_log_q_{n}"], fit[n], rtol=1e-4, atol=1e-4)


def test_a_unimodal_posterior_is_its_gaussian_pushed_through_the_inverse_flow():
    model, params = ref.tiny_model("jnf", **FAST)
    batch = ref.batch(np.random.default_rng(1), n=3)
    z = model.draw(params, batch, ("y",), jax.random.PRNGKey(2), 4000)  # (4000, 3, 2)
    assert z.shape == (4000, 3, 2)
    z0 = jax.vmap(_flows().bijection(params, "y").inverse)(z.reshape(-1, 2)).reshape(z.shape)
    mu, lv = ref.gaussian(params["encoders"]["y"], ref.flat(batch)["y"])
    sigma = np.exp(lv / 2)
    np.testing.assert_allclose(np.mean(z0, 0), mu, atol=float(5 * sigma.max() / np.sqrt(4000)))
    np.testing.assert_allclose(np.std(z0, 0), sigma, rtol=0.06)
    # encode's moments are those of MOMENT_DRAWS draws with its fixed key
    draws = model.sample(params, batch, ("y",), jax.random.PRNGKey(jnf._MOMENTS_KEY), jnf.MOMENT_DRAWS)
    mean, logvar = model.encode(params, batch, ("y",))
    np.testing.assert_allclose(mean, np.mean(draws, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(logvar), np.var(draws, 0), rtol=1e-4, atol=1e-7)
    # every modality: the joint encoder's Gaussian
    mu, lv = ref.gaussian(params["joint_encoder"], np.concatenate([ref.flat(batch)[n] for n in NAMES], 1))
    np.testing.assert_allclose(model.encode(params, batch, NAMES)[0], mu, rtol=1e-5, atol=1e-6)


def test_hmc_samples_a_known_gaussian():
    """A trajectory of 1 (10 x 0.1) turns each coordinate by 2 and 2/3 radians a step: no resonance with the
    scales, so 60 steps forget the start at 0."""
    mean, scale = jnp.array([1.0, -2.0]), jnp.array([0.5, 1.5])
    log_target = lambda z: -0.5 * jnp.sum(((z - mean) / scale) ** 2, axis=-1)
    sample = jax.jit(jnf.hmc, static_argnums=(0, 3, 4))
    z = sample(log_target, jnp.zeros((4000, 2)), jax.random.PRNGKey(0), 60, 10, 0.1)
    np.testing.assert_allclose(np.mean(z, 0), mean, atol=0.08)
    np.testing.assert_allclose(np.std(z, 0), scale, rtol=0.08)


def test_a_subset_posterior_is_the_product_of_its_flows_over_the_prior():
    """HMC draws of q(z | x, w) against the mean and spread of prod q_m / p(z) computed on a grid. A trajectory
    of 0.5 (10 x 0.05) turns coordinates of spread 0.25-0.3 by 1.6-2 radians a step: no resonance."""
    options = {**FAST, "jnf_hmc_steps": 80, "jnf_leapfrog_steps": 10, "jnf_step_size": 0.05}
    model, params = ref.tiny_model("jnf", **options)
    # Experts narrower than the prior: with variances over 1 (an untrained encoder's may be), a product over
    # p(z) has no normaliser and the chains drift away, as any sampler of it would.
    for n in NAMES:
        last = max(params["encoders"][n]["mlp"], key=lambda k: int(k.split("_")[1]))
        params["encoders"][n]["mlp"][last]["bias"] = params["encoders"][n]["mlp"][last]["bias"].at[2:].add(-1.5)
    batch = {k: v[:1] for k, v in ref.batch(np.random.default_rng(3), n=1).items()}
    z = np.asarray(model.draw(params, batch, ("x", "w"), jax.random.PRNGKey(4), 3000))[:, 0]

    axis = np.linspace(-6, 6, 241)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    flows, flat = _flows(), ref.flat(batch)
    log_density = -ref.log_normal(grid, np.zeros(2), np.zeros(2))  # divided by p(z) once: |S| - 1 = 1
    for n in ("x", "w"):
        z0, log_det = _flow_inverse(flows, params, n, jnp.asarray(grid, jnp.float32))
        mu, lv = ref.gaussian(params["encoders"][n], flat[n])
        log_density = log_density + ref.log_normal(z0, np.broadcast_to(mu, z0.shape), np.broadcast_to(lv, z0.shape))
        log_density = log_density + log_det
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    want_mean = weights @ grid
    want_std = np.sqrt(weights @ (grid - want_mean) ** 2)
    assert weights.reshape(241, 241)[[0, -1]].sum() + weights.reshape(241, 241)[:, [0, -1]].sum() < 1e-4
    np.testing.assert_allclose(z.mean(0), want_mean, atol=0.1 * want_std.max())
    np.testing.assert_allclose(z.std(0), want_std, rtol=0.1)


def test_the_training_step_trains_the_joint_model_then_the_unimodal_posteriors():
    import optax

    from mvae_jax import training

    model, _ = ref.tiny_model("jnf", jnf_warmup=1, **FAST)
    tx = optax.adam(1e-2)
    state = training.create_train_state(model, tx, 0)
    step = jax.jit(training.make_train_step(model, tx))
    batch = {k: jnp.asarray(v) for k, v in ref.batch(np.random.default_rng(6), n=8).items()}

    def moved(before, after):
        return {
            group: any(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(*map(jax.tree_util.tree_leaves, pair)))
            for group, pair in ((g, (before[g], after[g])) for g in before)
        }

    first, _ = step(state, batch)  # epoch 0: stage 1
    stage1 = {"joint_encoder": True, "decoders": True, "encoders": False, "flows": False}
    assert moved(state.params, first.params) == stage1
    later = first.replace(epoch=jnp.int32(1))  # stage 2
    after = later
    for _ in range(2):
        after, _ = step(after, batch)
    assert moved(later.params, after.params) == {group: not learns for group, learns in stage1.items()}


def test_jnf_refuses_a_warm_up_that_leaves_no_epoch_and_incomplete_batches():
    with pytest.raises(ValueError, match="jnf_warmup=10 with epochs=10"):
        Config(model="jnf", epochs=10).validate()
    model, params = ref.tiny_model("jnf", **FAST)
    batch = {**ref.batch(np.random.default_rng(0), n=2), "_present": np.ones((2, 3), bool)}
    with pytest.raises(ValueError, match="jnf cannot train on incomplete data"):
        model.loss(params, batch, jax.random.PRNGKey(0))


@pytest.mark.slow  # train.py and eval.py as processes: about a minute
def test_train_py_runs_both_stages_and_eval_py_scores_the_run(tiny_data_dir, tmp_path):
    """The registry, train.py's flags and eval.py all know JNF: two epochs (one per stage), then the sections
    that read its posteriors in each way: the moments of every subset (coherence; latent accuracy and tSNE read
    the same means), draws (FID, the figures) and the Gaussian proposal (log-likelihoods)."""
    from tests.test_cli import TINY, TINY_EVAL, run

    workdir = tmp_path / "jnf"
    flags = [f"--{k}={v}" for k, v in FAST.items()] + [f"--data_dir={tiny_data_dir}", *TINY]
    run("train.py", "--model=jnf", "--epochs=2", "--jnf_warmup=1", f"--workdir={workdir}", *flags)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[0]["l_jm"] > records[1]["l_jm"]
    refused = run("train.py", "--model=jnf", "--epochs=3", "--jnf_warmup=3", f"--workdir={tmp_path / 'no'}",
                  f"--data_dir={tiny_data_dir}", check=False)  # fmt: skip
    assert refused.returncode == 2 and "jnf_warmup=3 with epochs=3" in refused.stderr

    sections = "--sections=coherence,log_likelihood,fid,cross_modal,samples"
    fewer = "--model_options=jnf_hmc_steps=3"  # for this evaluation only: recorded with its flags
    out = json.loads(run("eval.py", f"--workdir={workdir}", sections, fewer, *TINY_EVAL(tmp_path)).stdout)
    assert out["eval_flags"]["model_options"] == "jnf_hmc_steps=3"
    assert {"x->w", "x,y->w", "y,w->x", "joint->w", "prior"} <= set(out["coherence"])
    assert all(0.0 <= v <= 1.0 for v in out["coherence"].values())
    assert all(out["log_likelihood"][k] < 0 for k in ("x", "y", "w", "joint"))
    assert {"x,w->y", "w->x"} <= set(out["fid"])
    for figure in ("cross_modal.png", "samples.png"):
        assert (workdir / "eval" / figure).stat().st_size > 1_000


def _total_correlation_by_eigh(h1, h2, reg=1e-3):
    """MultiVae's cca_loss formula in float64: T from the symmetric root inverses, then its singular values."""
    h1, h2 = (np.asarray(h, np.float64) for h in (h1, h2))
    n, d = h1.shape
    h1, h2 = h1 - h1.mean(0), h2 - h2.mean(0)

    def root_inverse(s):
        values, vectors = np.linalg.eigh(s)
        return vectors @ np.diag(values**-0.5) @ vectors.T

    s11, s22 = h1.T @ h1 / (n - 1) + reg * np.eye(d), h2.T @ h2 / (n - 1) + reg * np.eye(d)
    t = root_inverse(s11) @ (h1.T @ h2 / (n - 1)) @ root_inverse(s22)
    return np.sum(np.sqrt(np.linalg.eigvalsh(t.T @ t + reg * np.eye(d))))


def test_the_dcca_correlation_is_multivaes_and_reaches_d_for_views_one_rotation_apart():
    rng = np.random.default_rng(0)
    h1, h2 = rng.normal(size=(64, 4)), rng.normal(size=(64, 4)) + 0.5 * rng.normal(size=(64, 4))
    h2[:, 0] += 2 * h1[:, 1]
    got = jnf.total_correlation(jnp.asarray(h1, jnp.float32), jnp.asarray(h2, jnp.float32))
    np.testing.assert_allclose(got, _total_correlation_by_eigh(h1, h2), rtol=1e-4)
    rotation = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    same = jnf.total_correlation(jnp.asarray(h1, jnp.float32), jnp.asarray(h1 @ rotation * 3 + 1, jnp.float32))
    assert 3.95 < float(same) <= 4.0 + 4 * 1e-3  # four canonical correlations of 1 (less the ridge)
    grads = jax.grad(lambda a: jnf.total_correlation(a, jnp.asarray(h2, jnp.float32)))(jnp.asarray(h1, jnp.float32))
    assert np.all(np.isfinite(grads))


def test_jnf_dcca_trains_the_dcca_then_the_joint_vae_then_posteriors_on_its_embeddings_by_hand():
    options = dict(jnf_warmup=2, jnf_dcca_epochs=3, jnf_dcca_dim=3, **FAST)
    model, params = ref.tiny_model("jnfdcca", **options)
    batch = ref.batch(np.random.default_rng(2), n=6)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(8)
    h = {n: ref.mlp(params["dcca"][n], flat[n]) for n in NAMES}
    correlation = sum(_total_correlation_by_eigh(h[a], h[b]) for a, b in (("x", "y"), ("x", "w"), ("y", "w")))
    mu, lv = ref.gaussian(params["joint_encoder"], np.concatenate([flat[n] for n in NAMES], 1))
    z = mu + np.exp(lv / 2) * np.asarray(jax.random.normal(key, mu.shape), np.float64)
    elbo = sum(ref.log_likelihoods(params["decoders"], z, flat).values()) - ref.kl_prior(mu, lv)
    flows, fit = _flows(), 0.0
    for n in NAMES:
        z0, log_det = _flow_inverse(flows, params, n, jnp.asarray(z, jnp.float32))
        fit = fit - (ref.log_normal(z0, *ref.gaussian(params["encoders"][n], h[n])) + log_det)

    loss = jax.jit(model.loss)
    for epoch, expected in ((0, -correlation), (2, -correlation), (3, -elbo), (5, -elbo + fit)):
        np.testing.assert_allclose(loss(params, batch, key, epoch)["loss"], expected, rtol=2e-4, atol=2e-4)
    first_leaf = lambda tree: float(jax.tree_util.tree_leaves(tree)[0])
    learns = {e: {k: first_leaf(v) for k, v in model.trainable(params, e).items()} for e in (2, 3, 5)}
    assert learns[2] == {"joint_encoder": 0, "decoders": 0, "flows": 0, "dcca": 1, "encoders": 0}
    assert learns[3] == {"joint_encoder": 1, "decoders": 1, "flows": 0, "dcca": 0, "encoders": 0}
    assert learns[5] == {"joint_encoder": 0, "decoders": 0, "flows": 1, "dcca": 0, "encoders": 1}
    with pytest.raises(ValueError, match=r"jnf_dcca_epochs=30 \+ jnf_warmup=10 with epochs=40"):
        Config(model="jnfdcca", epochs=40).validate()


def test_eval_may_change_the_inference_settings_only():
    """eval.py --model_options: JNF's HMC settings for one evaluation; a setting that shapes the parameters, or a
    bad value, is refused with the allowed ones named."""
    from mvae_jax import api

    config = Config(model="jnf", epochs=20)
    changed = api.with_model_options(config, "jnf_hmc_steps=30, jnf_step_size=0.05")
    assert (changed.jnf_hmc_steps, changed.jnf_step_size, changed.jnf_warmup) == (30, 0.05, 10)
    assert api.with_model_options(config, "") is config
    with pytest.raises(ValueError, match="'jnf_flow_width' is not a setting.*allowed: jnf_hmc_steps"):
        api.with_model_options(config, "jnf_flow_width=8")
    with pytest.raises(ValueError, match="jnf_leapfrog_steps='x' is invalid"):
        api.with_model_options(config, "jnf_leapfrog_steps=x")
    with pytest.raises(ValueError, match="model='jmvae'; allowed: none"):
        api.with_model_options(Config(model="jmvae"), "alpha=0.2")
