"""What train.py and eval.py share: logging set-up, a tqdm progress bar, clean error exits."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

# Expected, user-facing failures: reported in one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, FloatingPointError)


def setup_logging(verbose: bool = False, level: str = "INFO") -> None:
    """``level`` logs of mvae_jax on stderr; TensorFlow, absl and orbax kept to warnings."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)
    if not verbose:
        for name in ("absl", "jax", "orbax", "tensorflow"):
            logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def user_errors(prog: str):
    """Turn USER_ERRORS into ``prog: error: message`` and exit status 2."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)


class TqdmReporter:
    """A progress bar per epoch with the running loss (training.Reporter)."""

    def __init__(self):
        self.bar = None

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", dynamic_ncols=True)

    def step(self, index, running_loss) -> None:
        index = int(index)
        if index > self.bar.n:
            self.bar.update(index - self.bar.n)
        self.bar.set_postfix(loss=_losses(running_loss), refresh=False)

    def epoch_end(self, metrics) -> None:
        self.bar.set_postfix(loss=_losses(metrics["loss"]), samples_per_s=f"{metrics['samples_per_s']:.0f}")
        self.bar.close()


def _losses(value) -> str:
    """One loss, or the losses of a beta sweep separated by slashes."""
    import numpy as np

    return "/".join(f"{v:.3f}" for v in np.atleast_1d(np.asarray(value, dtype=float)))
