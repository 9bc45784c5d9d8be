"""Figures of a trained model: tSNE of posterior means and cross-modal samples (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import io
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.files import atomic_write_bytes
from mvae_jax.models import Model
from mvae_jax.models.base import per_model_jit

TSNE_FILE = "tsne.npz"
TSNE_THREADS_FROM = 1000  # points from which openTSNE uses every core (measured in tsne_embedding's docstring)


log = logging.getLogger(__name__)


def tsne_embedding(means: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D openTSNE embedding (Barnes-Hut, PCA init, perplexity 30 or less for few points) of (n, latent) means.

    openTSNE rather than scikit-learn's TSNE: 9.5 against 13.1 s for 5,000
    posterior means on 2 cores, with the same 10-nearest-neighbour accuracy in
    2-D (docs/PERFORMANCE.md). Deterministic for a given ``seed``. Returns (n, 2).
    Below ``TSNE_THREADS_FROM`` points it runs on one thread: there the threads'
    synchronisation costs more than they save, twenty times more when the cores
    are busy with something else (200 points: 1.2 s on one thread, 23.5 s on
    two, with a second process multiplying matrices on the 2 cores).
    """
    from openTSNE import TSNE

    n = len(means)
    if n < 5:
        raise ValueError(f"tSNE needs at least 5 points, got {n}")
    perplexity = min(30.0, (n - 1) / 3)
    means = np.asarray(means, np.float64)
    init = "pca"
    if not np.ptp(means, axis=0).any():  # PCA of equal points divides by 0: NaN coordinates, an empty figure
        log.warning("tSNE: the %d posterior means are all equal (a collapsed posterior); random initialisation", n)
        init = "random"
    threads = -1 if n >= TSNE_THREADS_FROM else 1
    embedding = TSNE(perplexity=perplexity, initialization=init, n_jobs=threads, random_state=seed)
    return np.asarray(embedding.fit(means))


