"""Incomplete training data (``--missing``): the mask, its settings, and every model's objective under it."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import missing
from mvae_jax.config import Config
from mvae_jax.models import INCOMPLETE, MODELS, PRESENT
from tests import reference as ref

NAMES = ("x", "y", "w")


def test_the_setting_reads_one_rate_or_one_per_modality_and_names_what_is_wrong():
    assert missing.parse("", NAMES) == {} and missing.parse("0", NAMES) == {}
    assert missing.parse("0.5", NAMES) == {"x": 0.5, "y": 0.5, "w": 0.5}
    assert missing.parse("x:0.5, w:0.2", NAMES) == {"x": 0.5, "w": 0.2}
    assert missing.parse("x:0.5,y:0", NAMES) == {"x": 0.5}
    for bad, says in [
        ("1.0", "a probability in [0, 1)"),
        ("-0.1", "a probability in [0, 1)"),
        ("half", "a probability in [0, 1)"),
        ("z:0.5", "'z' is unknown"),
        ("x:0.5,x:0.2", "'x' is repeated"),
        ("x", "a probability in [0, 1)"),
        ("x:1.5", "(x:1.5)"),
    ]:
        with pytest.raises(ValueError, match=f"missing={bad!r} is invalid") as e:
            missing.parse(bad, NAMES)
        assert says in str(e.value)
        assert "x, y, w" in str(e.value)  # what is allowed


def test_a_model_that_needs_every_modality_is_refused_before_any_work_and_the_others_named():
    with pytest.raises(ValueError, match="model='jmvae' cannot train on incomplete data") as e:
        Config(model="jmvae", missing="0.3").validate()
    assert all(name in str(e.value) for name in INCOMPLETE) and "--drop_incomplete" in str(e.value)
    Config(model="jmvae", missing="0.3", drop_incomplete=True).validate()  # the complete examples only
    Config(model="mvae", missing="x:0.3").validate()
    with pytest.raises(ValueError, match="'q' is unknown"):
        Config(model="mvae", missing="q:0.3").validate()
    with pytest.raises(ValueError, match="--adversarial"):
        Config(model="mvae", missing="0.3", adversarial=True).validate()
    builtin = {"jmvae", "telbo", "mvae", "pemvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus", "dmvae", "cmvae", "jnf",
               "jnfdcca"}  # fmt: skip
    assert builtin <= set(MODELS) and set(INCOMPLETE) & builtin == builtin - {"jmvae", "jnf", "jnfdcca"}
    with pytest.raises(ValueError, match="drop_incomplete=True applies with --missing only"):
        Config(model="mvae", drop_incomplete=True).validate()


def test_a_streamed_data_set_is_refused_with_the_ones_that_can():
    from mvae_jax.data import Dataset
    from mvae_jax.modality import Modality

    class Stream:
        def __len__(self):
            return 10

    streamed = Dataset(
        "celeba", (Modality("x", (4,), "bernoulli"), Modality("y", (2,), "categorical")), Stream(), Stream()
    )
    with pytest.raises(ValueError, match="streamed from disk; incomplete training data needs an in-memory"):
        missing.apply(streamed, Config(model="mvae", missing="0.5"), ("x", "y"))


def test_the_mask_keeps_one_modality_per_example_follows_the_rates_and_its_seed():
    rates = {"x": 0.5, "y": 0.2}
    mask = missing.draw(20000, NAMES, rates, seed=3)
    assert mask.shape == (20000, 3) and mask.dtype == bool and mask.any(axis=1).all()
    np.testing.assert_allclose(mask.mean(0), [0.5, 0.8, 1.0], atol=0.015)
    np.testing.assert_array_equal(mask, missing.draw(20000, NAMES, rates, seed=3))
    assert (mask != missing.draw(20000, NAMES, rates, seed=4)).any()
    everything = missing.draw(5000, NAMES, {n: 0.9 for n in NAMES}, seed=0)
    assert everything.any(axis=1).all()  # 0.9^3 of the examples lost all three and got one back
    # MultiVae's incomplete PolyMNIST: m0 always there, the others missing with probability r.
    poly = missing.draw(20000, ("m0", "m1", "m2"), missing.parse("m1:0.5,m2:0.5", ("m0", "m1", "m2")), seed=0)
    assert poly[:, 0].all()
    np.testing.assert_allclose(poly[:, 1:].mean(0), [0.5, 0.5], atol=0.015)


def test_applied_to_a_training_split_the_missing_values_are_erased_or_the_incomplete_examples_dropped(
    tiny_config, tmp_path
):
    from mvae_jax.data import load_dataset

    config = dataclasses.replace(tiny_config, model="mvae", missing="x:0.5,y:0.3", missing_seed=1)
    dataset = load_dataset(config)
    kept, summary = missing.apply(dataset, config)
    present = kept.train[PRESENT]
    np.testing.assert_array_equal(present, missing.draw(dataset.num_train, NAMES, {"x": 0.5, "y": 0.3}, 1))
    for i, n in enumerate(NAMES):
        assert not kept.train[n][~present[:, i]].any()  # erased
        np.testing.assert_array_equal(kept.train[n][present[:, i]], dataset.train[n][present[:, i]])
    assert kept.validation is dataset.validation and kept.test is dataset.test  # complete
    assert summary.complete == int(present.all(axis=1).sum()) and summary.examples == dataset.num_train
    dropped, _ = missing.apply(dataset, dataclasses.replace(config, drop_incomplete=True))
    assert PRESENT not in dropped.train and dropped.num_train == summary.complete
    np.testing.assert_array_equal(dropped.train["x"], dataset.train["x"][present.all(axis=1)])
    same, none = missing.apply(dataset, dataclasses.replace(config, missing="0"))
    assert same is dataset and none is None
    # A run's saved mask is what it trains on when resumed, whatever a fresh draw would give.
    other = ~present
    other[~other.any(axis=1), 0] = True
    missing.save_mask(tmp_path, other, NAMES)
    resumed, _ = missing.apply(dataset, config, workdir=tmp_path)
    np.testing.assert_array_equal(resumed.train[PRESENT], other)
    with pytest.raises(ValueError, match="belongs to another run"):
        missing.apply(
            missing.apply(dataset, dataclasses.replace(config, drop_incomplete=True))[0], config, workdir=tmp_path
        )


def _masked_batch(rng, present):
    batch = ref.batch(rng, n=len(present))
    for i, m in enumerate(NAMES):
        batch[m] = batch[m] * present[:, i].reshape((-1,) + (1,) * (batch[m].ndim - 1))
    return batch


PRESENT_ROWS = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1], [0, 1, 0]], bool)


@pytest.mark.parametrize("name", INCOMPLETE)
def test_each_model_reads_only_what_an_example_has_in_one_program_for_every_pattern(name):
    """With a mask: (1) all present = the complete batch's loss; (2) the values of missing modalities change
    neither the loss nor a gradient; (3) one compiled program for every pattern; (4) an encoder of a
    modality that no example has gets no gradient."""
    options = {"warmup_epochs": 0} if name == "pemvae" else {}
    model, params = ref.tiny_model(name, **options)
    key = jax.random.PRNGKey(5)
    traces = []

    def loss(params, batch):
        traces.append(1)
        return jnp.mean(model.loss(params, batch, key, 3)["loss"])

    step = jax.jit(jax.value_and_grad(loss))
    rng = np.random.default_rng(0)
    complete = ref.batch(rng, n=len(PRESENT_ROWS))
    whole = np.ones_like(PRESENT_ROWS)
    np.testing.assert_allclose(
        step(params, {**complete, PRESENT: whole})[0], jax.jit(loss)(params, complete), rtol=1e-5
    )

    erased = _masked_batch(np.random.default_rng(1), PRESENT_ROWS)
    noisy = {m: np.where(erased[m] == 0, rng.random(erased[m].shape), erased[m]).astype(np.float32) for m in NAMES}
    noisy["w"] = np.where(PRESENT_ROWS[:, 2:], erased["w"], np.eye(3, dtype=np.float32)[rng.integers(0, 3, 6)])
    value, grads = step(params, {**erased, PRESENT: PRESENT_ROWS})
    value_noisy, grads_noisy = step(params, {**noisy, PRESENT: PRESENT_ROWS})
    assert np.isfinite(value)
    np.testing.assert_allclose(value_noisy, value, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_noisy, grads)

    no_x = PRESENT_ROWS.copy()
    no_x[:, 0] = False
    no_x[~no_x.any(axis=1), 1] = True
    _, grads = step(params, {**_masked_batch(rng, no_x), PRESENT: no_x})
    assert len(traces) == 2  # the complete batch's own program, and one for every mask
    if "encoders" in params:
        assert all(not np.any(g) for g in jax.tree_util.tree_leaves(grads["encoders"]["x"]))
    assert any(np.any(g) for g in jax.tree_util.tree_leaves(grads))  # (telbo: its y and w encoders only)


def test_jmvae_refuses_a_masked_batch_with_the_models_that_accept_it():
    model, params = ref.tiny_model("jmvae")
    batch = {**ref.batch(np.random.default_rng(0)), PRESENT: np.ones((3, 3), bool)}
    with pytest.raises(ValueError, match="jmvae cannot train on incomplete data") as e:
        model.loss(params, batch, jax.random.PRNGKey(0))
    assert "mvae, telbo" in str(e.value)


def test_a_run_with_missing_data_trains_and_missing_zero_is_the_complete_run(tiny_config):
    from mvae_jax.training import train_and_evaluate

    base = dataclasses.replace(tiny_config, model="mvae", epochs=1)
    runs = {}
    for label, settings in [("complete", {}), ("zero", {"missing": "0"}), ("half", {"missing": "0.5"})]:
        config = dataclasses.replace(base, workdir=f"{tiny_config.workdir}_{label}", **settings)
        runs[label] = train_and_evaluate(config).params
    same = jax.tree_util.tree_map(lambda a, b: np.array_equal(a, b), runs["complete"], runs["zero"])
    assert all(jax.tree_util.tree_leaves(same))
    saved = np.load(f"{tiny_config.workdir}_half/{missing.MASK_FILE}")
    assert saved["present"].shape[1] == 3 and 0.05 < saved["present"].mean() < 0.95
    assert not Path(f"{tiny_config.workdir}_zero/{missing.MASK_FILE}").exists()
    differs = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b), runs["complete"], runs["half"])
    assert any(jax.tree_util.tree_leaves(differs))
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree_util.tree_leaves(runs["half"]))


def test_missing_eval_makes_the_validation_split_incomplete_and_its_objective_scores_what_each_example_has(
    tiny_config,
):
    from mvae_jax.data import load_dataset
    from mvae_jax.models import get_model
    from mvae_jax.models.base import AFTER_WARMUPS, make_mean_loss_fn

    config = dataclasses.replace(tiny_config, model="mvae", missing="0.5", missing_eval=True, validation=30)
    dataset = load_dataset(config)
    kept, _ = missing.apply(dataset, config)
    held = kept.validation
    np.testing.assert_array_equal(held[PRESENT], missing.draw(30, NAMES, missing.parse("0.5", NAMES), 1))
    assert not held["x"][~held[PRESENT][:, 0]].any()
    assert PRESENT not in missing.apply(dataset, dataclasses.replace(config, missing_eval=False))[0].validation
    model = get_model(config, dataset.modalities)
    params = model.init(jax.random.PRNGKey(0))
    rng = jax.random.PRNGKey(1)
    scored = make_mean_loss_fn(model, 30, 8, AFTER_WARMUPS)(params, rng, held)  # 4 batches, the last padded
    assert np.isfinite(scored["loss"])
    by_batch = [
        model.loss(params, {k: v[i : i + 8] for k, v in held.items()}, jax.random.fold_in(rng, j), AFTER_WARMUPS)
        for j, i in enumerate(range(0, 30, 8))
    ]
    np.testing.assert_allclose(scored["loss"], np.concatenate([b["loss"] for b in by_batch]).mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="missing_eval=True applies with --missing only"):
        Config(model="mvae", missing_eval=True).validate()
