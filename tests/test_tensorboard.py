"""TensorBoard event files in the workdir: the config, each epoch's loss terms, a cross-modal grid every N epochs."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from mvae_jax import figures, training
from mvae_jax.config import Config


def _events(workdir):
    """(tag, step, value) of every summary in the workdir's event files, read with TensorFlow's own reader."""
    from mvae_jax.data import sources

    tf = sources.import_tf()
    out = []
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                kind = v.WhichOneof("value")
                out.append((v.tag, event.step, v.simple_value if kind == "simple_value" else getattr(v, kind)))
    return out


@pytest.mark.slow
def test_event_files_hold_the_scalars_config_and_images(tiny_config):
    config = Config(**{**tiny_config.to_dict(), "epochs": 2, "tensorboard_images": 2})
    training.train_and_evaluate(config)
    events = _events(Path(config.workdir))
    lines = [json.loads(line) for line in (Path(config.workdir) / "metrics.jsonl").open()]
    loss = {step: value for tag, step, value in events if tag == "train/loss"}
    assert loss == {1: np.float32(lines[0]["loss"]), 2: np.float32(lines[1]["loss"])}
    tags = {tag for tag, _, _ in events}
    assert {"train/kl", "train/log_likelihood_x", "speed/samples_per_s", "speed/time_s"} <= tags
    assert [step for tag, step, _ in events if tag == "cross_modal"] == [2]  # every 2nd epoch
    text = next(value for tag, _, value in events if tag.startswith("config")).string_val[0].decode()
    assert json.loads(text.strip("`\n")) == config.to_dict()


def test_cross_modal_grid_stacks_each_sources_generations(tiny_config):
    from mvae_jax.data import load_dataset
    from mvae_jax.models import get_model

    dataset = load_dataset(tiny_config)
    model = get_model(tiny_config, dataset.modalities)
    params = training.create_train_state(model, training.make_optimizer(tiny_config), 0).params
    examples = {k: v[:3] for k, v in dataset.test.items()}
    grid = figures.cross_modal_grid(model, params, examples, jax.random.PRNGKey(0), samples=2)
    # Given x: its row and 2 of y; given y: its row and 2 of x; given w: 2 of x and 2 of y (the tallest, 4 rows).
    # Three blocks of 3 columns of 28 pixels, 4-pixel gaps between them.
    assert grid.shape == (4 * 28, 3 * 3 * 28 + 2 * 4, 1)
    assert 0.0 <= grid.min() and grid.max() <= 1.0


def test_the_tsne_of_a_collapsed_posterior_is_finite_and_says_so(caplog):
    """Equal posterior means (every example encoded alike) made openTSNE's PCA start divide by 0: NaN coordinates."""
    from mvae_jax import figures

    with caplog.at_level("WARNING", logger="mvae_jax.figures"):
        embedding = figures.tsne_embedding(np.ones((20, 4), np.float32))
    assert embedding.shape == (20, 2) and np.all(np.isfinite(embedding))
    assert "posterior means are all equal" in caplog.text


def test_the_tsne_of_few_points_runs_on_one_thread(monkeypatch):
    """openTSNE's threads cost more than they save below figures.TSNE_THREADS_FROM points (20 times more when the
    cores are busy, docs/PERFORMANCE.md): one thread there, every core from there on."""
    import openTSNE

    from mvae_jax import figures

    threads = []

    class Recorded(openTSNE.TSNE):
        def __init__(self, *args, n_jobs=1, **kwargs):
            threads.append(n_jobs)
            super().__init__(*args, n_jobs=n_jobs, **kwargs)

        def fit(self, x):
            return np.zeros((len(x), 2))

    monkeypatch.setattr(openTSNE, "TSNE", Recorded)
    points = np.random.default_rng(0).normal(size=(figures.TSNE_THREADS_FROM, 3))
    figures.tsne_embedding(points[:-1])
    figures.tsne_embedding(points)
    assert threads == [1, -1]
