"""CMVAE (Palumbo et al. 2024): MMVAE+'s objective with a learned Laplace-mixture prior on the shared latent,
checked against the paper's explicit expectation over q(c | z) in float64; its clusters and their selection."""

import jax
import numpy as np
import pytest

from tests import reference as ref
from tests.test_mmvaeplus import NAMES, PRIVATE, _laplace, _scales, hand_terms

CLUSTERS = 4


def _cluster_terms(prior, z):
    """(log pi_c + log p(z | c)) per cluster, (C, n), float64."""
    logits = np.asarray(prior["logits"], np.float64)
    log_pi = logits - np.log(np.exp(logits).sum())
    locations = np.asarray(prior["locations"], np.float64)
    scales = _scales(np.zeros_like(locations))
    return np.stack([log_pi[c] + _laplace(z, locations[c], scales[c]) for c in range(len(logits))])


@pytest.mark.parametrize("beta", [2.5])
def test_cmvae_loss_is_the_papers_expectation_over_the_clusters_by_hand(beta):
    model, params = ref.tiny_model("cmvae", beta=beta, private_dim=PRIVATE, num_clusters=CLUSTERS)
    params = jax.tree_util.tree_map(lambda v: v, params)
    params["prior"]["logits"] = params["prior"]["logits"] + np.array([0.5, -1.0, 0.0, 2.0], np.float32)
    batch = ref.batch(np.random.default_rng(0), n=4)
    flat = ref.flat(batch)
    key = jax.random.PRNGKey(11)
    terms = jax.jit(model.loss)(params, batch, key)

    elbos = []
    for log_likelihood, z, w, log_q_z, log_q_w in hand_terms(params, flat, key, dict.fromkeys(NAMES, 1.0)):
        joint = _cluster_terms(params["prior"], z)  # (C, n)
        q_c = np.exp(joint - joint.max(0)) / np.exp(joint - joint.max(0)).sum(0)
        # The paper's Eq. 3 with K = 1: the expectation over q(c | z) written out term by term.
        expectation = sum(
            q_c[c] * (log_likelihood + beta * (joint[c] + _laplace(w, 0.0, 1.0) - log_q_z - log_q_w - np.log(q_c[c])))
            for c in range(CLUSTERS)
        )
        elbos.append(expectation)
    np.testing.assert_allclose(terms["elbo_y"], elbos[1], rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(terms["loss"], -np.mean(elbos, axis=0), rtol=2e-5, atol=1e-4)


def test_the_cluster_prior_learns_and_generation_draws_from_its_clusters():
    from mvae_jax.evaluation.metrics import clusters, common

    model, params = ref.tiny_model("cmvae", private_dim=PRIVATE, num_clusters=CLUSTERS)
    batch = ref.batch(np.random.default_rng(2), n=5)
    grads = jax.jit(jax.grad(lambda p: model.loss(p, batch, jax.random.PRNGKey(0))["loss"].mean()))(params)
    assert np.any(np.asarray(grads["prior"]["logits"]) != 0) and np.any(np.asarray(grads["prior"]["locations"]) != 0)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))

    # One dominant cluster far from the origin: the prior's draws sit around it with Laplace(., 1) spread.
    params["prior"] = {
        "logits": np.array([0.0, 30.0, 0.0, 0.0], np.float32),
        "locations": np.array([[0.0, 0.0], [8.0, -8.0], [0.0, 1.0], [1.0, 0.0]], np.float32),
    }
    z = np.asarray(common.model_prior(model, params).sample(jax.random.PRNGKey(1), 5_000))
    np.testing.assert_allclose(z.mean(0), [8.0, -8.0], atol=0.08)  # 4 standard errors (sqrt(2 / 5000) = 0.02)
    np.testing.assert_allclose(np.abs(z - [8.0, -8.0]).mean(0), [1.0, 1.0], atol=0.06)  # E|z - mu| = scale = 1
    q = np.asarray(clusters.cluster_posterior(model, params, np.array([[8.0, -8.0], [0.0, 1.0]], np.float32)))
    assert q.shape == (2, CLUSTERS) and q[0].argmax() == 1
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-6)
    keep = np.array([True, False, True, True])
    pruned = np.asarray(clusters.cluster_posterior(model, params, np.zeros((3, 2), np.float32), keep=keep))
    assert np.all(pruned[:, 1] == 0) and np.allclose(pruned.sum(1), 1.0)


