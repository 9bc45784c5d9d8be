"""Train a multimodal VAE: ``python train.py --model=jmvae --beta=2.0`` (installed: ``mvae-train --model=jmvae``).

``--beta=0.5,1,2`` trains one run per beta in a single compiled program (a
sweep), each in its own workdir: ``<workdir>/beta<b>`` with --workdir, else
runs/<model>_beta<b>. ``--seed=0,1,2`` does the same for seeds (``<workdir>/seed<s>``,
else runs/<model>_beta<b>/seed<s>; each run has its own initialisation, batch
order and noise); both together train every (beta, seed) pair
(``<workdir>/beta<b>_seed<s>``).

``--config=configs/<recipe>.py`` starts from a recipe's settings, the flags given
overriding them (mvae_jax.recipes).

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


# How a flag's text is read, by the option's kind; beta and seed also take several values: a sweep's axes.
_PARSERS = {"int": int, "float": float, "str": str, "path": str, "floats": _float_tuple, "strs": _str_tuple}
SWEEP_AXES = {"beta": _betas, "seed": _seeds}


def make_parser() -> argparse.ArgumentParser:
    """One flag per option of every block (config_lib.OPTIONS), its help and choices from its declaration."""
    from mvae_jax.data import DATASETS
    from mvae_jax.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="train.py")
    registries = {"model": sorted(MODELS), "dataset": sorted(DATASETS)}
    for name, option in config_lib.OPTIONS.items():
        if option.kind == "bool":
            parser.add_argument(
                f"--{name}", action="store_true", default=argparse.SUPPRESS, help=config_lib.help_line(name)
            )
            continue
        kind = SWEEP_AXES.get(name) or (
            (_widths_or_empty if option.empty else _int_tuple) if option.kind == "ints" else _PARSERS[option.kind]
        )
        parser.add_argument(
            f"--{name}",
            type=kind,
            choices=registries.get(name) or option.choices or None,
            default=argparse.SUPPRESS,
            help=config_lib.help_line(name),
        )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="a recipe: a Python file whose get_config() returns settings named as these flags (configs/ holds the "
        "published ones; its docstring says the command, the result and the time); flags given override it",
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
    cli.preload_plugins("train.py", sys.argv[1:] if argv is None else argv)  # their models join --model's choices
    flags = vars(make_parser().parse_args(argv))
    verbose, mode, cache = flags.pop("verbose"), flags.pop("distributed"), flags.pop("compilation_cache")
    recipe = flags.pop("config")
    cli.setup_logging(verbose)
    aborted = (
        "aborted at once (Ctrl-C twice): the epoch checkpoints written before are intact; run the same "
        "command to resume from the latest"
    )
    with cli.user_errors("train.py", aborted):
        if recipe is not None:  # before anything starts: a bad recipe is named at once
            from mvae_jax import recipes

            flags = {**recipes.load(recipe), **flags}
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


def run() -> None:
    """The console script ``mvae-train`` and ``python train.py``: ``main`` on the command line's arguments."""
    main(sys.argv[1:])


if __name__ == "__main__":
    run()
