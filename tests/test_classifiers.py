"""The scoring CNNs: trained once, cached with orbax, reused; an interrupted cache entry is retrained."""

import json

import numpy as np

from mvae_jax import classifiers


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


def test_classifier_learns_a_separable_task():
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 4
    images = rng.random((400, 8, 8, 1), dtype=np.float32) * 0.2
    for c in range(4):  # class c lights up quadrant c
        r, q = divmod(c, 2)
        images[labels == c, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 0.8
    params = classifiers.train_classifier(images, labels, classifiers.Recipe(epochs=5, batch_size=40))
    assert classifiers.accuracy(params, images, labels) == 1.0
