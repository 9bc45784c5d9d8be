"""The jitted epoch, checkpoints and resume, on the tiny IDX data set."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvae_jax import training
from mvae_jax.config import Config
from mvae_jax.data import load_dataset
from mvae_jax.models import get_model


def _setup(config):
    ds = load_dataset(config)
    model = get_model(config, ds.modalities)
    tx = training.make_optimizer(config)
    return ds, model, tx, training.create_train_state(model, tx, config.seed)


def _assert_trees_equal(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_jitted_step_lowers_the_loss_on_a_fixed_batch(tiny_config):
    ds, model, tx, state = _setup(tiny_config)
    batch = {k: jnp.asarray(v[:20]) for k, v in ds.train.items()}
    step = jax.jit(training.make_train_step(model, tx))
    # Same noise each time: evaluate at a fixed step counter.
    loss_at = lambda s: float(jnp.mean(model.loss(s.params, batch, jax.random.PRNGKey(0))["loss"]))
    before = loss_at(state)
    state, _ = step(state, batch)
    after_one = loss_at(state)
    assert after_one < before
    for _ in range(19):
        state, _ = step(state, batch)
    assert int(state.step) == 20
    assert loss_at(state) < after_one


def test_epoch_compiles_once_and_counts(tiny_config):
    ds, model, tx, state = _setup(tiny_config)
    epoch_fn = training.make_epoch_fn(model, tx, 120, tiny_config.batch_size)
    data = jax.device_put(ds.train)
    seen = []
    epoch_fn_cb = training.make_epoch_fn(model, tx, 120, 5, on_step=lambda i, loss: seen.append(int(i)))
    for _ in range(3):
        state, terms = epoch_fn(state, data)
    assert epoch_fn.chunk._cache_size() == 1 and epoch_fn.order._cache_size() == 1
    assert int(state.epoch) == 3 and int(state.step) == 3 * (120 // 20)
    assert set(terms) >= {"loss", "kl", "log_likelihood_x", "log_likelihood_y", "log_likelihood_w", "kl_joint_to_x"}
    epoch_fn_cb(training.create_train_state(model, tx, 0), data)
    jax.effects_barrier()
    assert sorted(seen) == [10, 20, 24]  # every 10th step and the last


def test_epoch_programs_compile_ahead_and_the_epoch_reuses_them(tiny_config):
    """``compile`` builds the chunk programs of the rest of the epoch without running them; ``ready`` runs between."""
    ds, model, tx, state = _setup(tiny_config)
    data = jax.device_put(ds.train)
    epoch_fn = training.make_epoch_fn(model, tx, 120, 5)  # 24 steps: chunks of 10, 10 and 4
    assert epoch_fn.lengths(state) == [4, 10]
    programs = epoch_fn.compile(state, data)
    assert sorted(programs) == [4, 10] and programs[10].memory_analysis() is not None
    assert int(state.step) == 0  # nothing ran
    calls = []
    state, _ = epoch_fn(state, data, ready=lambda: calls.append(epoch_fn.chunk._cache_size()))
    assert calls == [0] and epoch_fn.chunk._cache_size() == 2  # ready came before any step; no other program
    assert int(state.step) == 24


def test_epochs_use_different_batch_orders(tiny_config):
    ds, model, tx, state = _setup(tiny_config)
    data = jax.device_put(ds.train)
    epoch_fn = training.make_epoch_fn(model, tx, 120, 20)
    s1, t1 = epoch_fn(state, data)
    # Same params, next epoch counter: a new permutation gives another mean loss.
    s1b = s1.replace(
        params=training.create_train_state(model, tx, tiny_config.seed).params,
        opt_state=training.create_train_state(model, tx, tiny_config.seed).opt_state,
    )
    _, t2 = epoch_fn(s1b, data)
    assert float(t1["loss"]) != float(t2["loss"])


def test_checkpoint_restores_equal_state(tiny_config, tmp_path):
    ds, model, tx, state = _setup(tiny_config)
    state, _ = training.make_epoch_fn(model, tx, 120, 20)(state, jax.device_put(ds.train))
    with training.Checkpoints(tmp_path) as ckpt:
        ckpt.save(state)
    target = training.create_train_state(model, tx, seed=123)
    restored = training.Checkpoints(tmp_path).restore(target)
    _assert_trees_equal(restored, state)
    assert type(restored.opt_state) is type(state.opt_state)  # named tuples, not lists


@pytest.mark.slow
@pytest.mark.parametrize(("model", "optimizer"), [("jmvae", "adam"), ("pemvae", "adam"), ("jmvae", "amsgrad")])
def test_resume_after_one_epoch_equals_two_straight(tiny_config, tmp_path, model, optimizer):
    """pemvae: its second epoch is the subset stage (warm-up 1 epoch), so the schedule must survive resume.
    amsgrad: its running maximum of the second moments is checkpointed with the rest of its state."""
    base = {**tiny_config.to_dict(), "model": model, "optimizer": optimizer}
    straight = training.train_and_evaluate(Config(**{**base, "workdir": str(tmp_path / "a")}))
    cfg_b = Config(**{**base, "workdir": str(tmp_path / "b"), "epochs": 1})
    training.train_and_evaluate(cfg_b)
    resumed = training.train_and_evaluate(Config(**{**cfg_b.to_dict(), "epochs": 2}))
    _assert_trees_equal(resumed.params, straight.params)
    _assert_trees_equal(resumed.opt_state, straight.opt_state)
    assert int(resumed.epoch) == 2 and int(resumed.step) == int(straight.step)
    lines = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in lines] == [1, 2]
    assert {"loss", "kl", "time_s", "samples_per_s", "step"} <= set(lines[0])
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["model"] == model
    assert training.Checkpoints(tmp_path / "b").all_steps() == [1, 2]


@pytest.mark.slow  # a training run: the everyday tier stays under 4 minutes
def test_only_the_latest_checkpoints_are_kept(tiny_config):
    cfg = Config(**{**tiny_config.to_dict(), "epochs": 4, "keep_checkpoints": 2})
    training.train_and_evaluate(cfg)
    assert training.Checkpoints(cfg.workdir).all_steps() == [3, 4]
    _, model, state = training.restore_model(cfg.workdir)
    assert model.name == "jmvae" and set(state.params) == {"joint_encoder", "encoders", "decoders"}


def test_resume_with_other_settings_is_refused_before_training(tiny_config):
    training.train_and_evaluate(Config(**{**tiny_config.to_dict(), "epochs": 1}))
    with pytest.raises(ValueError, match=r"beta: saved 1.0, asked 2.0"):
        training.train_and_evaluate(Config(**{**tiny_config.to_dict(), "beta": 2.0}))
    assert training.Checkpoints(tiny_config.workdir).all_steps() == [1]


def test_unwritable_workdir_is_an_error(tiny_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="not writable"):
        training.train_and_evaluate(Config(**{**tiny_config.to_dict(), "workdir": str(blocker / "run")}))


def test_non_finite_loss_stops_without_saving(tiny_config):
    cfg = Config(**{**tiny_config.to_dict(), "learning_rate": 1e12, "epochs": 3})
    with pytest.raises(FloatingPointError, match="epoch"):
        training.train_and_evaluate(cfg)
    # Whatever was saved holds finite parameters.
    for s in training.Checkpoints(cfg.workdir).all_steps():
        _, _, state = training.restore_model(cfg.workdir, s)
        assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(state.params))


def test_binarized_modalities_are_fresh_bernoulli_draws_every_step():
    """A fake model whose loss is the batch's mean of x(1-x): 0 for binary x, about 1/6 for uniform gray x."""
    from mvae_jax.modality import Modality
    from mvae_jax.models import Model

    def loss(params, batch, rng, epoch=0):
        x = batch["x"]
        return {"loss": jnp.mean(x * (1 - x), axis=(1, 2)) + 0 * params["a"], "mean_x": jnp.mean(x, axis=(1, 2))}

    model = Model("fake", (Modality("x", (4, 4), "bernoulli"),), lambda rng: {"a": jnp.zeros(())}, loss, None, None)
    tx = training.make_optimizer(Config())
    gray = {"x": np.random.default_rng(0).random((64, 4, 4), dtype=np.float32)}
    state = training.create_train_state(model, tx, 0)
    plain = training.make_epoch_fn(model, tx, 64, 16)
    binary = training.make_epoch_fn(model, tx, 64, 16, binarize=("x",))
    _, terms = plain(state, gray)
    assert float(terms["loss"]) > 0.1
    state, terms = binary(training.create_train_state(model, tx, 0), gray)
    assert float(terms["loss"]) == 0.0 and abs(float(terms["mean_x"]) - gray["x"].mean()) < 0.05
    _, again = binary(state, gray)
    assert float(again["mean_x"]) != float(terms["mean_x"])  # the next epoch draws again


