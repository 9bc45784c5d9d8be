"""Adversarial training: the GAN losses against closed forms, the two-optimizer step, checkpoint and resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import adversarial, training
from mvae_jax.config import Config
from mvae_jax.data import load_dataset
from mvae_jax.models import get_model


def test_losses_match_closed_forms():
    logits = jnp.array([-2.0, 0.0, 3.0])
    sig = 1 / (1 + np.exp(-np.asarray(logits)))
    np.testing.assert_allclose(adversarial.generator_loss(logits), -np.log(sig), rtol=1e-6)
    fakes = {"a": jnp.array([0.5, -1.0, 0.0]), "b": jnp.array([1.0, 2.0, -3.0])}
    expected = -np.log(sig) - sum(np.log(1 - 1 / (1 + np.exp(-np.asarray(f)))) for f in fakes.values())
    np.testing.assert_allclose(adversarial.discriminator_loss(logits, fakes), expected, rtol=1e-6)
    # R1 of a linear discriminator w.x + tanh(x_0): gradient w + (1 - tanh^2(x_0)) e_0, per example.
    w = jnp.arange(12.0).reshape(2, 2, 3) / 10
    discriminate = lambda x: jnp.sum(x * w, axis=(1, 2, 3)) + jnp.tanh(x[:, 0, 0, 0])
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 3))
    grad = np.broadcast_to(np.asarray(w), x.shape).copy()
    grad[:, 0, 0, 0] += 1 - np.tanh(np.asarray(x[:, 0, 0, 0])) ** 2
    np.testing.assert_allclose(adversarial.r1_penalty(discriminate, x), (grad**2).sum(axis=(1, 2, 3)), rtol=1e-5)


def _setup(tiny_config, **kw):
    config = Config(**{**tiny_config.to_dict(), "adversarial": True, "disc_widths": (4, 8), **kw})
    ds = load_dataset(config)
    model = get_model(config, ds.modalities)
    tx = training.make_optimizer(config)
    adversary = adversarial.make_adversary(config, ds.modalities)
    state = training.create_train_state(model, tx, config.seed, adversary)
    batch = {k: jnp.asarray(v[:20]) for k, v in ds.train.items()}
    return model, tx, adversary, state, batch


@pytest.mark.slow
def test_one_step_changes_generator_and_discriminator(tiny_config):
    model, tx, adversary, state, batch = _setup(tiny_config)
    assert adversary.names == ("x", "y")  # the two image modalities, not the label
    new, terms = jax.jit(training.make_train_step(model, tx, adversary))(state, batch)
    for before, after in ((state.params, new.params), (state.disc_params, new.disc_params)):
        changed = [
            not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after))
        ]
        assert all(changed)
    assert {"disc_loss", "adv_generator", "vae_loss", "r1_x", "disc_prior_y"} <= set(terms)
    np.testing.assert_allclose(terms["loss"], terms["vae_loss"] + terms["adv_generator"], rtol=1e-5)


@pytest.mark.slow
def test_generator_gradient_flows_through_the_generated_images(tiny_config):
    model, _, adversary, state, batch = _setup(tiny_config)

    def adv(params):
        fakes = adversary.fakes(model, params, batch, jax.random.PRNGKey(0))
        return jnp.mean(adversary.generator_terms(state.disc_params, fakes, 0)["adv_generator"])

    grads = jax.grad(adv)(state.params)
    assert np.abs(np.asarray(grads["decoders"]["x"]["mlp"]["dense_0"]["kernel"])).sum() > 0
    assert np.abs(np.asarray(grads["joint_encoder"]["mlp"]["dense_0"]["kernel"])).sum() > 0  # via reconstructions
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(grads["decoders"]["w"]))


@pytest.mark.slow  # 15-28 s each: the everyday tier stays under 4 minutes
@pytest.mark.parametrize("network", ["conv", "auto"])  # the trimodal images: conv D, then MLP D
def test_discriminator_loss_falls_on_a_fixed_batch(tiny_config, network):
    model, _, adversary, state, batch = _setup(tiny_config, disc_network=network)
    fakes = adversary.fakes(model, state.params, batch, jax.random.PRNGKey(0))
    step = jax.jit(adversary.step)
    params, opt_state, losses = state.disc_params, state.disc_opt_state, []
    for _ in range(30):
        params, opt_state, terms = step(params, opt_state, batch, fakes)
        losses.append(float(terms["disc_loss"]))
    # Starts near 2 images x 3 terms x log 2 (D knows nothing; the MLP's R1 term starts larger), and falls steadily.
    assert losses[0] == pytest.approx(6 * np.log(2), rel=0.05 if network == "conv" else 0.15)
    assert losses[-1] < 0.8 * losses[0] and losses[20] < losses[10] < losses[0]


def test_warmup_zeroes_the_generator_weight(tiny_config):
    model, _, adversary, state, batch = _setup(tiny_config, adv_warmup_epochs=2, adv_weight=3.0)
    fakes = adversary.fakes(model, state.params, batch, jax.random.PRNGKey(0))
    assert float(adversary.generator_terms(state.disc_params, fakes, 1)["adv_weight"][0]) == 0.0
    assert float(adversary.generator_terms(state.disc_params, fakes, 2)["adv_weight"][0]) == 3.0


@pytest.mark.slow
def test_resume_carries_both_parameter_sets_and_optimizer_states(tiny_config, tmp_path):
    base = {**tiny_config.to_dict(), "adversarial": True, "disc_widths": (4,), "epochs": 2}
    straight = training.train_and_evaluate(Config(**{**base, "workdir": str(tmp_path / "a")}))
    training.train_and_evaluate(Config(**{**base, "workdir": str(tmp_path / "b"), "epochs": 1}))
    resumed = training.train_and_evaluate(Config(**{**base, "workdir": str(tmp_path / "b")}))
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert straight.disc_opt_state is not None
    metrics = (tmp_path / "b" / "metrics.jsonl").read_text()
    assert '"disc_loss"' in metrics and '"adv_generator"' in metrics


def test_adversarial_options_need_the_flag(tiny_config):
    with pytest.raises(ValueError, match="adv_weight=2.0 applies to adversarial training only"):
        Config(**{**tiny_config.to_dict(), "adv_weight": 2.0}).validate()


@pytest.mark.slow  # over 7 s: the everyday tier stays under 4 minutes
def test_the_discriminator_follows_the_modality_network(tiny_config):
    """An MLP D for the trimodal images (MLP networks), a conv D with --disc_network=conv; old configs load as conv."""
    from mvae_jax.networks import Discriminator, MLPDiscriminator

    adversary = _setup(tiny_config, disc_hidden_dims=(16, 8))[2]
    assert adversary.names == ("x", "y")
    assert all(isinstance(adversary.discriminators[n], MLPDiscriminator) for n in ("x", "y"))
    params = adversary.init(jax.random.PRNGKey(0), {"x": (28, 28, 1), "y": (28, 28, 1)})
    shapes = [params["x"][k]["kernel"].shape for k in ("dense_0", "dense_1", "logit")]
    assert shapes == [(784, 16), (16, 8), (8, 1)]
    conv = _setup(tiny_config, disc_network="conv")[2]
    assert all(isinstance(conv.discriminators[n], Discriminator) for n in ("x", "y"))
    saved = {**tiny_config.to_dict(), "adversarial": True}
    del saved["disc_network"]
    assert Config.from_dict(saved).disc_network == "conv"  # an adversarial run saved before the option
    assert Config.from_dict(tiny_config.to_dict()).disc_network == "auto"


def test_r1_of_the_mlp_discriminator_is_each_examples_own_gradient():
    from mvae_jax.networks import MLPDiscriminator

    disc = MLPDiscriminator((8, 4))
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28, 1))
    params = disc.init(jax.random.PRNGKey(0), x)
    discriminate = lambda images: disc.apply(params, images)
    one_by_one = [jnp.sum(jax.grad(lambda xi: discriminate(xi[None])[0])(x[i]) ** 2) for i in range(3)]
    np.testing.assert_allclose(adversarial.r1_penalty(discriminate, x), one_by_one, rtol=1e-5)
