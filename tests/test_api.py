"""mvae_jax.api.evaluate: eval.py's evaluation from Python, of a workdir or of a state in memory."""

import dataclasses
import json
from pathlib import Path

import pytest

from mvae_jax import api, training


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
    from mvae_jax.config import Config

    config = Config(
        data_dir=str(tiny_data_dir),
        workdir=str(tmp_path_factory.mktemp("api") / "run"),
        hidden_dims=(32,),
        latent_dim=4,
        batch_size=20,
        epochs=1,
        validation=40,
    )
    return config, training.train_and_evaluate(config)


@pytest.mark.slow  # an evaluation of every section: 30-40 s
def test_evaluate_a_workdir_returns_and_writes_the_metrics(trained):
    config, _ = trained
    metrics = api.evaluate(config.workdir, sections=("coherence", "latent_accuracy"), step="best", seed=3)
    on_disk = json.loads((Path(config.workdir) / "eval" / "metrics.json").read_text())
    assert metrics == on_disk and set(metrics["coherence"]) >= {"x->w", "y->w", "prior"}
    assert metrics["epoch"] == api.best_epoch(config.workdir) == 1 and metrics["eval_flags"]["seed"] == 3
    assert 0 <= metrics["latent_accuracy"]["x"] <= 1


@pytest.mark.slow  # two evaluations: about 12 s
def test_evaluate_a_state_in_memory_gives_the_restored_checkpoints_numbers(trained, tmp_path):
    config, state = trained
    from_disk = api.evaluate(config.workdir, sections="latent_accuracy", out=str(tmp_path / "a"))
    in_memory = api.evaluate(state, config=config, sections=["latent_accuracy"], out=str(tmp_path / "b"))
    assert in_memory["latent_accuracy"] == from_disk["latent_accuracy"]
    with pytest.raises(TypeError, match=r"needs the run's config"):
        api.evaluate(state)


@pytest.mark.parametrize(
    "given,error,message",
    [
        ({"iw_sample": 5}, TypeError, r"unknown keywords \['iw_sample'\]; allowed: sections, step"),
        ({"iw_samples": 0}, ValueError, r"--iw_samples=0 is invalid"),
        ({"seed": -1}, ValueError, r"--seed=-1 is invalid"),
        ({"split": "train"}, ValueError, r"--split='?train'? is invalid"),
        ({"sections": "coherence,fidd"}, ValueError, r"unknown sections \['fidd'\]"),
        ({"step": 0}, ValueError, r"step=0 is invalid; allowed: an epoch"),
        ({"step": 7}, FileNotFoundError, r"no checkpoint of epoch 7 \(it has \[1\]\)"),
    ],
)
def test_a_bad_keyword_is_refused_before_any_work(trained, given, error, message):
    config, _ = trained
    before = sorted(p.name for p in Path(config.workdir).iterdir())
    with pytest.raises(error, match=message):
        api.evaluate(config.workdir, **{"out": str(Path(config.workdir) / "refused"), **given})
    assert sorted(p.name for p in Path(config.workdir).iterdir()) == before


def test_restoring_the_best_checkpoint_as_the_docs_say(trained):
    config, _ = trained
    restored_config, model, state = training.restore_model(
        config.workdir, api.best_epoch(config.workdir), training.BEST_DIR
    )
    assert int(state.epoch) == 1 and model.names == ("x", "y", "w")
    assert dataclasses.asdict(restored_config)["model"] == config.model