def test_cluster_accuracy_matches_clusters_to_classes_one_to_one():
    from mvae_jax.evaluation.metrics.clusters import accuracy

    labels = np.array([0, 0, 1, 1, 2, 2])
    assert accuracy(labels, np.array([5, 5, 3, 3, 0, 0])) == 1.0  # any relabelling
    assert accuracy(labels, np.array([1, 1, 1, 1, 2, 2])) == 4 / 6  # one cluster holds two classes
    assert accuracy(labels, np.array([0, 1, 2, 3, 4, 5])) == 3 / 6  # six clusters: three left unmatched


def _planted(num_used=3, n=200, seed=0):
    """A tiny cmvae whose 6 clusters sit far apart, and codes (3 modalities, n, 2) drawn around 3 of them."""
    model, params = ref.tiny_model("cmvae", private_dim=PRIVATE, num_clusters=6)
    locations = np.array([[0, 0], [20, 0], [0, 20], [20, 20], [-20, 0], [0, -20]], np.float32)
    params["prior"] = {"logits": np.zeros(6, np.float32), "locations": locations}
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, num_used, n)
    codes = locations[[1, 3, 5][:num_used]][classes] + rng.laplace(0, 1, (3, n, 2))
    return model, params, codes, classes


def test_the_selection_keeps_the_clusters_the_codes_use():
    """Codes around 3 of 6 clusters: h(k) is lowest at k = 3, with the 3 used ones kept, and falls from 6 to 3
    (dropping an empty cluster raises every code's log p(z)) then rises (a used one's codes lose their cluster)."""
    from mvae_jax.evaluation.metrics import clusters

    model, params, codes, classes = _planted()
    keep, criterion = clusters.selection(model, params, codes, beta=1.0)
    assert sorted(criterion) == [2, 3, 4, 5, 6]
    assert np.flatnonzero(keep).tolist() == [1, 3, 5]
    assert criterion[6] > criterion[5] > criterion[4] > criterion[3] < criterion[2]
    # By hand at k = 6: pi = 1/6, every code's posterior is (nearly) one-hot, so h = - mean log p(z) / D.
    dens = -np.sum(np.log(2 * (1 + 1e-6)) + np.abs(codes[..., None, :] - params["prior"]["locations"]) / (1 + 1e-6), -1)
    log_pz = np.log(np.exp(dens).sum(-1) / 6)
    q = np.exp(dens) / np.exp(dens).sum(-1, keepdims=True)
    entropy = -(q * np.log(q)).sum(-1) / np.log(6)
    np.testing.assert_allclose(criterion[6], np.mean(entropy) - np.mean(log_pz / 2), rtol=1e-6)
    assigned = clusters.assign(model, params, codes, keep)
    assert clusters.accuracy(classes, assigned) == 1.0


def test_a_model_without_a_cluster_prior_is_refused_by_name():
    from mvae_jax.evaluation.metrics import clusters

    model, params = ref.tiny_model("mmvaeplus", private_dim=PRIVATE)
    with pytest.raises(ValueError, match="mmvaeplus has no cluster prior"):
        clusters.shared_codes(model, params, ref.batch(np.random.default_rng(0)), jax.random.PRNGKey(0))


@pytest.mark.slow  # a training run and the section: about 20 s
def test_eval_scores_the_clusters_of_a_trained_cmvae(tiny_data_dir, tmp_path):
    from mvae_jax import api, training
    from mvae_jax.config import Config

    config = Config(
        model="cmvae", data_dir=str(tiny_data_dir), workdir=str(tmp_path / "run"), hidden_dims=(16,), latent_dim=3,
        private_dim=2, num_clusters=12, batch_size=20, epochs=1,
    )  # fmt: skip
    training.train_and_evaluate(config)
    scores = api.evaluate(config.workdir, sections=("clusters",))["clusters"]
    assert 2 <= scores["selected"] <= 12 and len(scores["kept"]) == scores["selected"]
    assert sorted(map(int, scores["criterion"])) == list(range(2, 13))
    assert 0.1 <= scores["accuracy"] <= 1 and 0 <= scores["nmi"] <= 1 and scores["test_points"] == 40
    again = api.evaluate(str(tmp_path / "run"), sections=("clusters",), model="cmvae")
    assert again["clusters"] == scores  # the same draws: the section is deterministic


def test_the_default_sections_include_clusters_for_cmvae_only(tmp_path):
    """Asked by name, clusters runs for any model and says why it is skipped; by default it is left out for a
    model without a cluster prior, so their metrics.json gains no 'skipped' entry."""
    from mvae_jax import api
    from mvae_jax.config import Config

    for name, included in (("cmvae", True), ("mmvaeplus", False), ("jmvae", False)):
        config = Config(model=name, workdir=str(tmp_path / name))
        sections, _, _ = api.check_request(api.request(config.workdir), config)
        assert ("clusters" in sections) == included and "coherence" in sections, name
