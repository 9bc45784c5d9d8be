"""The validation objective after every epoch, and the checkpoint of the best one (model selection).

A run trained with ``--validation=N`` holds out N training pairs
(``mvae_jax.data.hold_out``). After each epoch the loop scores them with the
model's own per-example loss terms, with the weights of the *final* epoch (KL
warm-up and PEMVAE's joint-only warm-up over: the objective the run is asked
to minimise, so that epochs compare) and the same randomness every epoch
(common random numbers: a curve moves only because the parameters did). The
means go into metrics.jsonl as ``validation_<term>``; the epoch with the
lowest ``validation_loss`` is kept in ``<workdir>/best_checkpoint`` for
``eval.py --step=best``.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.models import Model

VALIDATION_STREAM = 4  # folded into the run's base key: the validation randomness, the same every epoch
PREFIX = "validation_"  # metrics.jsonl: ``validation_<term>`` beside the training mean of ``<term>``
SELECTION_TERM = PREFIX + "loss"  # what model selection minimises
AFTER_WARMUPS = 1 << 30  # the ``epoch`` the objective is scored at: every warm-up and schedule is over


def make_validation_fn(model: Model, num_examples: int, batch_size: int, final_epoch: int, betas=None):
    """(params, rng, data) -> {term: mean over the ``num_examples`` validation pairs}, jitted.

    ``data`` maps modality name -> (num_examples, *shape), already in its
    final form (mnist_label's images are binarized once). The pairs are
    scored in batches of ``batch_size`` (the last padded and masked out), each
    with its own key folded from ``rng``. With ``betas`` the params are
    stacked (a sweep) and each member is scored with its own beta.
    """
    if num_examples < 1:
        raise ValueError(f"the validation split is empty (num_examples={num_examples})")
    size = min(batch_size, num_examples)
    batches = -(-num_examples // size)
    pad = batches * size - num_examples
    mask = jnp.asarray(np.arange(batches * size) < num_examples, jnp.float32).reshape(batches, size)
    epoch = jnp.int32(final_epoch)

    def member(params, rng, data, beta=None):
        beta_arg = () if beta is None else (beta,)

        def body(sums, inputs):
            index, batch, weights = inputs
            terms = model.loss(params, batch, jax.random.fold_in(rng, index), epoch, *beta_arg)
            return {k: sums[k] + jnp.sum(v * weights) for k, v in terms.items()}, None

        first = jax.tree_util.tree_map(lambda x: x[:size], data)
        shapes = jax.eval_shape(lambda: model.loss(params, first, rng, epoch, *beta_arg))
        zeros = {k: jnp.zeros((), jnp.float32) for k in shapes}
        stacked = jax.tree_util.tree_map(
            lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(batches, size, *x.shape[1:]), data
        )
        sums, _ = jax.lax.scan(body, zeros, (jnp.arange(batches), stacked, mask))
        return {k: v / num_examples for k, v in sums.items()}

    if betas is None:
        return jax.jit(member)
    values = jnp.asarray(betas, jnp.float32)
    return jax.jit(lambda params, rng, data: jax.vmap(member, in_axes=(0, None, None, 0))(params, rng, data, values))


def validation_key(seed: int) -> jax.Array:
    """The key of the validation randomness of a run of ``seed`` (the same every epoch)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), VALIDATION_STREAM)


def best_record(records: Sequence[dict]) -> dict | None:
    """The metrics line with the lowest finite ``validation_loss`` (the earliest of ties); None if none has one."""
    best = None
    for record in records:
        value = record.get(SELECTION_TERM)
        if isinstance(value, (int, float)) and math.isfinite(value):
            if best is None or value < best[SELECTION_TERM]:
                best = record
    return best


def read_records(path: Path) -> list[dict]:
    """The complete lines of a metrics.jsonl (none if it is missing)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a killed process
            continue
    return records
