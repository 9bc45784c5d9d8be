"""Failures that the command line reports in one line, without a traceback."""

from __future__ import annotations


class CheckpointError(OSError):
    """A checkpoint could not be written (full disk, lost permissions); the earlier checkpoints are intact."""


class Interrupted(Exception):
    """Training stopped on request (SIGINT/SIGTERM) at a step boundary, after checkpointing its state."""

    def __init__(self, message: str, signal_number: int | None = None):
        super().__init__(message)
        self.signal_number = signal_number
