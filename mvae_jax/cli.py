"""What train.py and eval.py share: logging set-up, a tqdm progress bar, clean error exits."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

from mvae_jax import errors

# Expected, user-facing failures: reported in one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, FloatingPointError, errors.CheckpointError)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def setup_logging(verbose: bool = False, level: str = "INFO") -> None:
    """``level`` logs of mvae_jax on stderr; TensorFlow, absl and orbax kept to warnings."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)
    if not verbose:
        for name in ("absl", "jax", "orbax", "tensorflow"):
            logging.getLogger(name).setLevel(logging.WARNING)
        for name in ("absl", "asyncio"):
            logging.getLogger(name).addFilter(_drop_traceback)
        sys.unraisablehook = _log_unraisable


def _log_unraisable(unraisable) -> None:
    """An exception Python could not raise (orbax's asyncio threads after a failed save, at exit): one debug
    line instead of a traceback (--verbose keeps Python's report)."""
    logging.getLogger(__name__).debug("ignored: %s: %s", type(unraisable.exc_value).__name__, unraisable.exc_value)


def _drop_traceback(record: logging.LogRecord) -> bool:
    """Keep a library's error line but not its traceback: orbax's background save logs one when it fails,
    which train.py reports itself in one line (--verbose shows them)."""
    record.exc_info, record.exc_text = None, None
    return True


@contextlib.contextmanager
def user_errors(prog: str):
    """Turn USER_ERRORS into ``prog: error: message`` and exit status 2; errors.Interrupted into 128 + signal."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except errors.Interrupted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(128 + (e.signal_number or signal.SIGINT))


class StopRequest:
    """Callable: True once SIGINT or SIGTERM arrived (the first asks for a clean stop; a second SIGINT aborts)."""

    def __init__(self):
        self.signal_number = None

    def __call__(self) -> bool:
        return self.signal_number is not None

    def _handle(self, number, frame) -> None:
        if self.signal_number is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, the last checkpoint stays as it is
        self.signal_number = number
        logging.getLogger(__name__).warning(
            "%s: checkpointing at the next step boundary, then exiting%s", signal.Signals(number).name,
            " (Ctrl-C again to abort at once)" if number == signal.SIGINT else "")


@contextlib.contextmanager
def stop_on_signals():
    """Yield a StopRequest fed by SIGINT and SIGTERM; errors.Interrupted raised inside gets its signal number."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield request
        return
    previous = {number: signal.signal(number, request._handle) for number in STOP_SIGNALS}
    try:
        yield request
    except errors.Interrupted as e:
        e.signal_number = request.signal_number
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


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
        self.close()

    def close(self) -> None:
        """End the bar (also of an epoch that stopped part-way)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _losses(value) -> str:
    """One loss, or the losses of a beta sweep separated by slashes."""
    import numpy as np

    return "/".join(f"{v:.3f}" for v in np.atleast_1d(np.asarray(value, dtype=float)))
