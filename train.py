"""Train a multimodal VAE: ``python train.py --model=jmvae --beta=2.0``.

Flags -> a validated Config -> mvae_jax.training.train_and_evaluate. Running
again on the same --workdir resumes from its latest checkpoint: flags not given
are taken from the saved config.json, and a given flag that contradicts it is
an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mvae_jax import config as config_lib
from mvae_jax import cli

HELP = {
    "model": "model to train",
    "dataset": "paired data set",
    "beta": "weight of KL(q(z|all) || p(z)), the paper's Eq. (1)",
    "alpha": "JMVAE-kl weight of sum_m KL(q(z|all) || q(z|x_m))",
    "epochs": "train until this many epochs are done (counting resumed ones)",
    "batch_size": "examples per step (a multiple of the device count)",
    "learning_rate": "Adam learning rate",
    "latent_dim": "size of z",
    "hidden_dims": "widths of the hidden layers of every MLP, comma separated",
    "seed": "seed of initialisation, noise and batch order",
    "pair_seed": "seed of the MNIST / Fashion-MNIST pairing",
    "data_dir": "folder with mnist/ (and fashion_mnist/ for trimodal) IDX files (default: tensorflow-datasets)",
    "workdir": "where config, metrics and checkpoints go (default: runs/<model>_beta<beta>)",
    "keep_checkpoints": "how many of the latest epoch checkpoints to keep",
    "likelihood_weights": "telbo, mvae, mmvae, mopoe: weight lambda of each modality's log-likelihood, "
                          "comma separated in the data set's modality order (x,y,w); empty = all 1",
    "num_subsets": "mvae: random-subset ELBOs per example and step; pemvae: random subsets per example and step",
    "warmup_epochs": "pemvae: epochs of joint ELBO only, before the encoder also learns subsets",
    "num_samples": "mmvae: importance samples K per modality (DReG estimator)",
    "kl_warmup_epochs": "all but mmvae: KL weight rises linearly from 0 to beta over this many epochs "
                        "(beta * min(1, epochs done / N)); 0 = no warm-up",
}


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers, e.g. 512,512") from None


def _float_tuple(text: str) -> tuple[float, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers, e.g. 1,1,50") from None


def make_parser() -> argparse.ArgumentParser:
    from mvae_jax.data import DATASETS
    from mvae_jax.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="train.py")
    types = {"hidden_dims": _int_tuple, "likelihood_weights": _float_tuple}
    choices = {"model": sorted(MODELS), "dataset": sorted(DATASETS)}
    for field in dataclasses.fields(config_lib.Config):
        default = field.default
        kind = types.get(field.name) or (str if default is None else type(default))
        shown = (",".join(map(str, default)) or "all 1") if isinstance(default, tuple) else default
        help_text = HELP[field.name] + ("" if default is None else f" (default: {shown})")
        parser.add_argument(f"--{field.name}", type=kind, choices=choices.get(field.name),
                            default=argparse.SUPPRESS, help=help_text)
    parser.add_argument("--verbose", action="store_true", help="also show INFO logs of JAX, orbax and TensorFlow")
    return parser


def config_from_flags(flags: dict) -> config_lib.Config:
    """The flags given, on top of the workdir's saved config if it has one, else on top of the defaults.

    A given flag that contradicts the saved run is reported by training.check_workdir.
    """
    config = config_lib.Config(**flags)
    try:
        saved = config_lib.load_config(config.workdir)
    except FileNotFoundError:
        return config
    return dataclasses.replace(saved, **{**flags, "workdir": config.workdir})


def main(argv=None) -> None:
    flags = vars(make_parser().parse_args(argv))
    verbose = flags.pop("verbose")
    cli.setup_logging(verbose)
    with cli.user_errors("train.py"):
        config = config_from_flags(flags).validate()
        from mvae_jax import training

        training.train_and_evaluate(config, cli.TqdmReporter())


if __name__ == "__main__":
    main(sys.argv[1:])
