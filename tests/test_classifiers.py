"""The scoring CNNs: the shipped weights (checksummed, reproducible), and own ones trained once, cached, reused."""

import dataclasses
import json

import numpy as np
import pytest

from mvae_jax import classifiers


@pytest.mark.slow
def test_classifier_is_cached_and_reused(tiny_data_dir, tmp_path):
    recipe = classifiers.Recipe(epochs=2, batch_size=20)
    epochs = []
    params, info = classifiers.load_or_train(
        "mnist", str(tiny_data_dir), tmp_path, recipe, on_epoch=lambda e, loss: epochs.append((e, loss))
    )
    assert [e for e, _ in epochs] == [1, 2] and all(np.isfinite(loss) for _, loss in epochs)
    assert info["dataset"] == "mnist" and info["recipe"]["epochs"] == 2 and 0.0 <= info["test_accuracy"] <= 1.0
    folder = next(tmp_path.iterdir())
    assert json.loads((folder / classifiers.INFO_FILE).read_text()) == info

    again, info_again = classifiers.load_or_train(
        "mnist", str(tiny_data_dir), tmp_path, recipe, on_epoch=lambda e, loss: epochs.append((e, loss))
    )
    assert len(epochs) == 2 and info_again == info  # loaded, not trained
    images = np.random.default_rng(0).random((7, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(classifiers.predict(again, images), classifiers.predict(params, images))

    # A folder without info.json (training interrupted before it was marked complete) is trained again.
    (folder / classifiers.INFO_FILE).unlink()
    classifiers.load_or_train(
        "mnist", str(tiny_data_dir), tmp_path, recipe, on_epoch=lambda e, loss: epochs.append((e, loss))
    )
    assert len(epochs) == 4 and (folder / classifiers.INFO_FILE).is_file()


@pytest.mark.slow  # a whole training or evaluation run: the everyday tier stays under 4 minutes
def test_classifier_learns_a_separable_task():
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 4
    images = rng.random((400, 8, 8, 1), dtype=np.float32) * 0.2
    for c in range(4):  # class c lights up quadrant c
        r, q = divmod(c, 2)
        images[labels == c, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 0.8
    params = classifiers.train_classifier(images, labels, classifiers.Recipe(epochs=5, batch_size=40))
    assert classifiers.accuracy(params, images, labels) == 1.0


@pytest.fixture(scope="module")
def small_params():
    """A classifier after one epoch on 40 noise images (trained once for the tests of the weights file)."""
    images = np.random.default_rng(1).random((40, 28, 28, 1), dtype=np.float32)
    return classifiers.train_classifier(images, np.arange(40) % 10, classifiers.Recipe(epochs=1, batch_size=20))


def test_weights_file_round_trips_with_a_stable_checksum(small_params, tmp_path):
    params = small_params
    digest = classifiers.save_weights(params, tmp_path / "a.npz")
    assert classifiers.save_weights(params, tmp_path / "b.npz") == digest == classifiers.sha256(tmp_path / "b.npz")
    loaded = classifiers.load_weights(tmp_path / "a.npz", digest)
    images = np.random.default_rng(2).random((9, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(classifiers.predict(loaded, images), classifiers.predict(params, images))


def test_a_changed_weights_file_is_refused_with_its_checksums(small_params, tmp_path):
    digest = classifiers.save_weights(small_params, tmp_path / "a.npz")
    data = bytearray((tmp_path / "a.npz").read_bytes())
    data[-100] ^= 1
    (tmp_path / "a.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"not the recorded {digest}.*scripts/train_classifiers.py"):
        classifiers.load_weights(tmp_path / "a.npz", digest)


def test_the_shipped_record_names_each_file_with_its_checksum():
    record = classifiers.shipped_record()
    assert set(record) == {"mnist", "fashion_mnist", *(f"polymnist/m{m}" for m in range(5))}
    assert all(len(record[f"polymnist/m{m}"]["data_sha256"]) == 64 for m in range(5))  # the data they score
    for name, info in record.items():
        assert classifiers.sha256(classifiers.SHIPPED_DIR / info["file"]) == info["sha256"]
        assert info["recipe"] == dataclasses.asdict(classifiers.default_recipe(name))
        assert info["train_examples"] == 60_000 and info["test_examples"] == 10_000
        assert (classifiers.SHIPPED_DIR / info["file"]).stat().st_size < 5_000_000


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_shipped_weights_reproduce_their_recorded_test_accuracy(name, real_data_dir):
    from mvae_jax.data import sources

    params, info = classifiers.load_shipped(name)
    images, labels = sources.load_image_classification(name, str(real_data_dir))["test"]
    accuracy = classifiers.accuracy(params, np.asarray(images, np.float32) / 255.0, labels)
    assert accuracy == pytest.approx(info["test_accuracy"], abs=2e-4)  # 2 of 10,000: XLA's float sums may differ
    assert accuracy >= {"mnist": 0.99, "fashion_mnist": 0.90}[name]


@pytest.mark.slow
def test_the_regeneration_script_writes_weights_eval_can_load(tiny_data_dir, tmp_path):
    from scripts import train_classifiers

    assert train_classifiers.main([f"--data_dir={tiny_data_dir}", f"--out={tmp_path}", "--epochs=1"]) == 0
    record = classifiers.shipped_record(tmp_path)
    assert set(record) == {"mnist", "fashion_mnist"} and record["mnist"]["recipe"]["epochs"] == 1
    params, info = classifiers.load_shipped("mnist", tmp_path)
    assert info["test_examples"] == 40 and 0.0 <= info["test_accuracy"] <= 1.0
    assert classifiers.predict(params, np.zeros((3, 28, 28, 1), np.float32)).shape == (3,)


@pytest.mark.slow
def test_eval_scores_with_the_shipped_weights_by_default(tiny_config, tmp_path, monkeypatch):
    """The coherence section trains nothing unless asked to (``--classifier_dir`` or ``--classifier_epochs``)."""
    import types

    from mvae_jax import training
    from mvae_jax.data import load_dataset
    from mvae_jax.evaluation import sections
    from mvae_jax.models import get_model

    def no_training(*args, **kwargs):
        raise AssertionError("trained a classifier")

    monkeypatch.setattr(classifiers, "load_or_train", no_training)
    dataset = load_dataset(tiny_config)
    model = get_model(tiny_config, dataset.modalities)
    state = training.create_train_state(model, training.make_optimizer(tiny_config), 0)
    options = types.SimpleNamespace(
        classifier_dir=None, classifier_epochs=0, seed=0, prior_samples=50, coherence_points=0, sampler="prior",
        sampler_components=10, latent_train_points=20_000, generation="mean",
    )  # fmt: skip
    ctx = sections.Context(
        tiny_config, model, state.params, 0, dataset, dataset.test, dataset.labels("test"), None, tmp_path, options
    )
    out = sections.coherence(ctx)
    record = classifiers.shipped_record()
    assert out["classifiers"] == {k: record[k]["test_accuracy"] for k in ("mnist", "fashion_mnist")}
    assert all(0.0 <= v <= 1.0 for v in out["coherence"].values())
