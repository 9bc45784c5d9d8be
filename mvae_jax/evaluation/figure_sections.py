"""The sections of eval.py that draw (tSNE, cross-modal grid, prior samples, training curves) and the figure of a
``--query``, with what those figures share; registered in ``sections.SECTIONS``."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np

from mvae_jax.evaluation import metrics
from mvae_jax.evaluation.context import Context, scoring_cnns

log = logging.getLogger("mvae_jax.evaluation")


def panel_titles(names) -> dict[str, str]:
    """{panel: title} of the tSNE panels: q(z|x,y,w) for "joint", q(z|m) for each modality."""
    return {"joint": f"q(z|{','.join(names)})", **{n: f"q(z|{n})" for n in names}}


def tsne(ctx: Context) -> dict:
    """tsne.png and tsne.npz: the posterior means of the first --tsne_points pairs, given all and each image."""
    from mvae_jax import figures

    n = min(ctx.options.tsne_points, len(ctx.scored_labels))
    data = {k: v[:n] for k, v in ctx.scored.items()}
    panels = {"joint": ctx.model.names}
    panels.update({n: (n,) for n in ctx.model.names if n != ctx.dataset.label_modality})
    embeddings = {}
    with ctx.progress(len(panels), f"tSNE of {n} points") as update:
        for panel, present in panels.items():
            embeddings[panel] = figures.tsne_embedding(
                metrics.posterior_means(ctx.model, ctx.params, data, present), ctx.options.seed
            )
            update(1)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    figures.save_tsne(ctx.out_dir / figures.TSNE_FILE, embeddings, ctx.scored_labels[:n])
    figures.plot_tsne(
        [(f"{ctx.config.model} (epoch {ctx.epoch})", embeddings, ctx.scored_labels[:n])],
        ctx.out_dir / "tsne.png",
        titles=panel_titles(ctx.model.names),
        class_names=class_names(ctx.config.dataset),
    )
    return {}


def cross_modal(ctx: Context) -> dict:
    """cross_modal.png: samples of each modality given each other, one example per class."""
    from mvae_jax import figures

    figures.plot_cross_modal(
        ctx.model,
        ctx.params,
        ctx.scored,
        ctx.scored_labels,
        jax.random.fold_in(ctx.rng, 3),
        ctx.out_dir / "cross_modal.png",
        title=run_title(ctx),
        class_names=class_names(ctx.config.dataset),
    )
    return {}


SAMPLES_FILE = "samples.npz"


def run_title(ctx: Context) -> str:
    """A figure's title: the model, beta and the epoch evaluated."""
    return f"{ctx.config.model} beta={ctx.config.beta} (epoch {ctx.epoch})"


def class_names(dataset: str) -> tuple[str, ...] | None:
    """The data set's class names by label (figures), or None."""
    from mvae_jax.data import DATASETS

    return DATASETS[dataset].class_names


def samples(ctx: Context) -> dict:
    """samples.png and samples.npz: images decoded from z ~ p(z) (or ~ ``--sampler``)."""
    from mvae_jax import figures

    sampler = ctx.sampler()
    images = metrics.prior_images(ctx.model, ctx.params, jax.random.fold_in(ctx.rng, 4), 16, sampler=sampler)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    figures.save_samples(ctx.out_dir / SAMPLES_FILE, images)
    drawn = "z ~ p(z)" if sampler.name == "prior" else f"z ~ the {sampler.name.upper()} fitted to q(z|all)"
    figures.plot_image_rows(
        [(f"{n}: mean of p({n}|z), {drawn}", v) for n, v in images.items()],
        ctx.out_dir / "samples.png",
        run_title(ctx),
    )
    return {}


def curves(ctx: Context) -> dict:
    """curves.png: every loss term of the run's metrics.jsonl against the epoch (validation dashed, if logged)."""
    import json

    from mvae_jax import figures
    from mvae_jax.config import METRICS_FILE

    path = Path(ctx.options.workdir) / METRICS_FILE
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if records:
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        figures.plot_curves(records, ctx.out_dir / "curves.png", f"{ctx.config.model} beta={ctx.config.beta}")
    return {}


QUERY_STREAM, QUERY_PRIOR_STREAM = 5, 9  # folded into the evaluation's key: the query's chains, its prior faces


def query(ctx: Context, text: str, values: np.ndarray, named: np.ndarray, given: str) -> dict:
    """query_<query>.png: images generated from the attributes a query names (``--query``), the rest imputed;
    where the data set has an attribute scorer (CelebA), how often they carry the queried attributes.

    ``carried``: per image modality, ``attributes.query_agreement`` of the ``--query_samples`` images (each
    queried attribute, and ``all`` of them); ``prior``: the same of as many images decoded from z ~ p(z),
    the rate without the query; ``scorer``: the attribute CNN's test accuracy (mean and per attribute).
    """
    from mvae_jax import attributes, figures

    options = ctx.options
    images = metrics.query_images(
        ctx.model,
        ctx.params,
        jax.random.fold_in(ctx.rng, QUERY_STREAM),
        values,
        named,
        options.query_samples,
        options.query_steps,
        given,
    )
    slug = "-".join(item.strip().replace("=", "") for item in text.split(",") if item.strip())
    figure = ctx.out_dir / f"query_{slug}.png"
    figures.plot_image_rows(
        [(f"{n}: mean of p({n}|z), z ~ q(z | {text})", v) for n, v in images.items()],
        figure,
        f"{ctx.config.model} beta={ctx.config.beta}: {text} (others missing; {options.query_steps} imputation steps)",
    )
    out = {"figure": figure.name, "samples": options.query_samples, "steps": options.query_steps}
    if ctx.dataset is not None:
        cnns, accuracies = scoring_cnns(ctx, attributes=True)
        if cnns:
            from mvae_jax.data import DATASETS

            names = DATASETS[ctx.config.dataset].query_vocabulary(ctx.config)[0]
            prior = metrics.prior_images(
                ctx.model, ctx.params, jax.random.fold_in(ctx.rng, QUERY_PRIOR_STREAM), options.query_samples
            )
            agreement = {
                which: {
                    m: attributes.query_agreement(attributes.predict_attributes(p, made[m]), values, named, names)
                    for m, p in cnns.items()
                }
                for which, made in (("carried", images), ("prior", prior))
            }
            out.update(agreement, scorer=accuracies)
            for m, carried in agreement["carried"].items():
                log.info(
                    "query %s: %.3f of the %s carry every queried attribute (%.3f from the prior)",
                    text,
                    carried["all"],
                    m,
                    agreement["prior"][m]["all"],
                )
    return {text: out}
