"""MVTCAE (Hwang et al. 2021): the total-correlation objective against a numpy hand computation, and subset
posteriors as products of their experts without a prior expert."""

import jax
import numpy as np
import pytest

from tests import reference as ref


@pytest.mark.parametrize("beta,alpha,weights", [(1.0, 5 / 6, ()), (2.5, 0.0, (1.0, 0.5, 20.0)), (0.5, 1.0, ())])
def test_mvtcae_loss_matches_hand_computation(beta, alpha, weights):
    model, params = ref.tiny_model("mvtcae", beta=beta, tc_alpha=alpha, likelihood_weights=weights)
    lam = dict(zip("xyw", weights or (1.0, 1.0, 1.0)))
    batch = ref.batch(np.random.default_rng(0), n=4)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(7)
    terms = jax.jit(model.loss)(params, batch, key)

    experts = {m: ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"}
    # q(z|X) = the product of the three experts, no prior expert; one z per example from it.
    mu, lv = ref.product([experts[m][0] for m in "xyw"], [experts[m][1] for m in "xyw"], prior=False)
    z = mu + np.exp(lv / 2) * np.asarray(jax.random.normal(key, (4, 2)), np.float64)
    lls = ref.log_likelihoods(params["decoders"], z, flat)
    views = {m: ref.kl(mu, lv, *experts[m]) for m in "xyw"}  # KL(q(z|X) || q(z|x_m))
    divergence = (1 - alpha) * ref.kl_prior(mu, lv) + alpha / 3 * sum(views.values())
    expected = (3 - alpha) / 3 * sum(lam[m] * lls[m] for m in "xyw") - beta * divergence
    np.testing.assert_allclose(terms["loss"], -expected, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(terms["kl_joint_to_y"], views["y"], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(terms["kl"], ref.kl_prior(mu, lv), rtol=2e-5, atol=1e-6)


def test_subset_posterior_is_the_product_of_its_experts_without_the_prior():
    model, params = ref.tiny_model("mvtcae")
    batch = ref.batch(np.random.default_rng(1), n=3)
    flat = ref.flat(batch)
    experts = {m: ref.gaussian(params["encoders"][m], flat[m]) for m in "xyw"}
    mu, lv = model.encode(params, batch, ("x", "w"))
    want = ref.product([experts["x"][0], experts["w"][0]], [experts["x"][1], experts["w"][1]], prior=False)
    np.testing.assert_allclose(mu, want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lv, want[1], rtol=1e-5, atol=1e-6)
    mu, lv = model.encode(params, batch, ("y",))  # one modality: its own expert
    np.testing.assert_allclose(mu, experts["y"][0], rtol=1e-5, atol=1e-6)


def test_tc_alpha_outside_0_to_1_is_refused_by_name():
    from mvae_jax.config import Config

    with pytest.raises(ValueError, match="tc_alpha=1.5 is invalid; allowed: a number from 0 to 1"):
        Config(model="mvtcae", tc_alpha=1.5).validate()
    with pytest.raises(ValueError, match="tc_alpha"):
        Config(model="jmvae", tc_alpha=0.5).validate(given=("tc_alpha",))


@pytest.mark.slow
def test_train_eval_and_compare_know_mvtcae(tiny_data_dir, tmp_path, capsys):
    """train.py --model=mvtcae, eval.py on it, eval.py --compare beside a jmvae run: the registry, the command
    lines and the evaluation know the model (tiny data and networks)."""
    import json

    import eval as eval_cli
    import train

    runs = {}
    for name in ("mvtcae", "jmvae"):
        runs[name] = tmp_path / name
        train.main(
            [f"--model={name}", f"--data_dir={tiny_data_dir}", f"--workdir={runs[name]}", "--epochs=1",
             "--hidden_dims=16", "--latent_dim=4", "--batch_size=20", "--validation=20",
             *(["--tc_alpha=0.5"] if name == "mvtcae" else [])]
        )  # fmt: skip
        eval_cli.main(
            [f"--workdir={runs[name]}", "--sections=coherence,latent_accuracy,objective", "--prior_samples=50"]
        )
    saved = json.loads((runs["mvtcae"] / "config.json").read_text())
    assert saved["model"] == "mvtcae" and saved["tc_alpha"] == 0.5
    metrics = json.loads((runs["mvtcae"] / "eval" / "metrics.json").read_text())
    assert {"x->w", "y->w", "x,y->w", "prior"} <= set(metrics["coherence"])
    assert set(metrics["latent_accuracy"]) >= {"x", "y", "x,y,w"}
    assert np.isfinite(metrics["objective"]["loss"])
    capsys.readouterr()
    eval_cli.main(["--compare", str(runs["mvtcae"]), str(runs["jmvae"])])  # tables (no tSNE was evaluated)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mvtcae")]
    assert rows and all("| jmvae" not in row for row in rows)
