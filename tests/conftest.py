"""Shared fixtures: the real data folder (or a skip) and a tiny IDX data folder written per test session."""

from __future__ import annotations

import os
from pathlib import Path
import tempfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# train.py and eval.py started by the tests share one compilation cache, not the user's ~/.cache/mvae_jax/jax.
os.environ.setdefault("MVAE_JAX_COMPILATION_CACHE", str(Path(tempfile.gettempdir()) / "mvae_jax_tests_jax_cache"))
# Every program into that cache, however fast it compiles (train.py and eval.py keep only those over 0.2 s):
# the tests' subprocesses compile the same small programs again and again.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """The tests' own programs go to the same persistent compilation cache as their train.py and eval.py.

    Many tests build the same model with the same settings and compile the same programs; JAX's in-memory
    cache is per function object, the persistent one is per program, so a second test (or the other xdist
    worker) loads what the first compiled. Off with MVAE_JAX_COMPILATION_CACHE=off.
    """
    from mvae_jax import cli

    cli.enable_compilation_cache()  # with the minimum compile time of the variable set above


REAL_DATA = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """../shared/datasets with real MNIST and Fashion-MNIST IDX files, or skip."""
    if not (REAL_DATA / "mnist").is_dir() or not (REAL_DATA / "fashion_mnist").is_dir():
        pytest.skip(f"real MNIST / Fashion-MNIST IDX files not found at {REAL_DATA} (see docs/datasets.md)")
    return REAL_DATA


def write_tiny_idx_dataset(root: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    """DIR/mnist and DIR/fashion_mnist with small IDX files of random images; every class present."""
    from mvae_jax.data import idx, sources

    rng = np.random.default_rng(seed)
    for name in ("mnist", "fashion_mnist"):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", n_train), ("test", n_test)):
            images_file, labels_file = sources.IDX_FILES[split]
            labels = np.arange(n) % 10
            rng.shuffle(labels)
            # Class-dependent brightness so that the label is learnable from the image.
            images = (rng.random((n, 28, 28)) * 60 + labels[:, None, None] * 20).astype(np.uint8)
            idx.write_idx(folder / f"{images_file}.gz", images)
            idx.write_idx(folder / f"{labels_file}.gz", labels.astype(np.uint8))
    return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_tiny_idx_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture
def tiny_config(tiny_data_dir, tmp_path):
    """A small JMVAE run on the tiny data: fast enough for unit tests."""
    from mvae_jax.config import Config

    return Config(
        data_dir=str(tiny_data_dir),
        workdir=str(tmp_path / "run"),
        hidden_dims=(32,),
        latent_dim=4,
        batch_size=20,
        epochs=2,
    )


def write_tiny_celeba(root: Path, n: int = 24, seed: int = 0) -> Path:
    """DIR in CelebA's official layout: n JPEGs of 218x178 and the two text files, as the originals format them.

    Partition: the first 2/3 train, then validation and test in equal parts.
    The image's red level follows the attribute Male (so the pairing is learnable).
    """
    from mvae_jax.data import celeba, sources

    tf = sources.import_tf()
    rng = np.random.default_rng(seed)
    (root / celeba.IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    values = rng.choice([-1, 1], size=(n, len(celeba.ATTRIBUTES)))
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    male = celeba.ATTRIBUTES.index("Male")
    for f, row in zip(files, values):
        image = rng.integers(0, 80, size=celeba.ORIGINAL_SHAPE, dtype=np.uint8)
        image[..., 0] += np.uint8(150 if row[male] > 0 else 20)
        (root / celeba.IMAGES_DIR / f).write_bytes(tf.io.encode_jpeg(image).numpy())
    lines = [str(n), " ".join(celeba.ATTRIBUTES) + " "]
    lines += [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values)]
    (root / celeba.ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n")
    train, valid = 2 * n // 3, n // 6
    parts = [0 if i < train else 1 if i < train + valid else 2 for i in range(n)]
    (root / celeba.PARTITION_FILE).write_text("".join(f"{f} {p}\n" for f, p in zip(files, parts)))
    return root


@pytest.fixture(scope="session")
def tiny_celeba_dir(tmp_path_factory) -> Path:
    return write_tiny_celeba(tmp_path_factory.mktemp("celeba"))
