"""Train a multimodal VAE: ``python train.py --model=jmvae --beta=2.0``.

``--beta=0.5,1,2`` trains one run per beta in a single compiled program (a
sweep), each in its own workdir: ``<workdir>/beta<b>`` with --workdir, else
runs/<model>_beta<b>. ``--seed=0,1,2`` does the same for seeds (``<workdir>/seed<s>``,
else runs/<model>_beta<b>/seed<s>; each run has its own initialisation, batch
order and noise); both together train every (beta, seed) pair
(``<workdir>/beta<b>_seed<s>``).

Flags -> a validated Config -> mvae_jax.training.train_and_evaluate. Running
again on the same --workdir resumes from its latest checkpoint: flags not given
are taken from the saved config.json, and a given flag that contradicts it is
an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from mvae_jax import cli, distributed
from mvae_jax import config as config_lib

HELP = {
    "model": "model to train",
    "dataset": "paired data set",
    "beta": "weight of KL(q(z|all) || p(z)), the paper's Eq. (1); several, comma separated, train a sweep "
    "(one run per beta, one compiled program)",
    "alpha": "JMVAE-kl weight of sum_m KL(q(z|all) || q(z|x_m))",
    "epochs": "train until this many epochs are done (counting resumed ones)",
    "batch_size": "examples per step (a multiple of the device count)",
    "learning_rate": "Adam learning rate",
    "latent_dim": "size of z",
    "hidden_dims": "widths of the hidden layers of every MLP, comma separated",
    "decoder_hidden_dims": "widths of the hidden layers of the MLP decoders, comma separated",
    "activation": "nonlinearity of every MLP: relu, or swish = x sigmoid(x) (MVAE's)",
    "seed": "seed of initialisation, noise and batch order; several, comma separated, train a sweep (one run "
    "per seed, one compiled program)",
    "pair_seed": "seed of the MNIST / Fashion-MNIST pairing",
    "validation": "trimodal, mnist_label, polymnist: training pairs held out as the validation split (the last N of a "
    "fixed permutation, the same for every run), scored after every epoch (validation_<term> in metrics.jsonl) and the "
    "best epoch kept in best_checkpoint/ (eval.py --step=best); eval.py --split=validation scores them; 0 = none",
    "data_dir": "folder with mnist/ (and fashion_mnist/ for trimodal) IDX files (default: tensorflow-datasets)",
    "workdir": "where config, metrics and checkpoints go (default: runs/<model>_beta<beta>)",
    "keep_checkpoints": "how many of the latest epoch checkpoints to keep",
    "tensorboard_images": "TensorBoard event files in the workdir hold the epoch's loss terms and the config; every "
    "N epochs also a grid of cross-modal samples (0: none)",
    "likelihood_weights": "telbo, mvae, mmvae, mopoe: weight lambda of each modality's log-likelihood, "
    "comma separated in the data set's modality order (x,y,w); empty = all 1",
    "num_subsets": "mvae: random-subset ELBOs per example and step; pemvae: random subsets per example and step",
    "warmup_epochs": "pemvae: epochs of joint ELBO only, before the encoder also learns subsets",
    "subset_sampling": "pemvae: random = --num_subsets random proper subsets per example and step; all = every "
    "proper subset every step",
    "unimodal_weight": "pemvae: weight of the subset terms of single-modality subsets (others 1)",
    "subset_objective": "pemvae: what a subset S trains: elbo_kl = its ELBO + KL(sg q(z|all) || q(z|S)); kl = the "
    "KL alone; elbo = the ELBO alone",
    "subset_kl_weight": "pemvae: weight of KL(sg q(z|all) || q(z|S)) (as JMVAE's alpha)",
    "subset_targets": "pemvae: what the subset ELBO reconstructs from z ~ q(z|S): present = the modalities in S; "
    "all = every modality",
    "freeze_encoder": "pemvae: after the warm-up, train only the mask tokens of the encoder (the joint "
    "encoder's networks stay as pretrained); the decoders keep training",
    "fusion": "pemvae: how present modality features combine: tokens = sum, absent ones replaced by learned mask "
    "tokens; mean = mean over the present ones; zero = sum, absent ones 0",
    "modality_dropout": "pemvae: in the joint ELBO, drop each modality from the encoder's input with this "
    "probability per example (one always stays); every modality is still reconstructed",
    "num_samples": "mmvae: importance samples K per modality (DReG estimator)",
    "kl_warmup_epochs": "all but mmvae: KL weight rises linearly from 0 to beta over this many epochs "
    "(beta * min(1, epochs done / N)); 0 = no warm-up",
    "attributes": "celeba: the attributes modelled, comma separated (default: all 40)",
    "num_modalities": "polymnist: image modalities m0..m(N-1), 2 to 10 (5: PolyMNIST; more: the Extended PolyMNIST)",
    "conv_widths": "celeba: channels of the conv encoder's stride-2 layers (the decoder mirrors them); "
    "64 / 2^len must be an integer",
    "adversarial": "add a discriminator per image modality and its non-saturating GAN loss (VAE-GAN)",
    "adv_weight": "adversarial: weight lambda of the generator's GAN loss",
    "disc_learning_rate": "adversarial: the discriminators' Adam learning rate (b1 = 0.5)",
    "r1_weight": "adversarial: gamma of the R1 penalty (gamma / 2) ||grad D(real)||^2; 0 = off",
    "disc_widths": "adversarial: channels of the conv discriminator's stride-2 conv layers",
    "disc_network": "adversarial: auto = each image's discriminator follows its modality's network (a conv net for "
    "conv modalities, an MLP for MLP ones, e.g. the trimodal images); conv = a conv net for every image",
    "disc_hidden_dims": "adversarial: widths of the MLP discriminator's hidden layers (leaky ReLU)",
    "adv_warmup_epochs": "adversarial: epochs before the generator's GAN loss counts (the discriminator learns "
    "meanwhile)",
    "precision": "bf16: matmuls and convolutions in bfloat16 (for GPUs and TPUs), params, optimizer and losses in "
    "float32; may change when resuming",
    "nan_rollbacks": "on a non-finite loss or parameter, roll back to the last good checkpoint and multiply the "
    "learning rates by --nan_lr_factor, at most this many times per launch; 0 = stop with an error",
    "nan_lr_factor": "what each NaN rollback multiplies the learning rates by (saved in config.json)",
}


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers, e.g. 512,512") from None


def _widths_or_empty(text: str) -> tuple[int, ...]:
    return _int_tuple(text) if text.strip() else ()


def _float_tuple(text: str) -> tuple[float, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers, e.g. 1,1,50") from None


def _str_tuple(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _betas(text: str):
    try:
        values = _float_tuple(text)
    except argparse.ArgumentTypeError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or comma-separated numbers, e.g. 0.5,1,2")
    return values[0] if len(values) == 1 else values


def _seeds(text: str):
    try:
        values = _int_tuple(text)
    except argparse.ArgumentTypeError:
        values = ()
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: an integer >= 0 or distinct ones, comma separated")
    return values[0] if len(values) == 1 else values


def make_parser() -> argparse.ArgumentParser:
    from mvae_jax.data import DATASETS
    from mvae_jax.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="train.py")
    types = {
        "hidden_dims": _int_tuple,
        "decoder_hidden_dims": _widths_or_empty,
        "likelihood_weights": _float_tuple,
        "conv_widths": _int_tuple,
        "disc_widths": _int_tuple,
        "disc_hidden_dims": _int_tuple,
        "attributes": _str_tuple,
        "beta": _betas,
        "seed": _seeds,
    }
    choices = {
        "model": sorted(MODELS),
        "dataset": sorted(DATASETS),
        "precision": config_lib.PRECISIONS,
        "activation": config_lib.ACTIVATIONS,
        "disc_network": config_lib.DISC_NETWORKS,
        "subset_sampling": config_lib.SUBSET_SAMPLINGS,
        "subset_objective": config_lib.SUBSET_OBJECTIVES,
        "subset_targets": config_lib.SUBSET_TARGETS,
        "fusion": config_lib.FUSIONS,
    }
    for field in dataclasses.fields(config_lib.Config):
        default = field.default
        kind = types.get(field.name) or (str if default is None else type(default))
        empty = {"likelihood_weights": "all 1", "decoder_hidden_dims": "hidden_dims reversed"}.get(field.name, "")
        shown = (",".join(map(str, default)) or empty) if isinstance(default, tuple) else default
        help_text = HELP[field.name] + (
            "" if default is None or default == () and field.name == "attributes" else f" (default: {shown})"
        )
        if isinstance(default, bool):
            parser.add_argument(
                f"--{field.name}", action="store_true", default=argparse.SUPPRESS, help=HELP[field.name]
            )
            continue
        parser.add_argument(
            f"--{field.name}", type=kind, choices=choices.get(field.name), default=argparse.SUPPRESS, help=help_text
        )
    parser.add_argument(
        "--distributed",
        choices=distributed.MODES,
        default="auto",
        help="start JAX's multi-process runtime: auto = when the environment describes a "
        "multi-process job (JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID, "
        "srun, mpirun, a GKE TPU pod); on = always (Cloud TPU VM pod slices) (default: auto)",
    )
    parser.add_argument("--verbose", action="store_true", help="also show INFO logs of JAX, orbax and TensorFlow")
    cli.add_compilation_cache_flag(parser)
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


def configs_from_flags(flags: dict) -> list[config_lib.Config]:
    """One Config per (beta, seed): a single run, or the runs of a sweep with a workdir each."""
    betas, seeds = flags.get("beta"), flags.get("seed")
    swept = {"beta": isinstance(betas, tuple), "seed": isinstance(seeds, tuple)}
    if not any(swept.values()):
        return [config_from_flags(flags)]
    configs = []
    for beta in betas if swept["beta"] else (betas,):
        for seed in seeds if swept["seed"] else (seeds,):
            member = {k: v for k, v in flags.items() if k not in ("beta", "seed", "workdir")}
            member.update({k: v for k, v in (("beta", beta), ("seed", seed)) if v is not None})
            parts = ([f"beta{float(beta)}"] if swept["beta"] else []) + ([f"seed{seed}"] if swept["seed"] else [])
            name = "_".join(parts)  # beta<b>, seed<s> or beta<b>_seed<s>
            if "workdir" in flags:
                member["workdir"] = os.path.join(flags["workdir"], name)
            elif swept["seed"]:  # runs/<model>_beta<b>/seed<s>: the default workdir of the member's beta
                member["workdir"] = os.path.join(config_lib.Config(**member).workdir, f"seed{seed}")
            configs.append(config_from_flags(member))
    return configs


def main(argv=None) -> None:
    flags = vars(make_parser().parse_args(argv))
    verbose, mode, cache = flags.pop("verbose"), flags.pop("distributed"), flags.pop("compilation_cache")
    cli.setup_logging(verbose)
    aborted = (
        "aborted at once (Ctrl-C twice): the epoch checkpoints written before are intact; run the same "
        "command to resume from the latest"
    )
    with cli.user_errors("train.py", aborted):
        distributed.initialize(mode)  # before any computation
        cli.enable_compilation_cache(cache)
        primary = distributed.is_primary()
        if not primary:  # one process reports; the others log warnings and errors only
            cli.setup_logging(verbose, level="WARNING")
        configs = [c.validate(given=flags) for c in configs_from_flags(flags)]
        from mvae_jax import training

        done = [max(training.saved_epochs(c.workdir), default=0) for c in configs]
        if all(d >= c.epochs for d, c in zip(done, configs)):
            print(
                f"train.py: nothing to do: {', '.join(str(c.workdir) for c in configs)} has {min(done)} epochs "
                f"(--epochs={configs[0].epochs}); give a larger --epochs to train on",
                file=sys.stderr,
            )
            return
        reporter = cli.TqdmReporter()  # shown by process 0 only
        try:
            with cli.stop_on_signals() as stop:
                training.train_sweep(configs, reporter, stop=stop)
        finally:
            reporter.close()
        if primary:
            for c in configs:
                print(
                    f"train.py: the run is in {c.workdir}; evaluate it with: python eval.py --workdir={c.workdir}",
                    file=sys.stderr,
                )


if __name__ == "__main__":
    main(sys.argv[1:])
