"""Beta sweeps: one vmapped program equals separate runs, one workdir per beta, one compilation."""

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


def test_sweep_refuses_runs_that_differ_in_more_than_beta(tiny_config, tmp_path):
    a = Config(**{**tiny_config.to_dict(), "workdir": str(tmp_path / "a")})
    with pytest.raises(ValueError, match=r"differ only in beta; these differ in \['latent_dim'\]"):
        training.train_sweep(
            [a, Config(**{**a.to_dict(), "beta": 2.0, "latent_dim": 5, "workdir": str(tmp_path / "b")})]
        )
    with pytest.raises(ValueError, match="distinct betas"):
        training.train_sweep([a, Config(**{**a.to_dict(), "workdir": str(tmp_path / "b")})])


@pytest.mark.slow
def test_train_py_beta_list_writes_a_workdir_per_beta(tiny_data_dir, tmp_path):
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
