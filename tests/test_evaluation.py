"""Coherence, latent accuracy and importance-weighted likelihoods, on fake models with known answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import evaluation
from mvae_jax.modality import Modality
from mvae_jax.models import Model

CLASSES = 10
MODALITIES = (
    Modality("x", (CLASSES,), "bernoulli"),
    Modality("y", (CLASSES,), "bernoulli"),
    Modality("w", (CLASSES,), "categorical"),
)
# A fake "image" of class c is the one-hot vector of c; its classifier reads the argmax.
CLASSIFY = {
    "x": lambda images: np.argmax(images.reshape(len(images), -1), -1),
    "y": lambda images: np.argmax(images.reshape(len(images), -1), -1),
}


def fake_data(n=1000):
    labels = np.arange(n) % CLASSES
    one_hot = np.eye(CLASSES, dtype=np.float32)[labels]
    return {"x": one_hot, "y": one_hot, "w": one_hot}, labels


def fake_model(decoder: str) -> Model:
    """z = the one-hot class read from whichever modalities are present; decoders exact or constant."""

    def encode(params, batch, present):
        mu = sum(batch[n] for n in present) / len(present)
        return mu, jnp.zeros_like(mu)

    def decode(params, z, names=None):
        if decoder == "exact":
            logits = 4.0 * z - 2.0  # no saturation: argmax of sigmoid and softmax agree
        else:  # always class 3, whatever z is
            logits = jnp.broadcast_to(20.0 * (jax.nn.one_hot(3, CLASSES) - 0.5), z.shape)
        return {m.name: logits for m in MODALITIES}

    return Model("fake", MODALITIES, lambda rng: {}, None, encode, decode)


def test_coherence_of_an_exact_decoder_is_one_for_every_subset_and_target():
    data, labels = fake_data()
    scores = evaluation.coherence(fake_model("exact"), {}, data, labels, CLASSIFY, batch_size=300)
    expected = {
        "x->y",
        "x->w",
        "y->x",
        "y->w",
        "w->x",
        "w->y",
        "x,y->w",
        "x,w->y",
        "y,w->x",
        "joint->x",
        "joint->y",
        "joint->w",
    }
    assert set(scores) == expected
    assert all(v == 1.0 for v in scores.values()), scores
    assert evaluation.prior_coherence(fake_model("exact"), {}, jax.random.PRNGKey(0), CLASSIFY, 2500, 1000) == 1.0


def test_sampled_coherence_draws_z_from_the_posterior_against_a_closed_form():
    """--generation=sample: one z ~ q(z|x_S) = N(one-hot of the class, s^2 I) per example, decoded exactly, so a
    generated value carries the class when the class's coordinate, 1 + s e_c, beats the 9 others, s e_j:
    P = integral phi(u) Phi(u + 1/s)^9 du. Posterior means (the default) give 1."""
    from scipy.stats import norm

    s = 1.0
    base = fake_model("exact")

    def encode(params, batch, present):
        mu, _ = base.encode(params, batch, present)
        return mu, jnp.full_like(mu, 2 * np.log(s))

    model = Model("fake", MODALITIES, lambda rng: {}, None, encode, base.decode)
    data, labels = fake_data(2000)
    u = np.linspace(-10, 10, 20_001)
    expected = np.trapezoid(norm.pdf(u) * norm.cdf(u + 1 / s) ** (CLASSES - 1), u)
    sampled = evaluation.coherence(model, {}, data, labels, CLASSIFY, rng=jax.random.PRNGKey(0))
    assert abs(np.mean(list(sampled.values())) - expected) < 0.01, (expected, sampled)  # 12 x 2,000 draws
    assert all(abs(v - expected) < 0.04 for v in sampled.values()), (expected, sampled)  # 4 std of 2,000 draws
    assert set(evaluation.coherence(model, {}, data, labels, CLASSIFY).values()) == {1.0}


def test_coherence_of_a_constant_decoder_is_chance():
    data, labels = fake_data()
    scores = evaluation.coherence(fake_model("constant"), {}, data, labels, CLASSIFY)
    assert all(v == pytest.approx(0.1) for v in scores.values()), scores


def test_coherence_leaves_out_images_without_a_classifier():
    data, labels = fake_data(100)
    scores = evaluation.coherence(fake_model("exact"), {}, data, labels, {"x": CLASSIFY["x"]})
    assert not any(k.endswith("->y") for k in scores)
    assert scores["y->x"] == 1.0 and scores["y,w->x"] == 1.0


def test_latent_accuracy_separates_classes_of_one_hot_means():
    data, labels = fake_data(500)
    scores = evaluation.latent_accuracy(fake_model("exact"), {}, data, labels, data, labels)
    assert set(scores) == {"x", "y", "w", "x,y", "x,w", "y,w", "x,y,w"}
    assert all(v == 1.0 for v in scores.values())


# A linear Gaussian model: z ~ N(0, I_d), x = A z + b + e with e ~ N(0, I_D), so
# p(x) = N(b, A A^T + I) and p(z | x) = N(S A^T (x - b), S), S = (I + A^T A)^-1.
D, LATENT = 6, 3
RNG = np.random.default_rng(0)
# Orthogonal columns make A^T A, hence the exact posterior covariance S, diagonal (q is diagonal).
A = np.linalg.qr(RNG.normal(size=(D, LATENT)))[0] * np.array([2.0, 1.0, 0.5])
B = RNG.normal(size=D)
GAUSSIAN = (Modality("x", (D,), "gaussian"),)


def linear_gaussian_model(shift: float = 0.0, components: int = 1) -> Model:
    """The exact posterior as q (shifted by ``shift``), as a mixture of ``components`` equal copies if > 1."""
    S = np.linalg.inv(np.eye(LATENT) + A.T @ A)

    def encode(params, batch, present):
        mu = (batch["x"] - B) @ (A @ S).astype(np.float32) + shift
        logvar = jnp.broadcast_to(jnp.log(jnp.diag(S)).astype(jnp.float32), mu.shape)
        return mu, logvar

    def mixture(params, batch, present):
        mu, logvar = encode(params, batch, present)
        return jnp.stack([mu] * components), jnp.stack([logvar] * components)

    def decode(params, z, names=None):
        return {"x": z @ A.T.astype(np.float32) + B.astype(np.float32)}

    return Model("linear", GAUSSIAN, lambda rng: {}, None, encode, decode, mixture=mixture if components > 1 else None)


def exact_log_px(x):
    cov = A @ A.T + np.eye(D)
    diff = x - B
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (D * np.log(2 * np.pi) + logdet + np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff))


def test_iw_estimate_with_the_exact_posterior_equals_the_closed_form_for_any_k():
    x = (RNG.normal(size=(50, LATENT)) @ A.T + B + RNG.normal(size=(50, D))).astype(np.float32)
    for components in (1, 3):
        model = linear_gaussian_model(components=components)
        got = evaluation.iw_log_likelihood(
            model, {}, {"x": jnp.asarray(x)}, ("x",), ("x",), 7, 3, jax.random.PRNGKey(1)
        )
        np.testing.assert_allclose(np.asarray(got), exact_log_px(x), rtol=0, atol=2e-4)


def test_iw_estimate_with_a_poor_proposal_approaches_the_closed_form_from_below_as_k_grows():
    x = (RNG.normal(size=(200, LATENT)) @ A.T + B + RNG.normal(size=(200, D))).astype(np.float32)
    model = linear_gaussian_model(shift=0.7)
    exact = exact_log_px(x).mean()
    data = {"x": x}
    one = evaluation.log_likelihoods(model, {}, data, jax.random.PRNGKey(2), num_samples=1, batch_size=100)["x"]
    many = evaluation.log_likelihoods(
        model, {}, data, jax.random.PRNGKey(2), num_samples=2000, batch_size=100, max_elements=2**16
    )["x"]
    assert one < many - 0.2  # K = 1 is the ELBO, looser
    assert many == pytest.approx(exact, abs=0.02)
    assert many < exact + 0.005


def test_log_likelihoods_names_the_estimates_and_rejects_bad_options():
    model = linear_gaussian_model()
    x = np.zeros((4, D), np.float32)
    assert set(evaluation.log_likelihoods(model, {}, {"x": x}, jax.random.PRNGKey(0), 3)) == {"x", "joint"}
    with pytest.raises(ValueError, match="proposal='best'"):
        evaluation.log_likelihoods(model, {}, {"x": x}, jax.random.PRNGKey(0), 3, proposal="best")
    with pytest.raises(ValueError, match="num_samples=0"):
        evaluation.log_likelihoods(model, {}, {"x": x}, jax.random.PRNGKey(0), 0)


def test_compiled_evaluation_programs_belong_to_their_model():
    """A model's evaluation programs compile once for it and are freed with it: building models in a loop
    (the results script, the tests) does not grow a process-wide cache."""
    import gc
    import weakref

    from tests import reference as ref

    data = {k: np.asarray(v) for k, v in ref.batch(np.random.default_rng(0), n=6).items()}
    refs = []
    for _ in range(3):
        model, params = ref.tiny_model("jmvae")
        for _ in range(2):
            evaluation.posterior_means(model, params, data, ("x",))
        (jitted,) = model._jitted.values()
        assert jitted._cache_size() == 1  # the second call reused the first's program
        refs.append(weakref.ref(model))
        del model, params, jitted
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_frechet_distance_of_gaussians_matches_closed_forms():
    d = evaluation.frechet_distance_gaussians
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 = 9 + (1 - 2)^2.
    assert d([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)
    # Commuting (diagonal) covariances: ||dm||^2 + sum (s1 - s2)^2.
    assert d([1.0, 2.0], np.diag([4.0, 9.0]), [0.0, 0.0], np.diag([1.0, 16.0])) == pytest.approx(5 + 1 + 1)
    # Non-commuting: against scipy's matrix square root of C1 C2.
    from scipy import linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2, m1, m2 = a @ a.T, b @ b.T, rng.normal(size=4), rng.normal(size=4)
    expected = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert d(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-9)
    assert d(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_feature_sets():
    rng = np.random.default_rng(1)
    same = rng.normal(size=(500, 3))
    assert evaluation.frechet_distance(same, same) == pytest.approx(0.0, abs=1e-8)
    # Large samples of N(0, I) and N(mu, 4 I) in 3-D: ||mu||^2 + 3 (2 - 1)^2.
    mu = np.array([1.0, -2.0, 0.5])
    a, b = rng.normal(size=(200_000, 3)), mu + 2 * rng.normal(size=(200_000, 3))
    assert evaluation.frechet_distance(a, b) == pytest.approx(np.sum(mu**2) + 3, rel=0.01)
    with pytest.raises(ValueError, match=r"feature sets of shapes \(5, 3\) and \(5, 2\)"):
        evaluation.frechet_distance(a[:5], b[:5, :2])


def test_fid_of_an_exact_model_is_zero_and_of_a_constant_one_is_not():
    data, _ = fake_data(1000)
    identity = {
        "x": lambda images: images.reshape(len(images), -1),
        "y": lambda images: images.reshape(len(images), -1),
    }
    rng = jax.random.PRNGKey(0)
    exact = evaluation.fid(fake_model("exact"), {}, data, rng, identity)
    assert set(exact) == {
        "x->y",
        "y->x",
        "w->x",
        "w->y",
        "x,w->y",
        "y,w->x",
        "joint->x",
        "joint->y",
        "prior->x",
        "prior->y",
    }
    # The fake posterior has unit variance, so samples are noisy one-hots: far from 0, but all the same kind.
    constant = evaluation.fid(fake_model("constant"), {}, data, rng, identity)
    assert all(constant[k] > exact[k] for k in exact if not k.startswith("prior")), (constant, exact)


def test_classifier_features_are_the_penultimate_layer():
    from mvae_jax import classifiers
    from mvae_jax.networks import Classifier

    params = Classifier(10).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    images = np.random.default_rng(2).random((7, 28, 28, 1)).astype(np.float32)
    feats = classifiers.features(params, images, batch_size=3)
    assert feats.shape == (7, 128) and (feats >= 0).all()
    logits = Classifier(10).apply({"params": params}, images)
    np.testing.assert_allclose(
        feats @ params["dense_1"]["kernel"] + params["dense_1"]["bias"], logits, rtol=1e-4, atol=1e-5
    )


def test_mean_pairwise_distance_closed_forms():
    assert evaluation.mean_pairwise_distance(np.array([[0.0], [3.0]])) == pytest.approx(3.0)
    triangle = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # equilateral, side 1
    assert evaluation.mean_pairwise_distance(triangle) == pytest.approx(1.0)
    assert evaluation.mean_pairwise_distance(np.ones((5, 4))) == 0.0
    # 0, 1, 3 on a line: pairs 1, 3, 2 -> mean 2.
    assert evaluation.mean_pairwise_distance(np.array([[0.0], [1.0], [3.0]])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"\(n >= 2, d\) features, got shape \(1, 3\)"):
        evaluation.mean_pairwise_distance(np.ones((1, 3)))


def test_label_diversity_is_zero_for_a_decoder_that_ignores_z_and_positive_otherwise():
    identity = {
        "x": lambda images: images.reshape(len(images), -1),
        "y": lambda images: images.reshape(len(images), -1),
    }
    rng = jax.random.PRNGKey(0)
    constant = evaluation.label_diversity(fake_model("constant"), {}, "w", rng, identity, samples=20)
    assert constant == pytest.approx({"w->x": 0.0, "w->y": 0.0}, abs=1e-6)
    data, labels = fake_data(200)
    exact = evaluation.label_diversity(fake_model("exact"), {}, "w", rng, identity, 20, data, labels)
    assert exact["w->x"] > 0.1 and exact["w->y"] > 0.1
    assert exact["real x"] == pytest.approx(0.0, abs=1e-6)  # every real image of a class is the same one-hot


def test_label_coherence_scores_samples_of_q_z_given_w_against_a_closed_form():
    """The fake posterior q(z | w = c) is N(one_hot(c), I) and the exact decoder's image is classified as argmax z,
    so a sample matches its class with P(1 + e_c > max_j!=c e_j) = int phi(t) Phi(t + 1)^9 dt for e ~ N(0, I);
    ``coherence`` (the posterior mean) gives 1.0 for the same model."""
    from scipy import integrate, stats

    expected, _ = integrate.quad(lambda t: stats.norm.pdf(t) * stats.norm.cdf(t + 1) ** 9, -12, 12)
    rng = jax.random.PRNGKey(0)
    sampled = evaluation.label_coherence(fake_model("exact"), {}, "w", rng, CLASSIFY, samples=2000)
    assert set(sampled) == {"w->x", "w->y"}
    stderr = np.sqrt(expected * (1 - expected) / (CLASSES * 2000))
    assert sampled["w->x"] == pytest.approx(expected, abs=4 * stderr), (sampled, expected)
    assert sampled["w->x"] == sampled["w->y"]  # both decoders read the same draws of z
    data, labels = fake_data()
    assert evaluation.coherence(fake_model("exact"), {}, data, labels, CLASSIFY)["w->x"] == 1.0
    # Always class 3: only the samples given w = 3 match.
    constant = evaluation.label_coherence(fake_model("constant"), {}, "w", rng, CLASSIFY, samples=50)
    assert constant == pytest.approx({"w->x": 0.1, "w->y": 0.1})


def test_fid_of_binarized_modalities_compares_binary_draws_with_binary_images():
    """mnist_label's test digits are binary: generated pixel means are drawn as Bernoulli images before the features."""
    data, _ = fake_data(400)
    seen = []

    def record(images):
        seen.append(np.unique(images))
        return images.reshape(len(images), -1)

    rng = jax.random.PRNGKey(0)
    evaluation.fid(fake_model("exact"), {}, data, rng, {"x": record}, binarize=("x",))
    generated = seen[:-1]  # the last call is the real images
    assert all(set(u.tolist()) <= {0.0, 1.0} for u in generated)
    seen.clear()
    evaluation.fid(fake_model("exact"), {}, data, rng, {"x": record})
    assert any(not set(u.tolist()) <= {0.0, 1.0} for u in seen[:-1])  # pixel means otherwise
