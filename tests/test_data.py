"""IDX reading, the trimodal pairing, tfds through mock data, and failing fast without data."""

import gzip
import os
import time

import numpy as np
import pytest

from mvae_jax.config import Config
from mvae_jax.data import DataNotFoundError, idx, load_dataset, sources, trimodal
from tests.conftest import ROOT, write_tiny_idx_dataset


def test_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    for name in ("a-idx3-ubyte.gz", "a-idx3-ubyte"):
        idx.write_idx(tmp_path / name, images)
        np.testing.assert_array_equal(idx.read_idx(tmp_path / name, idx.IMAGES_MAGIC), images)
    labels = np.arange(7, dtype=np.uint8)
    idx.write_idx(tmp_path / "l.gz", labels)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "l.gz", idx.LABELS_MAGIC), labels)


def test_idx_header_matches_the_standard_bytes(tmp_path):
    path = idx.write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8), compress=False)
    raw = path.read_bytes()
    assert int.from_bytes(raw[:4], "big") == 2051 and int.from_bytes(raw[4:8], "big") == 2
    assert len(raw) == 16 + 2 * 784


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda raw: raw[:-10], "truncated"),
        (lambda raw: raw + b"\0", "trailing data"),
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "magic number 2049, expected 2051"),
        (lambda raw: b"PK\x03\x04" + raw[4:], "not an IDX file"),
        (lambda raw: raw[:10], "truncated IDX header"),
    ],
)
def test_idx_errors_name_the_file(tmp_path, damage, message):
    good = idx.write_idx(tmp_path / "good", np.zeros((3, 28, 28), np.uint8), compress=False).read_bytes()
    bad = tmp_path / "bad-images"
    bad.write_bytes(damage(good))
    with pytest.raises(ValueError, match=message) as err:
        idx.read_idx(bad, idx.IMAGES_MAGIC)
    assert str(bad) in str(err.value)


def test_idx_of_the_wrong_dtype_says_which_was_found_and_which_is_expected(tmp_path):
    """Issue 26, fault 8: labels saved as int32 (magic 3073) were refused as 'magic number 3073, expected 2049'."""
    bad = tmp_path / "train-labels-idx1-ubyte"
    labels = np.arange(5, dtype=">i4")
    bad.write_bytes(b"\x00\x00\x0c\x01" + (5).to_bytes(4, "big") + labels.tobytes())
    with pytest.raises(ValueError) as err:
        idx.read_idx(bad, idx.LABELS_MAGIC)
    assert str(err.value) == (
        f"{bad}: IDX magic number 3073, expected 2049: it holds int32 values in 1 dimension, where uint8 values "
        "in 1 dimension (labels) are expected"
    )


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(100))[:-8])
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as err:
        idx.read_idx(bad)
    assert str(bad) in str(err.value)


def test_pairs_share_the_class_and_are_deterministic():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 10, 500), rng.integers(0, 10, 300)
    pairs = trimodal.pair_by_class(a, b, seed=3)
    np.testing.assert_array_equal(b[pairs], a)
    np.testing.assert_array_equal(pairs, trimodal.pair_by_class(a, b, seed=3))
    assert not np.array_equal(pairs, trimodal.pair_by_class(a, b, seed=4))
    # Within a class every partner is used before any is reused.
    for c in range(10):
        used = np.bincount(pairs[a == c], minlength=len(b))[b == c]
        assert used.max() - used.min() <= 1


def test_pairing_fails_when_a_class_has_no_partner():
    with pytest.raises(ValueError, match="class 3"):
        trimodal.pair_by_class(np.array([3, 1]), np.array([1, 1]), seed=0)


