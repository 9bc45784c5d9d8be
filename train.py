"""Train a multimodal VAE: ``python train.py --model=jmvae --beta=2.0``.

The command is ``mvae_jax.commands.train`` (installed as the console script ``mvae-train``); this file runs it
from a clone, and ``import train`` gives its functions.
"""

from mvae_jax.commands.train import config_from_flags, configs_from_flags, main, make_parser, run

__all__ = ["config_from_flags", "configs_from_flags", "main", "make_parser", "run"]

if __name__ == "__main__":
    run()
