"""CelebA's attribute scorer: the query agreement by hand, and a CNN trained on the synthetic folder's stream."""

import dataclasses
import json

import numpy as np
import pytest

from mvae_jax import attributes, classifiers
from mvae_jax.config import Config
from mvae_jax.data import DATASETS, OWN_SPLIT, DatasetSpec, Scorer, celeba, load_dataset
from tests.conftest import write_tiny_celeba


def test_query_agreement_by_hand():
    carried = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 0, 0]], bool)
    values, named = np.array([0, 0, 1], np.float32), np.array([1, 0, 1], np.float32)  # Male=0, Heavy_Makeup=1
    got = attributes.query_agreement(carried, values, named, ("Male", "Smiling", "Heavy_Makeup"))
    # Male=0 in rows 1, 2, 3; Heavy_Makeup=1 in rows 0, 1, 2; both in rows 1 and 2. Smiling is not asked.
    assert got == {"Male=0": 0.75, "Heavy_Makeup=1": 0.75, "all": 0.5}


def test_batches_in_memory_cover_the_split_once():
    split = {"a": np.arange(10)[:, None]}
    ordered = np.concatenate([b["a"][:, 0] for b in attributes.batches(split, 4, None)])
    np.testing.assert_array_equal(ordered, np.arange(10))  # file order, the last partial batch kept
    shuffled = [b["a"][:, 0] for b in attributes.batches(split, 4, seed=3)]
    assert [len(b) for b in shuffled] == [4, 4] and len(set(np.concatenate(shuffled))) == 8  # partial one dropped


def test_contract_refuses_an_attribute_scorer_of_another_modality():
    with pytest.raises(ValueError, match="an attribute scorer must be Scorer\\(OWN_SPLIT, targets="):
        DatasetSpec("x", lambda c: (), lambda c: None, scorers={"image": Scorer(OWN_SPLIT, targets="labels")})
    spec = DATASETS["celeba"]
    assert spec.scorers_of(("image", "attributes")) == {}  # no class scorer: coherence needs labels anyway
    assert set(spec.attribute_scorers_of(("image", "attributes"))) == {"image"}


@pytest.fixture(scope="module")
def celeba_60(tmp_path_factory):
    """60 synthetic faces (40 train, 10 validation, 10 test) whose red level tells the attribute Male."""
    return write_tiny_celeba(tmp_path_factory.mktemp("celeba60"), n=60, seed=1)


@pytest.mark.slow  # a whole training or evaluation run: the everyday tier stays under 4 minutes
def test_attribute_scorer_learns_male_from_the_stream_and_is_cached(celeba_60, tmp_path):
    config = Config(dataset="celeba", data_dir=str(celeba_60), attributes=("Male", "Smiling"))
    dataset = load_dataset(config)
    data = attributes.AttributeSplit(dataset, "image", "attributes", ("Male", "Smiling"))
    recipe, epochs = classifiers.Recipe(epochs=15, batch_size=8), []
    params, info = classifiers.load_or_train(
        "celeba/image", None, tmp_path, recipe, on_epoch=lambda e, loss: epochs.append(loss), data=data
    )
    assert len(epochs) == 15 and epochs[-1] < epochs[0]
    test = dataset.test.take(100)
    truth = test["attributes"] > 0.5
    carried = attributes.predict_attributes(params, test["image"])
    assert carried.shape == (10, 2) and carried.dtype == bool
    assert info["attribute_accuracy"]["Male"] == 1.0  # the red level separates it
    for i, name in enumerate(("Male", "Smiling")):  # the record is the accuracy and majority rate by hand
        assert info["attribute_accuracy"][name] == pytest.approx(np.mean(carried[:, i] == truth[:, i]))
        ones = truth[:, i].mean()
        assert info["attribute_majority"][name] == pytest.approx(max(ones, 1 - ones))
    assert info["test_accuracy"] == pytest.approx(np.mean(list(info["attribute_accuracy"].values())))
    assert info["classes"] == 2 and info["input_shape"] == [64, 64, 3] and info["test_examples"] == 10
    assert json.loads(next(tmp_path.glob("celeba-image-*/info.json")).read_text()) == info

    _, again = classifiers.load_or_train(
        "celeba/image", None, tmp_path, recipe, on_epoch=lambda e, loss: epochs.append(loss), data=data
    )
    assert again == info and len(epochs) == 15  # read from the cache, not trained again
    other = attributes.AttributeSplit(dataset, "image", "attributes", ("Male",))
    assert other.fingerprint != data.fingerprint  # another set of attributes is another scorer
    moved = load_dataset(Config(dataset="celeba", data_dir=str(write_tiny_celeba(tmp_path / "b", n=60, seed=1))))
    assert attributes.AttributeSplit(moved, "image", "attributes", ("Male", "Smiling")).fingerprint == data.fingerprint


def test_streamed_data_without_fingerprint_is_refused(celeba_60):
    dataset = load_dataset(Config(dataset="celeba", data_dir=str(celeba_60)))
    bare = dataclasses.replace(dataset, fingerprints=None)
    with pytest.raises(ValueError, match="streamed and declares no fingerprint of 'image'"):
        attributes.AttributeSplit(bare, "image", "attributes", celeba.ATTRIBUTES).fingerprint
