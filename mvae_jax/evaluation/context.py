"""What every section of eval.py reads (``Context``), how a section says the data do not allow it (``Skipped``),
and the scoring CNNs of a run's data set (``scoring_cnns``), which several sections share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass
class Context:
    """What every section may read.

    ``scored``/``scored_labels``: the split evaluated (``--split``: test or
    validation); ``train``/``train_labels``: the training pairs (latent
    classifiers are fit there); None without a data set loaded (``samples``
    only). ``options``: the evaluation's flags (``eval.py --help``).
    ``progress(total, description)``: a context manager yielding ``update(n)``.
    """

    config: Any
    model: Any
    params: Any
    epoch: int
    dataset: Any
    scored: Mapping[str, np.ndarray] | None
    scored_labels: np.ndarray | None
    train_labels: np.ndarray | None
    out_dir: Path
    options: Any
    progress: Callable[[int, str], contextlib.AbstractContextManager] = lambda total, desc: contextlib.nullcontext(
        lambda n=1: None
    )

    _sampler: Any = dataclasses.field(default=None, init=False, repr=False)

    @property
    def rng(self) -> jax.Array:
        return jax.random.PRNGKey(self.options.seed)

    def sampler(self) -> Any:
        """The ``metrics.samplers.LatentSampler`` of ``--sampler``, built once; its ``name`` is where z came from
        in the metrics keys ("prior", "gmm"); a GMM is fitted on the means of q(z | every modality) of the
        first ``--latent_train_points`` training pairs (or read from the run's ``samplers/``)."""
        from mvae_jax.evaluation.metrics import model_latent, posterior_means, samplers
        from mvae_jax.evaluation.metrics.common import model_prior

        if self._sampler is None and self.options.sampler == "prior":
            self._sampler = model_prior(self.model, self.params)  # CMVAE's: its learned clusters
        if self._sampler is None:
            name, points = self.options.sampler, self.options.latent_train_points

            def codes():
                train = self.dataset.train
                if self.dataset.is_streamed:
                    train = train.take(points or 20_000)
                elif points:
                    train = {k: v[:points] for k, v in train.items()}
                return posterior_means(self.model, self.params, train, self.model.names)

            latent = model_latent(self.model, self.params)
            workdir = getattr(self.config, "workdir", None)
            components, seed = self.options.sampler_components, self.options.seed
            family = self.model.latent_prior
            made = samplers.fitted(name, codes, latent, workdir, self.epoch, components, points, seed, family)
            self._sampler = made
        return self._sampler


class Skipped(Exception):
    """Raised by a section that the run's data does not allow (no scorer, no label): eval.py says why in one
    line, records it under ``skipped`` in metrics.json and goes on with the next section."""


def scoring_cnns(ctx: Context, attributes: bool = False) -> tuple[dict, dict]:
    """({modality: CNN params}, {scorer: test accuracy}): the data set's class scorers (its contract), or with
    ``attributes`` its attribute scorers (``Scorer.targets``), shipped or --classifier_dir's.

    A scorer of a classification set (``mnist``) is keyed by that set's name; one trained on the data set's own
    split by ``<data set>/<modality>``.
    """
    from mvae_jax import attributes as attribute_scorers
    from mvae_jax import classifiers
    from mvae_jax.data import DATASETS

    contract = DATASETS[ctx.config.dataset]
    declared = (contract.attribute_scorers_of if attributes else contract.scorers_of)(ctx.model.names)
    fresh = ctx.options.classifier_dir is not None or bool(ctx.options.classifier_epochs)
    cnns, accuracies = {}, {}
    for name, scorer in declared.items():
        key = f"{ctx.config.dataset}/{name}" if scorer.own else scorer.source
        if scorer.targets is not None:
            names = contract.query_vocabulary(ctx.config)[0]
            data = attribute_scorers.AttributeSplit(ctx.dataset, name, scorer.targets, names)
        else:
            data = classifiers.OwnSplit(ctx.dataset, name) if scorer.own else None
        shipped = None if fresh or scorer.targets is not None else classifiers.load_shipped(key, data=data)
        if shipped is not None:
            params, info = shipped
        else:
            recipe = classifiers.default_recipe(key)
            if ctx.options.classifier_epochs:
                recipe = classifiers.Recipe(epochs=ctx.options.classifier_epochs)
            with ctx.progress(recipe.epochs, f"classifier {key}") as update:
                params, info = classifiers.load_or_train(
                    key,
                    ctx.config.data_dir,
                    ctx.options.classifier_dir,
                    recipe,
                    on_epoch=lambda e, loss: update(1),
                    data=data,
                )
        accuracies[key] = info["test_accuracy"] if scorer.targets is None else _attribute_record(info)
        cnns[name] = params
    return cnns, accuracies


def _attribute_record(info: dict) -> dict:
    """What metrics.json keeps of an attribute scorer's info: its mean and per-attribute test accuracy, and the
    majority rates (the accuracy of always answering an attribute's more frequent value)."""
    return {k: info[k] for k in ("test_accuracy", "attribute_accuracy", "attribute_majority", "test_examples")}
