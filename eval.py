"""Evaluate a trained run: ``python eval.py --workdir=runs/jmvae_beta2.0``.

Rebuilds the model from the workdir's config.json and a checkpoint (the latest
by default), scores cross-modal label accuracy on the test set, prints it and
writes <workdir>/eval/metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path
import sys

from mvae_jax import cli


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="eval.py")
    parser.add_argument("--workdir", required=True, help="a workdir written by train.py")
    parser.add_argument("--step", type=int, default=None, help="epoch of the checkpoint to evaluate (default: latest)")
    parser.add_argument("--data_dir", default=None, help="as in train.py (default: the run's own data_dir)")
    parser.add_argument("--verbose", action="store_true", help="also show INFO logs of JAX, orbax and TensorFlow")
    return parser


def main(argv=None) -> None:
    args = make_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    with cli.user_errors("eval.py"):
        from mvae_jax import evaluation, networks, training
        from mvae_jax.config import atomic_write_text
        from mvae_jax.data import load_dataset

        config, model, state = training.restore_model(args.workdir, args.step)
        params = state.params
        if args.data_dir is not None:
            config = dataclasses.replace(config, data_dir=args.data_dir)
        dataset = load_dataset(config)
        label = next(m.name for m in model.modalities if m.likelihood == "categorical")
        others = [n for n in model.names if n != label]
        coherence = {}
        for r in range(1, len(others) + 1):
            for present in itertools.combinations(others, r):
                key = f"{','.join(present)}->{label}"
                coherence[key] = evaluation.label_accuracy(model, params, dataset.test, present, label)
        metrics = {
            "epoch": int(state.epoch),
            "params": networks.count_params(params),
            "coherence": coherence,
        }
        path = Path(args.workdir) / "eval" / "metrics.json"
        atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
