"""Regenerate the scoring classifiers that ship with mvae_jax (mvae_jax/weights/): train, test, checksum, record.

eval.py scores generated images with these CNNs (coherence). They are trained
on the real MNIST and Fashion-MNIST training sets with the recipe of
``classifiers.default_recipe`` (Adam, cosine decay, seed 0; 5 and 10 epochs),
tested on the test sets, and written as one .npz each; classifiers.json
records the recipe, the test accuracy, the SHA-256 of the file and the versions
that made it. eval.py verifies the checksum before it uses them.

    python scripts/train_classifiers.py --data_dir=../shared/datasets

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

NAMES = ("mnist", "fashion_mnist")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None, help="IDX files of MNIST and Fashion-MNIST (default: tfds)")
    parser.add_argument("--out", default=str(classifiers.SHIPPED_DIR), help="folder of the .npz files and record")
    parser.add_argument("--names", default=",".join(NAMES), help=f"comma-separated, of {', '.join(NAMES)}")
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
        recipe = classifiers.default_recipe(name)
        if args.epochs:
            recipe = dataclasses.replace(recipe, epochs=args.epochs)
        splits = sources.load_image_classification(name, args.data_dir)
        (train_images, train_labels), (test_images, test_labels) = splits["train"], splits["test"]
        if args.train_examples:
            train_images, train_labels = train_images[: args.train_examples], train_labels[: args.train_examples]
        began = time.perf_counter()
        params = classifiers.train_classifier(
            np.asarray(train_images, np.float32) / 255.0,
            train_labels,
            recipe,
            on_epoch=lambda e, loss: print(f"{name}: epoch {e}/{recipe.epochs} loss {loss:.4f}", flush=True),
        )
        seconds = time.perf_counter() - began
        file = f"{name}.npz"
        digest = classifiers.save_weights(params, out / file)
        test_accuracy = classifiers.accuracy(
            classifiers.load_weights(out / file, digest), np.asarray(test_images, np.float32) / 255.0, test_labels
        )
        record[name] = {
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
        atomic_write_text(out / classifiers.SHIPPED_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")
        print(json.dumps({name: {k: record[name][k] for k in ("test_accuracy", "sha256", "train_seconds")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
