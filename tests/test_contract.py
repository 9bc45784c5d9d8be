"""A data set added through its contract alone: a module's functions and one registry entry.

The toy set splits each tiny MNIST digit into a top and a bottom half (two image modalities), its classes come
with the files (no label modality), and only the top half has a scorer, trained on the set's own split. It trains,
and every eval section runs or says in one line why it cannot.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mvae_jax.config import Config
from mvae_jax.data import DATASETS, FROM_FILES, OWN_SPLIT, Dataset, DatasetSpec, Scorer, hold_out, sources
from mvae_jax.modality import Modality

pytestmark = pytest.mark.slow  # trains and evaluates twice

MODALITIES = (Modality("top", (14, 28, 1), "bernoulli"), Modality("bottom", (14, 28, 1), "bernoulli"))


def modalities(config):
    return MODALITIES


def load(config):
    mnist = sources.load_image_classification("mnist", config.data_dir)
    splits, labels = {}, {}
    for split, (images, classes) in mnist.items():
        x = np.asarray(images, np.float32) / 255.0
        splits[split], labels[split] = {"top": x[:, :14], "bottom": x[:, 14:]}, classes
    train, validation = hold_out({**splits["train"], "": labels["train"]}, config.validation)
    labels["train"], labels["validation"] = train.pop(""), validation.pop("")
    return Dataset("halves", MODALITIES, train, splits["test"], validation=validation, class_labels=labels)


def spec(scorers) -> DatasetSpec:
    return DatasetSpec("halves", modalities, load, labels=FROM_FILES, scorers=scorers, options=("validation",))


@pytest.mark.parametrize("scored", [True, False])
def test_a_data_set_added_by_its_contract_trains_and_every_section_runs_or_says_why_not(
    scored, tiny_data_dir, tmp_path, monkeypatch
):
    import eval as eval_cli
    from mvae_jax import training

    monkeypatch.setitem(DATASETS, "halves", spec({"top": Scorer(OWN_SPLIT)} if scored else {}))
    config = Config(
        model="mopoe", dataset="halves", data_dir=str(tiny_data_dir), workdir=str(tmp_path / "run"),
        hidden_dims=(16,), latent_dim=4, batch_size=20, epochs=1, validation=20,
    )  # fmt: skip
    training.train_and_evaluate(config)
    eval_cli.main(
        [f"--workdir={config.workdir}", "--classifier_epochs=1", f"--classifier_dir={tmp_path / 'cnn'}",
         "--prior_samples=50", "--tsne_points=20", "--fid_points=20", "--iw_samples=2", "--ll_points=10"]
    )  # fmt: skip
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert set(metrics["latent_accuracy"]) == {"top", "bottom", "top,bottom"}
    assert {"log_likelihood", "objective"} <= set(metrics)
    for figure in ("tsne.png", "cross_modal.png", "samples.png", "curves.png"):
        assert (tmp_path / "run" / "eval" / figure).is_file()
    if scored:  # one scorable modality: coherence to it, no prior coherence (it needs two)
        assert set(metrics["classifiers"]) == {"halves/top"}
        assert set(metrics["coherence"]) == {"bottom->top", "joint->top"}
        assert set(metrics["fid"]) == {"prior->top", "bottom->top", "joint->top", "points"}
        assert "skipped" not in metrics
    else:
        assert "coherence" not in metrics and "fid" not in metrics
        assert metrics["skipped"] == {
            "coherence": "no modality of halves can be classified (its contract declares no scorer)",
            "fid": "no image modality of halves has a scoring CNN, whose features FID compares",
        }
