"""Progress as a person watches it: a tqdm bar on a terminal or in a notebook, plain log lines in a log file.

``TqdmReporter`` is the ``training.Reporter`` that train.py and ``mvae_jax.train`` show; ``progress_bar`` the bar
of eval.py's steps. The library's computations never print; these are what the front ends hand them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time


class LineProgress:
    """tqdm's interface for output that is not a terminal (a log file, CI): a plain log line at every
    ``every`` of the total, with the elapsed time and the ETA, instead of carriage-return redraws."""

    def __init__(self, total: int, desc: str, every: float = 0.25, unit: str = "it", last_line: bool = True):
        self.total, self.desc, self.every, self.unit, self.last_line = max(int(total), 1), desc, every, unit, last_line
        self.n, self.postfix, self._shown, self._closed, self._start = 0, {}, 0, False, time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        reached = int(self.n / self.total / self.every + 1e-9)  # how many ``every`` marks are passed
        if reached > self._shown and self.n < self.total:
            self._shown = reached
            self._line()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        """The last line, once, with ``last_line``: 'done' for a complete total (a stopped one ends without it)."""
        if self.last_line and self.n >= self.total and not self._closed:
            self._line()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self) -> None:
        elapsed = time.perf_counter() - self._start
        eta = elapsed * (self.total - self.n) / self.n if 0 < self.n < self.total else 0.0
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        when = f"ETA {eta:.0f} s" if self.n < self.total else "done"
        logging.getLogger("mvae_jax").info(
            "%s: %d/%d %s (%.0f%%), %.0f s, %s%s",
            self.desc,
            self.n,
            self.total,
            self.unit,
            100 * self.n / self.total,
            elapsed,
            when,
            extra,
        )


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (a notebook, Colab): its output is no terminal, yet shows a bar."""
    return "ipykernel" in sys.modules


def progress_bar(total: int, desc: str, unit: str = "it", leave: bool = True, last_line: bool = True):
    """A tqdm bar (with its ETA) on a terminal or in a notebook; elsewhere a ``LineProgress``, whose lines suit a
    log file."""
    if in_notebook():
        from tqdm.auto import tqdm  # a widget where ipywidgets is installed, text otherwise

        return tqdm(total=total, desc=desc, unit=unit, leave=leave)
    if not sys.stderr.isatty():
        return LineProgress(total, desc, unit=unit, last_line=last_line)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=leave)


class TqdmReporter:
    """A progress bar per epoch with the running loss (training.Reporter); plain lines if not a terminal."""

    def __init__(self):
        self.bar = None

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.bar = progress_bar(steps, f"epoch {epoch}/{epochs}", unit="step", last_line=False)  # the loop logs it

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


@contextlib.contextmanager
def steps(total: int, desc: str):
    """A ``progress_bar`` of ``total`` steps as ``api.evaluate``'s progress: yields its ``update(n)``, and fills
    the bar when the block ends (a section may count fewer steps than it announced)."""
    with progress_bar(total, desc) as bar:
        yield bar.update
        bar.update(bar.total - bar.n)