def save_tsne(path: str | os.PathLike, embeddings: Mapping[str, np.ndarray], labels: np.ndarray) -> None:
    """Store embeddings {panel: (n, 2)} and labels (n,) in an .npz, atomically (for ``--compare``)."""
    buffer = io.BytesIO()
    np.savez(
        buffer, labels=labels, panels=np.array(list(embeddings)), **{f"panel_{k}": v for k, v in embeddings.items()}
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_tsne(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({panel: (n, 2)}, labels) written by ``save_tsne``."""
    with np.load(path) as f:
        return {str(k): f[f"panel_{k}"] for k in f["panels"]}, f["labels"]


def plot_tsne(
    rows: Sequence[tuple[str, Mapping[str, np.ndarray], np.ndarray]],
    path: str | os.PathLike,
    titles: Mapping[str, str] | None = None,
    class_names: Sequence[str] | None = None,
) -> None:
    """One row per run (name, {panel: (n, 2)}, labels), one column per posterior, points coloured by class
    (the colour bar names them with ``class_names``)."""
    plt = _pyplot()
    columns = list(dict.fromkeys(k for _, emb, _ in rows for k in emb))
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(3.2 * len(columns), 3.2 * len(rows)), squeeze=False)
    for r, (name, embeddings, labels) in enumerate(rows):
        for c, panel in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel in embeddings:
                e = embeddings[panel]
                scatter = ax.scatter(e[:, 0], e[:, 1], c=labels, cmap="tab10", s=2, vmin=-0.5, vmax=9.5)
            if r == 0:
                ax.set_title((titles or {}).get(panel, panel))
            if c == 0:
                ax.set_ylabel(name)
    bar = fig.colorbar(scatter, ax=axes, ticks=range(10), shrink=0.6, label="class")
    if class_names is not None:
        bar.set_ticklabels(list(class_names)[:10])
    _save(fig, path)


@per_model_jit(static_argnums=(0, 3, 5))
def _conditional_samples(model: Model, params, batch, present, rng, samples: int):
    """Means of p(x_t | z) for z ~ q(z | present), ``samples`` per example: {t: (samples, B, *shape)}."""
    z = model.draw(params, batch, present, rng, samples)
    logits = model.decode(params, z)
    return {m.name: m.mean(logits[m.name]) for m in model.modalities}


def first_of_each_class(labels: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(the classes present, in order; the index of the first example of each)."""
    labels = np.asarray(labels)
    classes = [int(c) for c in np.unique(labels)]
    return classes, np.array([np.flatnonzero(labels == c)[0] for c in classes])


def plot_cross_modal(
    model: Model,
    params,
    data: Mapping[str, np.ndarray],
    labels: np.ndarray,
    rng: jax.Array,
    path: str | os.PathLike,
    samples: int = 4,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> None:
    """Given each single modality s of one test example per class: ``samples`` draws of every other modality.

    One panel per s: its first row is the conditioning input (the image, or
    the class for a label), then ``samples`` rows per generated modality, one
    per z ~ q(z|s): the decoder's mean (pixel probabilities; for a label, the
    argmax class). Columns are named by ``class_names`` (default the label).
    """
    plt = _pyplot()
    classes, picks = first_of_each_class(labels)
    kinds = {m.name: m for m in model.modalities}
    tile = next((m.shape for m in model.modalities if m.is_image), (28, 28, 1))
    tiles_down = 1 + samples * (len(model.names) - 1)  # the mosaic's rows of tiles, of len(picks) columns
    height = 3.8 * tiles_down / len(picks) + 1.3  # the images' aspect, plus the titles and the rotated names
    fig, axes = plt.subplots(
        1, len(model.names), figsize=(4.6 * len(model.names), height), squeeze=False, layout="constrained"
    )
    for p, source in enumerate(model.names):
        batch = {source: jnp.asarray(data[source][picks])}
        out = jax.device_get(_conditional_samples(model, params, batch, (source,), jax.random.fold_in(rng, p), samples))
        rows, texts, row_names = [], [], []
        rows.append(_row(kinds[source], data[source][picks], texts, len(rows), tile))
        row_names.append(f"given {source}")
        for t in model.names:
            if t == source:
                continue
            shown = "argmax" if kinds[t].likelihood == "categorical" else "mean"
            for k in range(samples):
                rows.append(_row(kinds[t], out[t][k], texts, len(rows), tile))
                row_names.append(f"{t} {shown}, z #{k + 1}")
        ax = axes[0, p]
        mosaic = np.concatenate(rows, axis=0)
        ax.imshow(mosaic.squeeze(-1) if mosaic.shape[-1] == 1 else mosaic, cmap="gray", vmin=0, vmax=1)
        tile_h, tile_w = rows[0].shape[0], rows[0].shape[1] // len(picks)
        for r, col, text in texts:
            ax.text((col + 0.5) * tile_w, (r + 0.5) * tile_h, text, ha="center", va="center", color="white", fontsize=9)
        ax.set_yticks([(r + 0.5) * tile_h for r in range(len(rows))], row_names, fontsize=7)
        names = [class_names[c] if class_names is not None else str(c) for c in classes]
        ax.set_xticks([(c + 0.5) * tile_w for c in range(len(picks))], names, fontsize=7, rotation=60, ha="right")
        ax.set_title(f"given {source}: z ~ q(z|{source})", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    _save(fig, path)


def cross_modal_grid(model: Model, params, data: Mapping[str, np.ndarray], rng: jax.Array, samples: int = 2):
    """One image (H, W, 3) in [0, 1] of cross-modal generation, for TensorBoard: for each single modality s,
    its images (if s is an image) above ``samples`` rows of decoder means of each other image modality,
    z ~ q(z|s); the blocks of the sources side by side. ``data`` holds the examples (a few, one per column).
    Image modalities of different shapes share the grid: each image is padded (white) to the largest height
    and width, and where some are RGB a one-channel image is drawn in gray on 3 channels."""
    images = [m for m in model.modalities if len(m.shape) == 3]  # (H, W, C); not labels or attributes
    names = {m.name for m in images}
    height, width = max((m.shape[0] for m in images), default=1), max((m.shape[1] for m in images), default=1)
    channels = 1 if all(m.shape[2] == 1 for m in images) else 3

    def row(values) -> np.ndarray:
        return np.concatenate(list(_fit(np.asarray(values, np.float32), height, width, channels)), axis=1)

    blocks = []
    for p, source in enumerate(model.names):
        batch = {source: jnp.asarray(data[source])}
        out = jax.device_get(_conditional_samples(model, params, batch, (source,), jax.random.fold_in(rng, p), samples))
        rows = [row(data[source])] if source in names else []
        rows += [row(out[t.name][k]) for t in images if t.name != source for k in range(samples)]
        blocks.append(np.concatenate(rows, axis=0))
    tallest = max(b.shape[0] for b in blocks)
    gap = np.ones((tallest, 4, channels), np.float32)
    padded = [np.pad(b, ((0, tallest - b.shape[0]), (0, 0), (0, 0)), constant_values=1.0) for b in blocks]
    return np.concatenate([x for b in padded for x in (b, gap)][:-1], axis=1)


def _fit(images: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Images (n, h, w, c) as (n, height, width, channels): padded with white below and right; with 3 channels
    a gray image is repeated on each and other counts are drawn as their mean in gray."""
    if images.shape[-1] != channels:
        gray = images.mean(axis=-1, keepdims=True)
        images = np.repeat(gray, channels, axis=-1)
    pad = ((0, 0), (0, height - images.shape[1]), (0, width - images.shape[2]), (0, 0))
    return np.pad(images, pad, constant_values=1.0)


CURVE_SKIP = ("epoch", "step", "time_s", "samples_per_s")  # metrics.jsonl entries that are not loss terms
VALIDATION_PREFIX = "validation_"  # a term measured on the validation split, drawn beside its training twin


def plot_curves(records: Sequence[Mapping[str, float]], path: str | os.PathLike, title: str = "") -> list[str]:
    """Every loss term of metrics.jsonl's ``records`` against the epoch, one panel each; a
    ``validation_<term>`` entry is drawn dashed in the panel of ``<term>``. Returns the terms drawn."""
    plt = _pyplot()
    terms = [
        k
        for k in dict.fromkeys(k for r in records for k in r)
        if k not in CURVE_SKIP and not k.startswith(VALIDATION_PREFIX)
    ]
    columns = min(4, max(len(terms), 1))
    rows = -(-len(terms) // columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.6 * rows), squeeze=False, layout="constrained")
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
    for ax, term in zip(axes.ravel(), terms):
        for key, style, name in ((term, "-", "train"), (VALIDATION_PREFIX + term, "--", "validation")):
            points = [(e, r[key]) for e, r in zip(epochs, records) if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), style, marker="." if len(points) < 30 else None, label=name)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=7)
        if any(VALIDATION_PREFIX + term in r for r in records):
            ax.legend(fontsize=7)
    for ax in axes.ravel()[len(terms) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
    return terms


def plot_validation_curves(
    runs: Mapping[str, Mapping[int, Sequence[Mapping[str, float]]]],
    path: str | os.PathLike,
    term: str = VALIDATION_PREFIX + "loss",
) -> None:
    """``term`` of metrics.jsonl against the epoch: a panel per model (``runs``: {model: {seed: records}}), a line
    per seed, its lowest point marked (the epoch model selection keeps)."""
    panels = {
        model: {
            f"seed {seed}": [(r["epoch"], r[term]) for r in records if isinstance(r.get(term), (int, float))]
            for seed, records in sorted(seeds.items())
        }
        for model, seeds in runs.items()
    }
    plot_metric_panels(panels, path, ylabel=term, mark_minimum=True)


def plot_metric_panels(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: str | os.PathLike,
    ylabel: str = "",
    mark_minimum: bool = False,
) -> None:
    """A panel per {title: {line label: [(epoch, value), ...]}}, values against the epoch; ``mark_minimum`` dots
    each line's lowest point. The y range leaves out the first tenth of each line (early epochs flatten the rest)."""
    plt = _pyplot()
    columns = min(3, max(len(panels), 1))
    rows = -(-len(panels) // columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False, layout="constrained")
    for ax, (title, lines) in zip(axes.ravel(), panels.items()):
        shown = []
        for label, points in lines.items():
            if not points:
                continue
            (line,) = ax.plot(*zip(*points), label=label, linewidth=1)
            if mark_minimum:
                ax.plot(*min(points, key=lambda p: p[1]), "o", color=line.get_color(), markersize=4)
            shown.extend(v for _, v in points[len(points) // 10 :])
        if shown:
            low, high = min(shown), max(shown)
            ax.set_ylim(low - 0.05 * (high - low or 1), high + 0.05 * (high - low or 1))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=7)
        if shown:
            ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    _save(fig, path)


def _row(modality, values: np.ndarray, texts: list, index: int, shape) -> np.ndarray:
    """One mosaic row: images side by side, or dark tiles with the class written on them (appended to texts)."""
    if modality.likelihood == "categorical":
        for col, v in enumerate(values):
            texts.append((index, col, str(int(np.argmax(v)))))
        return np.full((shape[0], shape[1] * len(values), shape[2]), 0.15, np.float32)
    return np.concatenate([np.asarray(v, np.float32) for v in values], axis=1)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    """Write a PNG atomically and close the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def image_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """(n, H, W, C) -> one mosaic (rows * H, columns * W, C), blank tiles after the last image."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    padded = np.ones((rows * columns, h, w, c), np.float32)
    padded[:n] = images
    return padded.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, columns * w, c)


def plot_image_rows(
    rows: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike, title: str = "", columns: int = 8
) -> None:
    """One titled mosaic per (name, images (n, H, W, C) in [0, 1]) stacked vertically, saved as a PNG."""
    plt = _pyplot()
    grids = [(name, image_grid(images, columns)) for name, images in rows]
    height = sum(g.shape[0] / g.shape[1] for _, g in grids)
    fig, axes = plt.subplots(
        len(grids), 1, figsize=(columns * 0.9, max(2.0, columns * 0.9 * height + 0.4 * len(grids))), squeeze=False
    )
    for ax, (name, grid) in zip(axes[:, 0], grids):
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        # The axes start 0.5 inch below the title: matplotlib's default top (0.88 of the height) leaves
        # inches of blank above the first row when many rows make the figure tall.
        fig.subplots_adjust(top=1 - 0.5 / fig.get_figheight())
        fig.suptitle(title, fontsize=10, y=1 - 0.15 / fig.get_figheight())
    _save(fig, path)


def save_samples(path: str | os.PathLike, images: Mapping[str, np.ndarray]) -> None:
    """Store {image modality: (n, H, W, C)} in an .npz, atomically (for ``--compare``)."""
    buffer = io.BytesIO()
    np.savez(buffer, **images)
    atomic_write_bytes(path, buffer.getvalue())


def load_samples(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}