def test_trimodal_from_an_idx_folder(tiny_data_dir):
    ds = load_dataset(Config(data_dir=str(tiny_data_dir)))
    assert [m.name for m in ds.modalities] == ["x", "y", "w"]
    assert ds.train["x"].shape == ds.train["y"].shape == (120, 28, 28, 1) and ds.train["w"].shape == (120, 10)
    assert ds.test["x"].shape == (40, 28, 28, 1)
    for split in (ds.train, ds.test):
        assert all(v.dtype == np.float32 for v in split.values())
        assert split["x"].min() >= 0 and split["x"].max() <= 1
    # x, y and w of every pair share the class: the tiny images' brightness encodes it.
    cls = lambda img: np.round((img.reshape(len(img), -1).mean(1) * 255 - 30) / 20).astype(int)
    np.testing.assert_array_equal(cls(ds.train["x"]), ds.labels("train"))
    np.testing.assert_array_equal(cls(ds.train["y"]), ds.labels("train"))


@pytest.mark.slow
def test_real_pairs_share_the_class(real_data_dir):
    mnist = sources.load_image_classification("mnist", real_data_dir)
    fashion = sources.load_image_classification("fashion_mnist", real_data_dir)
    for split, n in (("train", 60_000), ("test", 10_000)):
        pairs = trimodal.pair_by_class(mnist[split][1], fashion[split][1], seed=0)
        assert len(pairs) == n
        np.testing.assert_array_equal(fashion[split][1][pairs], mnist[split][1])


def test_missing_data_dir_files_are_named(tmp_path):
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte.gz"):
        sources.load_image_classification("mnist", tmp_path)
    root = write_tiny_idx_dataset(tmp_path / "partial")
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="mnist has some but lacks t10k-labels-idx1-ubyte \\(.gz or not\\)"):
        sources.load_image_classification("mnist", root)


def test_bad_file_in_data_dir_is_named(tmp_path):
    root = write_tiny_idx_dataset(tmp_path)
    bad = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset(Config(data_dir=str(root)))


def test_no_source_fails_fast_and_says_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "tfds_prepared", lambda name: False)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"mnist": (str(tmp_path / "none"),)})
    monkeypatch.setattr(sources, "TFDS_HOST", ("host.invalid", 443))
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as err:
        sources.load_image_classification("mnist")
    assert time.perf_counter() - start < 10
    message = str(err.value)
    for part in ("tensorflow-datasets data", str(tmp_path / "none"), "host.invalid unreachable", "--data_dir=DIR"):
        assert part in message


def test_system_folder_is_found(monkeypatch, tmp_path):
    root = write_tiny_idx_dataset(tmp_path)
    monkeypatch.setattr(sources, "tfds_prepared", lambda name: False)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (str(root / "fashion_mnist"),)})
    images, labels = sources.load_image_classification("fashion_mnist")["train"]
    assert images.shape == (120, 28, 28, 1) and labels.shape == (120,)


