"""Latent classification: a logistic regression on the means of q(z|S) (Shi et al. 2019), and the label predicted
through the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.evaluation.metrics.common import Progress, batches, conditional_means, posterior_means, subset_key
from mvae_jax.models import Model, check_present, subsets


def latent_accuracy(
    model: Model,
    params,
    train: Mapping[str, np.ndarray],
    train_labels: np.ndarray,
    test: Mapping[str, np.ndarray],
    test_labels: np.ndarray,
    progress: Progress = None,
    seed: int = 0,
) -> dict[str, float]:
    """{"S": test accuracy} of a logistic regression on the means of q(z | S), fit on ``train``, per subset S.

    scikit-learn's multinomial ``LogisticRegression`` (lbfgs) on standardised
    means: how linearly the latent space separates the classes. The fit runs
    on one BLAS thread: its matrices (N x latent) are too thin for threads to
    pay (2 cores, 20,000 x 20: 0.28 s on one thread, 0.60 s on two; 0.41 and
    2.13 s with the cores busy elsewhere).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    out = {}
    for present in subsets(model.names):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
        means = posterior_means(model, params, train, present)
        with threadpool_limits(limits=1, user_api="blas"):
            classifier.fit(means, np.asarray(train_labels))
        out[subset_key(present)] = float(
            classifier.score(posterior_means(model, params, test, present), np.asarray(test_labels))
        )
        if progress is not None:
            progress(1)
    return out


def predict_labels(model: Model, params, batch: Mapping[str, jax.Array], present: tuple[str, ...], target: str):
    """argmax_k p(target = k | z = the mean of q(z | present)): (batch,) int."""
    return jnp.argmax(conditional_means(model, params, batch, present, (target,))[target], axis=-1)


def label_accuracy(
    model: Model,
    params,
    data: Mapping[str, np.ndarray],
    present: Sequence[str],
    target: str = "w",
    labels: np.ndarray | None = None,
    batch_size: int = 1000,
) -> float:
    """Fraction of examples whose class decoded from q(z | present) to the categorical ``target`` is the true class.

    ``labels`` default to the argmax of ``data[target]`` (the one-hot label).
    """
    present = check_present(present, model.names)
    kinds = {m.name: m.likelihood for m in model.modalities}
    if kinds.get(target) != "categorical":
        raise ValueError(
            f"target={target!r} must be a categorical modality of {model.name}: "
            f"{[n for n, k in kinds.items() if k == 'categorical']}"
        )
    if target in present:
        raise ValueError(f"target={target!r} is among the present modalities {present}")
    labels = np.argmax(data[target], axis=-1) if labels is None else np.asarray(labels)
    correct = 0
    for s in batches(len(labels), batch_size):
        batch = {k: jnp.asarray(data[k][s]) for k in present}
        correct += int(np.sum(np.asarray(predict_labels(model, params, batch, present, target)) == labels[s]))
    return correct / len(labels)
