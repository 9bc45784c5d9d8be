"""Evaluation of a trained model: cross-modal label accuracy from any subset of modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.models import Model, check_present


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def predict_labels(model: Model, params, batch: Mapping[str, jax.Array], present: tuple[str, ...], target: str):
    """argmax_k p(target = k | z = posterior mean of q(z | present)): (batch,) int.

    The conditional generation used for coherence: encode the present
    modalities, decode the categorical modality ``target`` from the mean.
    """
    mu, _ = model.encode(params, batch, present)
    return jnp.argmax(model.decode(params, mu)[target], axis=-1)


def label_accuracy(
    model: Model,
    params,
    data: Mapping[str, np.ndarray],
    present: Sequence[str],
    target: str = "w",
    labels: np.ndarray | None = None,
    batch_size: int = 1000,
) -> float:
    """Fraction of examples whose class decoded from q(z | present) to ``target`` is the true class.

    ``labels`` default to the argmax of ``data[target]`` (the one-hot label).
    """
    present = check_present(present, model.names)
    kinds = {m.name: m.likelihood for m in model.modalities}
    if kinds.get(target) != "categorical":
        raise ValueError(f"target={target!r} must be a categorical modality of {model.name}: "
                         f"{[n for n, k in kinds.items() if k == 'categorical']}")
    if target in present:
        raise ValueError(f"target={target!r} is among the present modalities {present}")
    labels = np.argmax(data[target], axis=-1) if labels is None else np.asarray(labels)
    n = len(labels)
    correct = 0
    for start in range(0, n, batch_size):
        batch = {k: jnp.asarray(data[k][start : start + batch_size]) for k in present}
        correct += int(jnp.sum(predict_labels(model, params, batch, present, target) == labels[start : start + batch_size]))
    return correct / n
