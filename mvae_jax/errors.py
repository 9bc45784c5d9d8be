"""Failures that the command line reports in one line, without a traceback."""

from __future__ import annotations


class CheckpointError(OSError):
    """A checkpoint could not be written (full disk, lost permissions); the earlier checkpoints are intact."""


class Interrupted(Exception):
    """Training stopped on request (SIGINT/SIGTERM) at a step boundary, after checkpointing its state."""

    def __init__(self, message: str, signal_number: int | None = None):
        super().__init__(message)
        self.signal_number = signal_number


class ConfigMismatch(ValueError):
    """The checkpoints hold arrays of other names or shapes than the run's settings (config.json) give: the
    settings were edited or replaced after training. Nothing is moved: the checkpoints are good."""