def test_tfds_source_with_mock_data():
    tfds = sources.import_tfds()
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        mnist = sources.load_tfds("mnist", download=False)
        fashion = sources.load_tfds("fashion_mnist", download=False)
    images, labels = mnist["train"]
    assert images.shape == (30, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (30,) and labels.max() < 10
    present = np.isin(mnist["test"][1], fashion["test"][1])
    split = trimodal.make_trimodal((mnist["test"][0][present], mnist["test"][1][present]), fashion["test"], seed=0)
    assert split["x"].shape[1:] == (28, 28, 1) and split["w"].shape[1] == 10


def test_mnist_label_binarizes_the_test_set_once_and_keeps_training_gray(tiny_data_dir):
    ds = load_dataset(Config(dataset="mnist_label", data_dir=str(tiny_data_dir)))
    assert [m.name for m in ds.modalities] == ["x", "w"] and ds.binarize == ("x",)
    assert ds.train["x"].shape == (120, 28, 28, 1) and ds.test["w"].shape == (40, 10)
    assert set(np.unique(ds.test["x"])) <= {0.0, 1.0}
    assert len(np.unique(ds.train["x"])) > 2
    again = load_dataset(Config(dataset="mnist_label", data_dir=str(tiny_data_dir)))
    np.testing.assert_array_equal(again.test["x"], ds.test["x"])  # the same binary test set every time
    mnist = sources.load_image_classification("mnist", str(tiny_data_dir))
    np.testing.assert_array_equal(ds.labels("test"), mnist["test"][1])


def test_hold_out_takes_the_last_n_of_one_fixed_permutation():
    from mvae_jax.data import VALIDATION_SEED, hold_out

    data = {"i": np.arange(100), "v": np.arange(100) * 10}
    train, validation = hold_out(data, 30)
    held = np.sort(np.random.default_rng(VALIDATION_SEED).permutation(100)[70:])
    np.testing.assert_array_equal(validation["i"], held)
    np.testing.assert_array_equal(validation["v"], held * 10)  # every modality of a pair moves together
    assert len(train["i"]) == 70 and not set(train["i"]) & set(validation["i"])
    assert sorted([*train["i"], *validation["i"]]) == list(range(100))
    assert np.all(np.diff(train["i"]) > 0) and np.all(np.diff(validation["i"]) > 0)  # file order kept
    unchanged, empty = hold_out(data, 0)
    assert unchanged is data and len(empty["i"]) == 0
    for bad in (-1, 100):
        with pytest.raises(ValueError, match=f"validation={bad} is invalid; allowed: 0 to 99"):
            hold_out(data, bad)


@pytest.mark.parametrize("dataset", ["trimodal", "mnist_label"])
def test_validation_split_is_disjoint_and_keeps_the_pairing(tiny_data_dir, dataset):
    """train + validation are the training pairs of --validation=0, split by index; test is unchanged;
    the same pairs come back on every load, whatever the model seed."""
    full = load_dataset(Config(dataset=dataset, data_dir=str(tiny_data_dir)))
    split = load_dataset(Config(dataset=dataset, data_dir=str(tiny_data_dir), validation=30, seed=5))
    again = load_dataset(Config(dataset=dataset, data_dir=str(tiny_data_dir), validation=30, seed=7))
    from mvae_jax.data import VALIDATION_SEED

    held = np.sort(np.random.default_rng(VALIDATION_SEED).permutation(120)[90:])
    kept = np.setdiff1d(np.arange(120), held)
    assert full.num_train == 120 and split.num_train == 90 and len(split.labels("validation")) == 30
    for name in ("x", "w") + (("y",) if dataset == "trimodal" else ()):
        np.testing.assert_array_equal(split.train[name], full.train[name][kept])
        np.testing.assert_array_equal(split.test[name], full.test[name])
        np.testing.assert_array_equal(split.validation[name], again.validation[name])
        if dataset == "trimodal" or name == "w":
            np.testing.assert_array_equal(split.validation[name], full.train[name][held])
    if dataset == "mnist_label":  # validation images binarized once, like the test images
        assert set(np.unique(split.validation["x"])) <= {0.0, 1.0}
        gray = full.train["x"][held]
        assert np.all((split.validation["x"] == 1) <= (gray > 0))
    with pytest.raises(ValueError, match="has no validation split: train it with --validation=N"):
        full.labels("validation")


def test_validation_larger_than_the_training_set_is_refused(tiny_data_dir):
    with pytest.raises(ValueError, match="validation=120 is invalid; allowed: 0 to 119"):
        load_dataset(Config(data_dir=str(tiny_data_dir), validation=120))
    with pytest.raises(ValueError, match="validation=-1 is invalid"):
        Config(validation=-1).validate()
    with pytest.raises(ValueError, match="validation=10 applies to dataset trimodal, mnist_label or polymnist only"):
        Config(dataset="celeba", validation=10).validate()


@pytest.mark.slow
def test_tensorflow_and_tfds_start_without_their_noise():
    """No oneDNN lines at TensorFlow's import, and tfds's 'no dataset_info.json' warning is dropped."""
    import logging
    import subprocess
    import sys

    code = "from mvae_jax.data import sources; sources.import_tfds()"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0 and "oneDNN" not in done.stderr, done.stderr

    def record(msg, *args):
        return logging.LogRecord("absl", logging.WARNING, __file__, 1, msg, args, None)

    assert not sources._not_prepared_warning(record("Variant folder %s has no dataset_info.json", "/t/mnist/3.0.1"))
    assert sources._not_prepared_warning(record("Variant folder %s is in use", "/t"))
    assert sources._not_prepared_warning(record("another warning"))
