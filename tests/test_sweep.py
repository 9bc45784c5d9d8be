"""Sweeps of beta and of seeds: one vmapped program equals separate runs, one workdir per run, one compilation."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from mvae_jax import training
from mvae_jax.config import Config, load_config
from mvae_jax.data import load_dataset
from mvae_jax.models import get_model
from tests.conftest import ROOT


def _close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["jmvae", "mmvae"])
def test_sweep_equals_separate_runs(tiny_config, tmp_path, model):
    base = {**tiny_config.to_dict(), "model": model}
    if model == "mmvae":
        base.update(num_samples=2, epochs=1)
    betas = (0.5, 2.0)
    configs = [Config(**{**base, "beta": b, "workdir": str(tmp_path / f"sweep{b}")}) for b in betas]
    swept = training.train_sweep(configs)
    for b, state in zip(betas, swept):
        alone = training.train_and_evaluate(Config(**{**base, "beta": b, "workdir": str(tmp_path / f"alone{b}")}))
        _close(state.params, alone.params)
        _close(state.opt_state, alone.opt_state)
        epochs = list(range(1, base["epochs"] + 1))
        assert int(state.epoch) == epochs[-1]
        assert load_config(tmp_path / f"sweep{b}").beta == b
        assert training.Checkpoints(tmp_path / f"sweep{b}").all_steps() == epochs
        lines = (tmp_path / f"sweep{b}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == epochs
    # Different betas, different runs.
    assert not np.allclose(jax.tree_util.tree_leaves(swept[0].params)[0], jax.tree_util.tree_leaves(swept[1].params)[0])


@pytest.mark.slow
def test_sweep_epoch_compiles_once_and_resumes(tiny_config, tmp_path):
    config = Config(**{**tiny_config.to_dict(), "epochs": 1})
    ds = load_dataset(config)
    model = get_model(config, ds.modalities)
    tx = training.make_optimizer(config)
    epoch_fn = training.make_epoch_fn(model, tx, 120, 20, betas=(1.0, 2.0, 3.0))
    state = training.stack([training.create_train_state(model, tx, 0)] * 3)
    data = jax.device_put(ds.train)
    for _ in range(2):
        state, terms = epoch_fn(state, data)
    assert epoch_fn.chunk._cache_size() == 1 and terms["loss"].shape == (3,) and state.step.tolist() == [12] * 3
    # Resume: a 1-epoch sweep continued to 2 equals a straight 2-epoch sweep.
    make = lambda d, e: [
        Config(**{**config.to_dict(), "beta": b, "epochs": e, "workdir": str(tmp_path / d / str(b))})
        for b in (1.0, 2.0)
    ]
    straight = training.train_sweep(make("a", 2))
    training.train_sweep(make("b", 1))
    resumed = training.train_sweep(make("b", 2))
    for s, r in zip(straight, resumed):
        _close(s.params, r.params)


def test_sweep_refuses_runs_that_differ_in_more_than_beta_and_seed(tiny_config, tmp_path):
    a = Config(**{**tiny_config.to_dict(), "workdir": str(tmp_path / "a")})
    with pytest.raises(ValueError, match=r"differ only in beta and seed; these differ in \['latent_dim'\]"):
        training.train_sweep(
            [a, Config(**{**a.to_dict(), "beta": 2.0, "latent_dim": 5, "workdir": str(tmp_path / "b")})]
        )
    with pytest.raises(ValueError, match=r"distinct \(beta, seed\)s, got \[\(1.0, 0\), \(1.0, 0\)\]"):
        training.train_sweep([a, Config(**{**a.to_dict(), "workdir": str(tmp_path / "b")})])


@pytest.mark.slow
def test_seed_sweep_equals_separate_runs_with_their_own_order_noise_and_validation(tiny_config, tmp_path):
    """Each member of --seed=0,1 is the run that seed trains alone: its initialisation, batch order, dynamic
    binarization (trimodal x and y) and validation draws all come from its own seed."""
    base = {**tiny_config.to_dict(), "validation": 20, "epochs": 2}
    seeds = (0, 1)
    swept = training.train_sweep([Config(**{**base, "seed": s, "workdir": str(tmp_path / f"s{s}")}) for s in seeds])
    for s, state in zip(seeds, swept):
        alone = training.train_and_evaluate(Config(**{**base, "seed": s, "workdir": str(tmp_path / f"alone{s}")}))
        _close(state.params, alone.params)
        records = [
            [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in (f"s{s}", f"alone{s}")
        ]
        for r, a in zip(*records):
            np.testing.assert_allclose(r["validation_loss"], a["validation_loss"], rtol=1e-4)
            np.testing.assert_allclose(r["loss"], a["loss"], rtol=1e-4)
        assert load_config(tmp_path / f"s{s}").seed == s
    assert not np.allclose(jax.tree_util.tree_leaves(swept[0].params)[0], jax.tree_util.tree_leaves(swept[1].params)[0])


@pytest.mark.slow  # a training run: the everyday tier stays under 4 minutes
def test_seed_sweep_orders_the_batches_of_each_member_by_its_own_key(tiny_config):
    """The EpochFn of a sweep: per member a permutation from its own key; a beta sweep's members (one seed) share it."""
    ds = load_dataset(tiny_config)
    model = get_model(tiny_config, ds.modalities)
    tx = training.make_optimizer(tiny_config)
    epoch_fn = training.make_epoch_fn(model, tx, 120, 20, betas=(1.0, 1.0, 1.0))
    state = training.stack([training.create_train_state(model, tx, s) for s in (0, 1, 0)])
    order = np.asarray(epoch_fn.order(state))  # (steps, members, batch)
    assert order.shape == (6, 3, 20)
    np.testing.assert_array_equal(order[:, 0], order[:, 2])
    assert not np.array_equal(order[:, 0], order[:, 1])
    alone = np.asarray(training.make_epoch_fn(model, tx, 120, 20).order(training.create_train_state(model, tx, 1)))
    np.testing.assert_array_equal(order[:, 1], alone)


