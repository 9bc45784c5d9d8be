"""Latent samplers (metrics.samplers): the GMM fitted after training against scikit-learn's own density and
moments, the MAF (flowjax) against the best single Gaussian, the prior's draws unchanged, and --sampler=gmm
through eval's sections."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from mvae_jax.evaluation.metrics import samplers


@pytest.fixture(scope="module")
def two_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal([3.0, -1.0, 0.0], [0.5, 0.2, 1.0], size=(1500, 3))
    b = rng.normal([-2.0, 2.0, 1.0], [0.3, 0.6, 0.4], size=(500, 3))
    return np.concatenate([a, b])


def test_the_gmm_has_sklearns_density_and_samples_its_moments(two_clusters):
    from sklearn.mixture import GaussianMixture

    gmm = samplers.fit_gmm(two_clusters, components=2, seed=0)
    reference = GaussianMixture(2, covariance_type="full", max_iter=2000, tol=1e-3, random_state=0).fit(two_clusters)
    probe = two_clusters[::50]
    with jax.enable_x64(True):
        np.testing.assert_allclose(gmm.log_density(probe), reference.score_samples(probe), rtol=1e-9)
    assert sorted(np.round(gmm.weights, 2)) == [0.25, 0.75]
    z = np.asarray(jax.jit(gmm.sample, static_argnums=1)(jax.random.PRNGKey(1), 20_000))
    assert z.shape == (20_000, 3)
    np.testing.assert_allclose(z.mean(0), two_clusters.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(z.T), np.cov(two_clusters.T), atol=0.1)


@pytest.fixture(scope="module")
def maf(two_clusters):
    pytest.importorskip("flowjax", reason="the flows extra (pip install -e '.[flows]') is not installed")
    return samplers.fit_maf(two_clusters, seed=0, max_epochs=30)


@pytest.mark.slow  # the fit: about 20 s
def test_the_maf_fits_two_clusters_better_than_one_gaussian_and_samples_them(maf, two_clusters):
    """Early stopping on a held-out tenth, the best epoch kept; its density integrates the held-in codes far
    better than the best single Gaussian's (whose log-likelihood is the closed form below); its draws have the
    codes' moments and both clusters' weights (the first coordinate splits them at 0.5)."""
    assert set(maf.losses) == {"train", "val"} and len(maf.losses["val"]) >= 6
    assert min(maf.losses["val"]) < maf.losses["val"][0]
    cov = np.cov(two_clusters.T, bias=True)
    gaussian = -0.5 * (3 * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + 3)  # mean log N(x; mean, cov)
    ours = float(np.mean(maf.log_density(two_clusters)))
    assert ours > gaussian + 1.0, (ours, gaussian)
    z = np.asarray(maf.sample(jax.random.PRNGKey(1), 10_000))
    assert z.shape == (10_000, 3) and np.all(np.isfinite(z))
    np.testing.assert_allclose(z.mean(0), two_clusters.mean(0), atol=0.15)
    assert abs(np.mean(z[:, 0] > 0.5) - 0.75) < 0.03


@pytest.mark.slow  # the fit: about 20 s
def test_a_fitted_maf_is_saved_and_read_back_to_the_same_draws(maf, tmp_path):
    samplers.save_flow(maf, tmp_path / "maf.npz")
    again = samplers.load_flow(tmp_path / "maf.npz", seed=0)
    key = jax.random.PRNGKey(5)
    np.testing.assert_array_equal(again.sample(key, 7), maf.sample(key, 7))
    np.testing.assert_allclose(again.log_density(np.zeros((2, 3))), maf.log_density(np.zeros((2, 3))), rtol=1e-6)


def test_too_few_codes_for_a_maf_are_refused_by_count():
    pytest.importorskip("flowjax", reason="the flows extra is not installed")
    with pytest.raises(ValueError, match="at least 20 training codes .* there are 5"):
        samplers.fit_maf(np.zeros((5, 2)))


def test_the_prior_draws_what_eval_always_drew():
    z = samplers.prior(4).sample(jax.random.PRNGKey(3), 5)
    np.testing.assert_array_equal(z, jax.random.normal(jax.random.PRNGKey(3), (5, 4)))
    np.testing.assert_allclose(samplers.prior(4).log_density(np.zeros((1, 4))), [-2 * np.log(2 * np.pi)], rtol=1e-6)


def test_a_fitted_sampler_is_saved_beside_the_run_and_read_back(two_clusters, tmp_path):
    calls = []

    def codes():
        calls.append(1)
        return two_clusters

    first = samplers.fitted("gmm", codes, 3, str(tmp_path), epoch=4, components=2, points=2000)
    again = samplers.fitted("gmm", codes, 3, str(tmp_path), epoch=4, components=2, points=2000)
    assert len(calls) == 1 and [p.name for p in (tmp_path / "samplers").iterdir()] == ["gmm_k2_n2000_seed0_epoch4.npz"]
    np.testing.assert_array_equal(first.means, again.means)
    samplers.fitted("gmm", codes, 3, str(tmp_path), epoch=5, components=2, points=2000)  # another epoch: refit
    assert len(calls) == 2
    with pytest.raises(ValueError, match="sampler='flow' is invalid; allowed: prior, gmm, maf"):
        samplers.fitted("flow", codes, 3, None, 1, 2, 10)
    with pytest.raises(ValueError, match="sampler_components=30: .* there are 20 training codes"):
        samplers.fit_gmm(two_clusters[:20], components=30)


@pytest.mark.slow  # a training run and three sections: 30 s
def test_eval_with_the_gmm_sampler_writes_its_keys(tiny_data_dir, tmp_path):
    """coherence and fid from z ~ the GMM ("gmm", "gmm->x"), samples.png from it, the GMM in samplers/."""
    from mvae_jax import api, training
    from mvae_jax.config import Config

    config = Config(
        data_dir=str(tiny_data_dir), workdir=str(tmp_path / "run"), hidden_dims=(16,), latent_dim=3, batch_size=20,
        epochs=1, validation=20,
    )  # fmt: skip
    training.train_and_evaluate(config)
    metrics = api.evaluate(
        config.workdir, sections=("coherence", "fid", "samples"), sampler="gmm", sampler_components=2,
        prior_samples=200, fid_points=20,
    )  # fmt: skip
    assert "gmm" in metrics["coherence"] and "prior" not in metrics["coherence"]
    assert {"gmm->x", "gmm->y"} <= set(metrics["fid"]) and "prior->x" not in metrics["fid"]
    assert metrics["eval_flags"]["sampler"] == "gmm"
    assert [p.name for p in (Path(config.workdir) / "samplers").iterdir()] == ["gmm_k2_n20000_seed0_epoch1.npz"]
    assert json.loads((Path(config.workdir) / "eval" / "metrics.json").read_text())["coherence"] == metrics["coherence"]
    with pytest.raises(ValueError, match="sampler='flow' is invalid"):
        api.evaluate(config.workdir, sections=("samples",), sampler="flow")
