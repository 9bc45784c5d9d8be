"""What training sends a run's trackers (``--tracker``, ``mvae_jax.tracking``): the config at each launch, each
epoch's metrics line, and every ``--tensorboard_images`` epochs a grid of cross-modal samples.

A tracker new to the run (``--tracker=mlflow`` given when resuming) first gets the epochs metrics.jsonl already
holds, at the run's first epoch of this launch (after resuming has set metrics.jsonl straight).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import numpy as np

from mvae_jax import figures, tracking

log = logging.getLogger("mvae_jax.training")

IMAGE_EXAMPLES = 10  # columns of the cross-modal grid: one test example per class, or the first ones


class RunTrackers:
    """One run's trackers during training. Nothing it does raises once open: a tracker that fails warns once
    and is off (``tracking.Writers``); a grid that cannot be drawn warns once and no more are drawn.

    Opening raises ValueError, naming the tracker and why, when one cannot start (before training).
    """

    def __init__(self, workdir: str | os.PathLike, config, examples: dict[str, np.ndarray] | None):
        self.workdir = Path(workdir)
        self.writers, self.fresh = tracking.open_run(self.workdir, config, config.tracker)
        self.writers.write_hparams(config.to_dict())
        self.every, self.examples = config.tensorboard_images, examples

    def epoch(self, record: dict, model, params) -> None:
        """The scalars of one metrics.jsonl line (at its epoch), and the image grid when the epoch is due."""
        if not self.writers:
            return
        epoch = int(record["epoch"])
        if self.fresh:  # once: what this tracker missed
            for earlier in tracking.earlier_epochs(self.workdir):
                if int(earlier["epoch"]) < epoch:
                    self.writers.write_scalars(int(earlier["epoch"]), tracking.epoch_scalars(earlier), only=self.fresh)
            self.fresh = []
        self.writers.write_scalars(epoch, tracking.epoch_scalars(record))
        if self.every and self.examples is not None and epoch % self.every == 0:
            try:
                grid = figures.cross_modal_grid(model, params, self.examples, jax.random.PRNGKey(epoch))
            except Exception as e:
                self.every = 0
                log.warning(
                    "%s: the cross-modal grid could not be drawn (%s: %s); no more grids this run",
                    self.workdir,
                    type(e).__name__,
                    e,
                )
                return
            self.writers.write_images(epoch, {"cross_modal": grid})

    def close(self, status: str = "FINISHED") -> None:
        self.writers.close(status)


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