@pytest.mark.slow
def test_train_py_beta_and_seed_lists_write_a_workdir_per_run(tiny_data_dir, tmp_path):
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "train.py",
        "--beta=0.5,1",
        f"--data_dir={tiny_data_dir}",
        f"--workdir={out}",
        "--hidden_dims=16",
        "--latent_dim=2",
        "--batch_size=40",
        "--epochs=1",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["beta0.5", "beta1.0"]
    assert load_config(out / "beta0.5").beta == 0.5 and training.Checkpoints(out / "beta1.0").all_steps() == [1]
    # Seeds: a workdir per seed; with betas too, one per (beta, seed).
    seeds = tmp_path / "seeds"
    flags = [f for f in cmd if not f.startswith(("--beta=", "--workdir="))]
    for extra, names in (
        (["--seed=3,4"], ["seed3", "seed4"]),
        (["--seed=3,4", "--beta=0.5,1"], ["beta0.5_seed3", "beta0.5_seed4", "beta1.0_seed3", "beta1.0_seed4"]),
    ):
        result = subprocess.run(
            [*flags, *extra, f"--workdir={seeds / str(len(names))}"], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert sorted(p.name for p in (seeds / str(len(names))).iterdir()) == names
    assert [load_config(seeds / "4" / n).to_dict()["seed"] for n in ("beta1.0_seed3", "beta1.0_seed4")] == [3, 4]


@pytest.mark.slow
def test_resuming_a_sweep_moves_a_members_later_checkpoints_aside(tiny_config, tmp_path, caplog):
    """A member ahead of the others (trained alone one more epoch) has its later checkpoint moved to
    superseded_checkpoints/, never deleted, and the sweep resumes from the epoch all members have."""
    configs = [
        Config(**{**tiny_config.to_dict(), "beta": b, "workdir": str(tmp_path / f"b{b}"), "epochs": 1})
        for b in (0.5, 2.0)
    ]
    training.train_sweep(configs)
    training.train_and_evaluate(Config(**{**configs[0].to_dict(), "epochs": 2}))
    assert training.saved_epochs(configs[0].workdir) == [1, 2]
    training.train_sweep([Config(**{**c.to_dict(), "epochs": 2}) for c in configs])
    moved = list((tmp_path / "b0.5" / training.SUPERSEDED_DIR).glob("epoch2-*"))
    assert len(moved) == 1 and any(moved[0].rglob("*")), moved
    assert "moved the checkpoint of epoch 2" in caplog.text
    assert [training.saved_epochs(c.workdir) for c in configs] == [[1, 2], [1, 2]]


@pytest.mark.slow
def test_adversarial_seed_sweep_equals_separate_runs(tiny_config, tmp_path):
    """The VAE-GAN step vmapped over seeds: each member's generator and discriminators are its seed's alone."""
    base = {**tiny_config.to_dict(), "epochs": 1, "adversarial": True, "disc_hidden_dims": (16,)}
    swept = training.train_sweep([Config(**{**base, "seed": s, "workdir": str(tmp_path / f"s{s}")}) for s in (0, 1)])
    for s, state in zip((0, 1), swept):
        alone = training.train_and_evaluate(Config(**{**base, "seed": s, "workdir": str(tmp_path / f"alone{s}")}))
        _close(state.params, alone.params)
        _close(state.disc_params, alone.disc_params)