@pytest.mark.slow
@pytest.mark.parametrize(  # the models without a joint encoder
    "name", ["mvae", "pemvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus", "dmvae", "cmvae"]
)
def test_subset_models_train_on_the_two_modality_mnist_label_set(name, tiny_data_dir, tmp_path):
    config = Config(
        model=name,
        dataset="mnist_label",
        data_dir=str(tiny_data_dir),
        workdir=str(tmp_path / name),
        hidden_dims=(16,),
        latent_dim=4,
        batch_size=20,
        epochs=1,
        **({"num_samples": 2} if name == "mmvae" else {}),
    )
    training.train_and_evaluate(config)
    record = json.loads((tmp_path / name / "metrics.jsonl").read_text())
    assert np.isfinite(record["loss"])


def _damage(checkpoint: Path) -> None:
    """Truncate every data file of an orbax checkpoint to half its size."""
    for f in checkpoint.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.mark.slow
def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tiny_config, caplog):
    training.train_and_evaluate(Config(**{**tiny_config.to_dict(), "epochs": 3}))
    workdir = Path(tiny_config.workdir)
    _damage(workdir / "checkpoints" / "3")
    state = training.train_and_evaluate(Config(**{**tiny_config.to_dict(), "epochs": 4}))
    assert "the checkpoint of epoch 3 is unreadable" in caplog.text
    assert int(state.epoch) == 4 and training.Checkpoints(workdir).all_steps() == [2, 3, 4]
    assert [p.name.split("-")[0] for p in (workdir / training.CORRUPT_DIR).iterdir()] == ["epoch3"]  # kept, moved
    epochs = [json.loads(line)["epoch"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_no_readable_checkpoint_is_an_error_that_names_the_folder(tiny_config):
    training.train_and_evaluate(Config(**{**tiny_config.to_dict(), "epochs": 2}))
    for epoch in (1, 2):
        _damage(Path(tiny_config.workdir) / "checkpoints" / str(epoch))
    with pytest.raises(ValueError, match=r"no readable checkpoint .* epochs \[2, 1\]"):
        training.train_and_evaluate(Config(**{**tiny_config.to_dict(), "epochs": 3}))


def test_train_examples_keeps_the_first_n_and_refuses_more_than_the_split(tiny_config, tmp_path):
    """--train_examples=N: the first N training examples, the other splits as they are; more than the split has
    is refused before training."""
    from mvae_jax.data import load_dataset

    dataset = load_dataset(tiny_config)
    first = dataset.first_training_examples(40)
    assert all(np.array_equal(first.train[k], dataset.train[k][:40]) for k in dataset.train)
    assert first.test is dataset.test
    too_many = Config(
        **{**tiny_config.to_dict(), "train_examples": dataset.num_train + 1, "workdir": str(tmp_path / "more")}
    )
    with pytest.raises(ValueError, match=rf"train_examples={dataset.num_train + 1} is invalid; allowed: 1 to "):
        training.train_and_evaluate(too_many)


@pytest.mark.slow
def test_train_examples_trains_on_the_first_n_examples_only(tiny_config):
    """--train_examples=N: N // batch steps per epoch."""
    state = training.train_and_evaluate(Config(**{**tiny_config.to_dict(), "train_examples": 40, "epochs": 1}))
    assert int(state.step) == 40 // tiny_config.batch_size


def _torch_amsgrad(grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """PyTorch's Adam(amsgrad=True) step by step in float64 NumPy (torch.optim.adam._single_tensor_adam):
    the maximum of the raw second moments, then the current step's bias corrections."""
    p = np.zeros_like(grads[0])
    m, v, v_max = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_max = np.maximum(v_max, v)
        p = p - (lr / (1 - b1**t)) * m / (np.sqrt(v_max) / np.sqrt(1 - b2**t) + eps)
    return p


def test_amsgrad_follows_pytorchs_form_not_optaxs():
    """--optimizer=amsgrad, the MMVAE+ and CMVAE authors' optimizer: equal to PyTorch's in float64 over 50
    steps of large random gradients, then 1,500 of a steady one 100 times smaller. Adam's step grows as its
    second moment decays, AMSGrad's stays bounded by the maximum; optax.amsgrad (the maximum over
    bias-corrected moments, which keeps the first step's g^2) moves far less."""
    rng = np.random.default_rng(0)
    steady = 0.01 * np.array([1.0, -1.0, 0.5, 2.0, -0.3])
    grads = [rng.normal(size=5) for _ in range(50)] + [steady * (1 + 0.1 * rng.normal(size=5)) for _ in range(1500)]
    expected = _torch_amsgrad(grads, lr=1e-2)
    with jax.enable_x64(True):

        def run(tx):
            params = jnp.zeros(5, jnp.float64)
            state = tx.init(params)
            update = jax.jit(tx.update)
            for g in grads:
                updates, state = update(jnp.asarray(g), state, params)
                params = params + updates
            return np.asarray(params)

        ours = run(training.make_optimizer(Config(optimizer="amsgrad", learning_rate=1e-2)))
        optax_form = run(__import__("optax").amsgrad(1e-2))
        adam = run(training.make_optimizer(Config(learning_rate=1e-2)))
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-13)
    for other in (optax_form, adam):
        assert np.abs(other - expected).max() > 0.1
