"""Where MNIST-format image classification sets come from: IDX folders or tensorflow-datasets.

Order of the search when no ``data_dir`` is given:
  1. tensorflow-datasets data already prepared on this machine (no download);
  2. system folders of IDX files (Debian's ``dataset-fashion-mnist`` package);
  3. a tensorflow-datasets download, only if its servers answer within seconds.
With ``data_dir``, only ``data_dir/<name>/`` is read. When nothing works the
error says what was tried and how to provide the data, within seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import socket

import numpy as np

from mvae_jax.data import idx

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {
    "mnist": {"train": 60_000, "test": 10_000},
    "fashion_mnist": {"train": 60_000, "test": 10_000},
}
NUM_CLASSES = 10
SYSTEM_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
}
TFDS_HOST = ("storage.googleapis.com", 443)

Split = tuple[np.ndarray, np.ndarray]  # images uint8 (n, 28, 28, 1), labels int32 (n,)


class DataNotFoundError(FileNotFoundError):
    """No source could provide a data set; the message lists what was tried."""


def load_image_classification(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Split]:
    """{"train": (images, labels), "test": (images, labels)} of ``mnist`` or ``fashion_mnist``.

    Images are uint8 (n, 28, 28, 1), labels int32 (n,) in [0, 10).
    """
    if name not in SIZES:
        raise ValueError(f"name={name!r}; allowed: {sorted(SIZES)}")
    if data_dir is not None:
        folder = find_idx_folder(Path(data_dir), name)
        if folder is None:
            raise DataNotFoundError(
                f"no {name} IDX files under data_dir={str(data_dir)!r}: " + _what_is_missing(Path(data_dir), name)
            )
        return read_idx_folder(folder, name)

    tried = []
    if tfds_prepared(name):
        return load_tfds(name, download=False)
    tried.append(f"tensorflow-datasets data in {_tfds_data_dir()} (not prepared)")
    for folder in SYSTEM_DIRS.get(name, ()):
        found = find_idx_folder(Path(folder), None)
        if found is not None:
            log.info("reading %s from %s", name, found)
            return read_idx_folder(found, name)
        tried.append(f"IDX files in {folder} (absent)")
    if _reachable(*TFDS_HOST):
        return load_tfds(name, download=True)
    tried.append(f"a tensorflow-datasets download ({TFDS_HOST[0]} unreachable)")
    raise DataNotFoundError(
        f"could not load {name}. Tried: " + "; ".join(tried) + ". "
        f"Provide the data with --data_dir=DIR, where DIR/{name}/ holds the four standard IDX files "
        f"({', '.join(f + '.gz' for pair in IDX_FILES.values() for f in pair)}), "
        "or run once where the network is reachable so that tensorflow-datasets can download it."
    )


def find_idx_folder(root: Path, name: str | None) -> Path | None:
    """The folder holding the four IDX files: ``root/name``, its hyphenated twin, or ``root`` itself."""
    return next((folder for folder in _candidates(root, name) if not _missing_idx_files(folder)), None)


def _candidates(root: Path, name: str | None) -> list[Path]:
    return [root] if name is None else [root / name, root / name.replace("_", "-"), root]


def _missing_idx_files(folder: Path) -> list[str]:
    return [f for pair in IDX_FILES.values() for f in pair if _idx_path(folder, f) is None]


def _what_is_missing(root: Path, name: str) -> str:
    """The files lacking in the first candidate folder that holds some of them, else the layout expected."""
    names = [f for pair in IDX_FILES.values() for f in pair]
    for folder in _candidates(root, name):
        missing = _missing_idx_files(folder)
        if len(missing) < len(names):
            return f"{folder} has some but lacks {', '.join(missing)} (.gz or not)"
    return (
        f"expected {root / name}/{IDX_FILES['train'][0]}.gz and the other three files ({', '.join(names)}, .gz or not)"
    )


def read_idx_folder(folder: Path, name: str) -> dict[str, Split]:
    """Read and check the train and test IDX files in ``folder``; ValueError naming a bad file."""
    out = {}
    for split, (images_file, labels_file) in IDX_FILES.items():
        images_path, labels_path = _idx_path(folder, images_file), _idx_path(folder, labels_file)
        images = idx.read_idx(images_path, idx.IMAGES_MAGIC)
        labels = idx.read_idx(labels_path, idx.LABELS_MAGIC)
        n = SIZES[name][split]
        if images.shape[1:] != (28, 28):
            raise ValueError(f"{images_path}: images of shape {images.shape[1:]}, expected (28, 28)")
        if len(images) != len(labels):
            raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
        if len(images) != n:
            log.warning("%s: %d examples, the standard %s %s split has %d", images_path, len(images), name, split, n)
        if labels.size and labels.max() >= NUM_CLASSES:
            raise ValueError(f"{labels_path}: label {int(labels.max())} outside [0, {NUM_CLASSES})")
        out[split] = (images[..., None], labels.astype(np.int32))
    return out


def tfds_prepared(name: str) -> bool:
    """Whether tensorflow-datasets has ``name`` prepared locally (checks files only, no download)."""
    tfds = import_tfds()
    try:
        return bool(tfds.builder(name).is_prepared())
    except Exception as e:  # a broken tfds cache is not fatal: other sources remain.
        log.warning("tensorflow-datasets could not open %s: %s", name, e)
        return False


def load_tfds(name: str, download: bool) -> dict[str, Split]:
    """Both splits of ``name`` from tensorflow-datasets as numpy arrays."""
    tfds = import_tfds()
    out = {}
    for split in SPLITS:
        # Batches, not batch_size=-1: the whole-split path aborts under tfds.testing.mock_data.
        batches = list(tfds.as_numpy(tfds.load(name, split=split, batch_size=10_000, download=download)))
        images = np.concatenate([b["image"] for b in batches]).astype(np.uint8)
        labels = np.concatenate([b["label"] for b in batches]).astype(np.int32)
        out[split] = (images, labels)
    return out


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
"""Fashion-MNIST's class names, by label (Xiao et al. 2017, Table 1)."""


def import_tf():
    """tensorflow, kept off every GPU and TPU (they belong to JAX), without its oneDNN start-up lines.

    TensorFlow only reads and decodes data here, so its oneDNN kernels, which
    print two lines at import that TF_CPP_MIN_LOG_LEVEL no longer hides, are off
    unless TF_ENABLE_ONEDNN_OPTS is set.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError):  # already initialised, or no such device type
            pass
    return tf


def import_tfds():
    """tensorflow_datasets, with TensorFlow kept off every GPU and TPU (``import_tf``).

    Its warning that a data set's folder has no dataset_info.json (a data set
    not prepared, which ``load_image_classification`` reports itself) is dropped.
    """
    import_tf()
    import tensorflow_datasets as tfds

    absl_log = logging.getLogger("absl")
    if _not_prepared_warning not in absl_log.filters:
        absl_log.addFilter(_not_prepared_warning)

    return tfds


def _not_prepared_warning(record: logging.LogRecord) -> bool:
    """False (drop it) for tfds's 'Variant folder ... has no dataset_info.json'."""
    return not str(record.msg).startswith("Variant folder") or "dataset_info.json" not in record.getMessage()


def _tfds_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", str(Path.home() / "tensorflow_datasets"))


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False
