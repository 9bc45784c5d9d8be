"""Evaluate a trained run: ``python eval.py --workdir=runs/jmvae_beta2.0``.

The command is ``mvae_jax.commands.evaluate`` (installed as the console script ``mvae-eval``); this file runs
it from a clone, and ``import eval`` gives its functions (``eval.SECTIONS``: the sections, in the order they run).
"""

from mvae_jax.commands.evaluate import __getattr__, check_args, compare, evaluate, main, make_parser, run  # noqa: F401

__all__ = ["check_args", "compare", "evaluate", "main", "make_parser", "run"]

if __name__ == "__main__":
    run()
