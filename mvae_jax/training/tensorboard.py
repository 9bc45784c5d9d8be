"""TensorBoard event files in a run's workdir: ``tensorboard --logdir runs/`` shows every run.

Written with tensorboardX's protobufs and its synchronous ``EventsWriter``, which
need only protobuf: TensorFlow's summary API (flax.metrics.tensorboard, clu) would
import TensorFlow in the training process, about 9 s of start-up, for files of
the same format.

Why not tensorboardX's ``SummaryWriter``: it hands each event to a writer thread
through a bounded queue. When that thread dies (``OSError: No space left on
device``), the next ``add_*`` blocks on the full queue forever, holding the
workdir lock; Ctrl-C only moves the hang into its ``close`` and its exit
handler. Here every event is written in the calling thread, so a failure is an
exception that ``TensorBoard`` catches: it warns once and writes no more event
files for the rest of the run, and training goes on. TensorBoard is a view of
metrics.jsonl, never a reason to lose an epoch.

The event file is created at the first epoch's record, not at start-up, so a
launch killed before its first epoch ends leaves no empty event file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import time

import jax
import numpy as np

from mvae_jax import figures

log = logging.getLogger("mvae_jax.training")

SPEED = ("time_s", "samples_per_s")  # metrics.jsonl entries shown under speed/, the loss terms under train/
IMAGE_EXAMPLES = 10  # columns of the cross-modal grid: one test example per class, or the first ones


class TensorBoard:
    """One run's writer: the config as text, each epoch's metrics line as scalars, and every
    ``config.tensorboard_images`` epochs a grid of cross-modal samples (``figures.cross_modal_grid``).

    Nothing it does raises: a failed write or figure warns once (naming the error) and turns the writer off.
    """

    def __init__(self, workdir: str | os.PathLike, config, examples: dict[str, np.ndarray] | None):
        self.workdir = Path(workdir)
        self.every, self.examples = config.tensorboard_images, examples
        self.config_text = "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```"
        self.writer = None  # the EventsWriter, opened at the first record
        self.failed: str | None = None  # why writing stopped, once it has

    def epoch(self, record: dict, model, params) -> None:
        """The scalars of one metrics.jsonl line (at its epoch), and the image grid when the epoch is due."""
        if self.failed is not None:
            return
        from tensorboardX import summary

        epoch = int(record["epoch"])
        try:
            if self.writer is None:
                self._open()
            for key, value in record.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    # TensorBoard's tag characters exclude the comma of subset terms (kl_m0,m1 -> kl_m0_m1) and the
                    # arrow of cross-modal ones (log_likelihood_x->y -> log_likelihood_x_to_y)
                    tag = f"{'speed' if key in SPEED else 'train'}/{key.replace(',', '_').replace('->', '_to_')}"
                    self._write(summary.scalar(tag, value), epoch)
            if self.every and self.examples is not None and epoch % self.every == 0:
                grid = figures.cross_modal_grid(model, params, self.examples, jax.random.PRNGKey(epoch))
                self._write(summary.image("cross_modal", np.clip(grid, 0.0, 1.0), dataformats="HWC"), epoch)
            self.writer.flush()
        except Exception as e:  # a full disk, lost permissions, a figure that cannot be drawn
            self._fail(e)

    def _open(self) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.summary import text

        self.writer = EventsWriter(str(self.workdir / "events"))
        self._write(text("config", self.config_text), 0)

    def _write(self, summary, step: int) -> None:
        from tensorboardX.proto import event_pb2

        self.writer.write_event(event_pb2.Event(summary=summary, step=step, wall_time=time.time()))

    def _fail(self, error: Exception) -> None:
        self.failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        log.warning(
            "%s: TensorBoard events are off for the rest of this run (%s); metrics.jsonl and the checkpoints "
            "are written as before",
            self.workdir,
            self.failed,
        )
        self.close()

    def close(self) -> None:
        """Flush and close the event file; a failure here is only logged (at debug: it was warned about)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as e:
                log.debug("closing the TensorBoard event file of %s: %s", self.workdir, e)


def examples(dataset) -> dict[str, np.ndarray] | None:
    """The test examples of the image grids: one per class if the data set has labels, else the first few."""
    test = dataset.test
    if dataset.is_streamed:
        return test.take(IMAGE_EXAMPLES)
    labels = dataset.labels("test") if dataset.labelled else None
    if labels is None:
        picks = np.arange(min(IMAGE_EXAMPLES, len(next(iter(test.values())))))
    else:
        picks = figures.first_of_each_class(labels)[1][:IMAGE_EXAMPLES]
    return {k: v[picks] for k, v in test.items()}
