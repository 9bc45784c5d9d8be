"""TensorBoard event files in a run's workdir: ``tensorboard --logdir runs/`` shows every run.

Written with tensorboardX, which needs only protobuf: writing with TensorFlow's
summary API (flax.metrics.tensorboard, clu) would import TensorFlow in the
training process, about 9 s of start-up, for files of the same format.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from mvae_jax import figures

SPEED = ("time_s", "samples_per_s")  # metrics.jsonl entries shown under speed/, the loss terms under train/
IMAGE_EXAMPLES = 10  # columns of the cross-modal grid: one test example per class, or the first ones


class TensorBoard:
    """One run's writer: the config as text at the start, each epoch's metrics line as scalars, and every
    ``config.tensorboard_images`` epochs a grid of cross-modal samples (``figures.cross_modal_grid``)."""

    def __init__(self, workdir: str | Path, config, examples: dict[str, np.ndarray] | None):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(workdir), flush_secs=30)
        self.every, self.examples = config.tensorboard_images, examples
        self.writer.add_text("config", "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```", 0)

    def epoch(self, record: dict, model, params) -> None:
        """The scalars of one metrics.jsonl line (at its epoch), and the image grid when the epoch is due."""
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{'speed' if key in SPEED else 'train'}/{key}", value, epoch)
        if self.every and self.examples is not None and epoch % self.every == 0:
            grid = figures.cross_modal_grid(model, params, self.examples, jax.random.PRNGKey(epoch))
            self.writer.add_image("cross_modal", np.clip(grid, 0.0, 1.0), epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def examples(dataset) -> dict[str, np.ndarray] | None:
    """The test examples of the image grids: one per class if the data set has labels, else the first few."""
    test = dataset.test
    if dataset.is_streamed:
        return test.take(IMAGE_EXAMPLES)
    labels = dataset.labels("test") if any(m.likelihood == "categorical" for m in dataset.modalities) else None
    if labels is None:
        picks = np.arange(min(IMAGE_EXAMPLES, len(next(iter(test.values())))))
    else:
        picks = figures.first_of_each_class(labels)[1][:IMAGE_EXAMPLES]
    return {k: v[picks] for k, v in test.items()}
