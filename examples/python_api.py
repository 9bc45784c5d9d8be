"""mvae_jax from Python, not the command line: train, restore, encode, decode, score, and the ELBO by hand.

    python examples/python_api.py --data_dir=../shared/datasets          # about a minute on 2 CPU cores

Each step prints what it got. docs/python.md ("Using mvae_jax from Python") walks
through the same calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import tempfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mvae_jax import classifiers, losses, training  # noqa: E402
from mvae_jax.config import Config  # noqa: E402
from mvae_jax.data import load_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None, help="MNIST and Fashion-MNIST IDX files (default: tfds)")
    parser.add_argument("--workdir", default=None, help="where the run is written (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=512, help="units of each of the 2 hidden layers")
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mvae_jax_example_")) / "jmvae"

    # 1. Train from Python: a Config is what train.py builds from its flags (validated the same way).
    config = Config(
        model="jmvae",
        beta=1.0,
        epochs=args.epochs,
        hidden_dims=(args.hidden, args.hidden),
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        workdir=str(workdir),
    )
    training.train_and_evaluate(config)  # writes config.json, metrics.jsonl and checkpoints/ in workdir

    # 2. Restore a run (any workdir train.py wrote): its config, the model's pure functions, the TrainState.
    config, model, state = training.restore_model(workdir)
    params = state.params
    print(f"restored {config.model} at epoch {int(state.epoch)}; modalities {model.names}")

    # 3. Its data: {modality: (n, *shape)} float32 arrays per split; labels are the argmax of w.
    dataset = load_dataset(config)
    test, labels = dataset.test, dataset.labels("test")
    n = min(256, len(labels))
    batch = {name: jnp.asarray(values[:n]) for name, values in test.items()}

    # 4. Encode any non-empty subset: the mean and log variance of q(z | subset).
    mu, logvar = model.encode(params, {"x": batch["x"]}, ("x",))
    print(f"q(z|x): mean {mu.shape}, log variance {logvar.shape}")

    # 5. Decode: logits, not means. Each modality turns its logits into its mean (sigmoid / softmax).
    logits = model.decode(params, mu)
    means = {m.name: m.mean(logits[m.name]) for m in model.modalities}
    print("decoded from q(z|x):", {k: tuple(v.shape) for k, v in means.items()})

    # 6. Score x -> y with the shipped Fashion-MNIST classifier (the one eval.py uses), x -> w by argmax.
    scorer, info = classifiers.load_shipped("fashion_mnist")
    x_to_y = float(np.mean(classifiers.predict(scorer, means["y"]) == labels[:n]))
    x_to_w = float(np.mean(np.argmax(means["w"], axis=-1) == labels[:n]))
    print(
        f"coherence on {n} test pairs: x->y {x_to_y:.3f}, x->w {x_to_w:.3f} (scorer accuracy {info['test_accuracy']})"
    )

    # 7. The multimodal ELBO (paper Eq. 1) with the model's own encoder and decoder: per example, you reduce.
    posterior = model.encode(params, batch, model.names)
    elbo, terms = losses.multimodal_elbo(
        jax.random.PRNGKey(0), posterior, lambda z: model.decode(params, z), batch, model.modalities, beta=config.beta
    )
    print(f"ELBO of {n} test pairs: {float(jnp.mean(elbo)):.2f} nats; terms {sorted(terms)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
