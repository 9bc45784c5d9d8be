"""Regenerate the scoring classifiers that ship with mvae_jax (mvae_jax/weights/): train, test, checksum, record.

eval.py scores generated images with these CNNs (coherence). They are trained
on the real MNIST and Fashion-MNIST training sets, and (``polymnist``) on each
modality m0..m4 of PolyMNIST's training split as ``--data_dir`` provides it
(the official files, or built from ``DIR/mnist`` and
``DIR/polymnist_backgrounds``: the record keeps the data's fingerprint, and
eval.py uses them only for that data), with the recipe of
``classifiers.default_recipe`` (Adam, cosine decay, seed 0; 5 and 10 epochs),
tested on the test sets, and written as one .npz each; classifiers.json
records the recipe, the test accuracy, the SHA-256 of the file and the versions
that made it. eval.py verifies the checksum before it uses them.

    python scripts/train_classifiers.py --data_dir=../shared/datasets
    python scripts/train_classifiers.py --data_dir=../shared/datasets --names=polymnist

``--epochs=1 --out=/tmp/w`` makes a quick set elsewhere (for a test of this
script); only the defaults belong in mvae_jax/weights/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
import platform
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mvae_jax import classifiers  # noqa: E402
from mvae_jax.data import sources  # noqa: E402
from mvae_jax.files import atomic_write_text  # noqa: E402

NAMES = ("mnist", "fashion_mnist", "polymnist")
POLYMNIST_SHIPPED = 5  # m0..m4, PolyMNIST's modalities; m5..m9 (Extended PolyMNIST) are trained when first used


def training_sets(name: str, data_dir):
    """[(record key, (train images, labels), (test images, labels), fingerprint or None)], images float in [0, 1]."""
    if name != "polymnist":
        splits = sources.load_image_classification(name, data_dir)
        scaled = [(np.asarray(x, np.float32) / 255.0, y) for x, y in (splits["train"], splits["test"])]
        return [(name, *scaled, None)]
    from mvae_jax.config import Config
    from mvae_jax.data import load_dataset

    dataset = load_dataset(Config(dataset="polymnist", data_dir=data_dir, num_modalities=POLYMNIST_SHIPPED))
    out = []
    for m in dataset.train:
        own = classifiers.OwnSplit(dataset, m)
        splits = own.splits()
        out.append((f"polymnist/{m}", splits["train"], splits["test"], own.fingerprint))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data_dir", default=None, help="IDX files of MNIST and Fashion-MNIST (default: tfds); PolyMNIST's sources"
    )
    parser.add_argument("--out", default=str(classifiers.SHIPPED_DIR), help="folder of the .npz files and record")
    parser.add_argument(
        "--names", default="mnist,fashion_mnist", help=f"comma-separated, of {', '.join(NAMES)} (polymnist: m0..m4)"
    )
    parser.add_argument("--epochs", type=int, default=0, help="0: the default recipe's epochs for each data set")
    parser.add_argument("--train_examples", type=int, default=0, help="0: all (fewer only for a test of this script)")
    args = parser.parse_args(argv)
    names = [n for n in args.names.split(",") if n]
    if bad := [n for n in names if n not in NAMES]:
        parser.error(f"--names has {', '.join(bad)}; allowed: {', '.join(NAMES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = classifiers.shipped_record(out)
    for name in names:
        for key, (train_images, train_labels), (test_images, test_labels), fingerprint in training_sets(
            name, args.data_dir
        ):
            if args.train_examples:
                train_images, train_labels = train_images[: args.train_examples], train_labels[: args.train_examples]
            record[key] = train_one(
                key, out, recipe_of(key, args), (train_images, train_labels), (test_images, test_labels), argv
            )
            if fingerprint is not None:
                record[key]["data_sha256"] = fingerprint
            atomic_write_text(out / classifiers.SHIPPED_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")
            print(json.dumps({key: {k: record[key][k] for k in ("test_accuracy", "sha256", "train_seconds")}}))
    return 0


def recipe_of(key: str, args) -> classifiers.Recipe:
    recipe = classifiers.default_recipe(key)
    return dataclasses.replace(recipe, epochs=args.epochs) if args.epochs else recipe


def train_one(key: str, out: Path, recipe, train, test, argv) -> dict:
    """Train on ``train`` (images, labels), save as <key, / as ->.npz, test the saved file on ``test``; its record."""
    (train_images, train_labels), (test_images, test_labels) = train, test
    began = time.perf_counter()
    params = classifiers.train_classifier(
        train_images,
        train_labels,
        recipe,
        on_epoch=lambda e, loss: print(f"{key}: epoch {e}/{recipe.epochs} loss {loss:.4f}", flush=True),
    )
    seconds = time.perf_counter() - began
    file = f"{key.replace('/', '-')}.npz"
    digest = classifiers.save_weights(params, out / file)
    test_accuracy = classifiers.accuracy(classifiers.load_weights(out / file, digest), test_images, test_labels)
    return {
        "file": file,
        "sha256": digest,
        "test_accuracy": test_accuracy,
        "test_examples": int(len(test_labels)),
        "train_examples": int(len(train_labels)),
        "classes": int(np.max(train_labels)) + 1,
        "input_shape": list(np.shape(train_images)[1:]),
        "recipe": dataclasses.asdict(recipe),
        "version": classifiers.VERSION,
        "train_seconds": round(seconds, 1),
        "made_with": {"jax": jax.__version__, "python": platform.python_version(), "machine": platform.machine()},
        "command": "python scripts/train_classifiers.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
    }


if __name__ == "__main__":
    sys.exit(main())
