"""Incomplete training data: which modalities each training example lacks (``--missing``).

A run with ``--missing`` trains on a training split in which some examples lack some modalities. The
presence mask is drawn once, from ``--missing_seed``, over the training split (after the validation hold-out
and ``--train_examples``) and saved in the workdir (``MASK_FILE``), which a resumed run reads back. What an
example lacks is erased (set to 0) in the arrays, so nothing of it can reach the model. The mask travels
with every batch under the key ``models.base.PRESENT``: (batch, M) bool, column i for modality i; one
compiled program serves every pattern. Each model that accepts incomplete data (``models.INCOMPLETE``)
computes its objective from what an example has; see each model's docstring. eval.py scores the complete
test split, as for any run.

Two ways to draw it:

- ``--missing=RATE``: each modality of each example is missing with probability RATE; an example left
  with none gets back one modality drawn uniformly (at least one is always kept).
- ``--missing=x:0.5,y:0.2``: a rate per modality (those not named: 0). MultiVae's incomplete PolyMNIST
  (``MMNISTDataset(missing_ratio=r)``: m0 always present, each of m1..m4 missing with probability r) is
  ``--missing=m1:r,m2:r,m3:r,m4:r``.

By default every example trains with what it has (MultiVae's ``keep_incomplete=True``); with
``--drop_incomplete`` the incomplete examples are dropped and the run trains on the complete ones only
(``keep_incomplete=False``). The validation split stays complete unless ``--missing_eval`` (the same rates,
from ``--missing_seed + 1``), the test split always.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math
from pathlib import Path

import numpy as np

from mvae_jax import options as opt


def parse(spec: str, names: Sequence[str]) -> dict[str, float]:
    """{modality: probability that it is missing} from ``--missing``'s text; ValueError naming what is wrong.

    ``""`` or ``"0"``: nothing missing ({} ). ``"RATE"``: every modality. ``"x:0.5,y:0.2"``: those named.
    """
    names = tuple(names)
    text = str(spec).strip()
    allowed = (
        "a probability in [0, 1) for every modality (e.g. 0.5), or name:probability pairs, comma separated, "
        f"for the modalities {', '.join(names)} (e.g. {names[0]}:0.5)"
    )
    if not text:
        return {}
    if ":" not in text:
        rate = _rate(text, f"missing={spec!r} is invalid; allowed: {allowed}")
        return {} if rate == 0 else {n: rate for n in names}
    rates = {}
    for part in text.split(","):
        name, sep, value = part.partition(":")
        name = name.strip()
        if not sep or name not in names or name in rates:
            what = "repeated" if name in rates else "unknown" if sep else "without a probability"
            raise ValueError(f"missing={spec!r} is invalid ({name!r} is {what}); allowed: {allowed}")
        rates[name] = _rate(value, f"missing={spec!r} is invalid ({name}:{value.strip()}); allowed: {allowed}")
    return {n: r for n, r in rates.items() if r > 0}


def _rate(text: str, error: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(error) from None
    if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
        raise ValueError(error)
    return rate


OPTIONS = (
    opt.Option(
        "missing",
        "str",
        "",
        "incomplete training data: each modality of each training example missing with this probability "
        "(at least one kept per example), or per modality as name:probability pairs (x:0.5,y:0.2); "
        "validation and test stay complete",
        "a probability in [0, 1), or name:probability pairs",
        lambda v: isinstance(v, str),
        empty="none",
    ),
    opt.integer("missing_seed", 0, "seed of the missing-data mask of --missing (drawn once per run)"),
    opt.switch(
        "missing_eval",
        "with --missing: the validation split (model selection) is incomplete too, drawn with the same rates "
        "from --missing_seed + 1; eval.py's test metrics stay complete",
    ),
    opt.switch(
        "drop_incomplete",
        "with --missing: drop the incomplete training examples and train on the complete ones only (MultiVae's "
        "keep_incomplete=False); off: every example trains with the modalities it has",
    ),
)
"""The run's settings of incomplete data (part of ``config.RUN_OPTIONS``)."""


def draw(num_examples: int, names: Sequence[str], rates: dict[str, float], seed: int) -> np.ndarray:
    """(num_examples, M) bool presence mask: modality i of example n present with probability 1 - rates[i].

    An example left with no modality gets one back, drawn uniformly among all M. The same arguments give the
    same mask (numpy's PCG64 from ``seed``).
    """
    rng = np.random.default_rng(seed)
    probability = np.asarray([1.0 - rates.get(n, 0.0) for n in names])
    present = rng.random((num_examples, len(names))) < probability
    empty = ~present.any(axis=1)
    restored = rng.integers(0, len(names), num_examples)
    present[empty, restored[empty]] = True
    return present


MASK_FILE = "missing_mask.npz"
"""The run's presence mask in its workdir: ``present`` (examples, M) bool and ``names``; what a resumed run
trains on (so a change in how numpy draws cannot change it)."""


def save_mask(workdir, mask: np.ndarray, names: Sequence[str]) -> None:
    """Write ``workdir/MASK_FILE`` atomically, unless it is there already."""
    import io

    from mvae_jax.files import atomic_write_bytes

    path = Path(workdir) / MASK_FILE
    if path.exists():
        return
    buffer = io.BytesIO()
    np.savez_compressed(buffer, present=np.asarray(mask, bool), names=np.asarray(names))
    atomic_write_bytes(path, buffer.getvalue())


def load_mask(workdir, names: Sequence[str], num_examples: int) -> np.ndarray | None:
    """The mask a run saved (None if it has none); ValueError if it does not fit the data set."""
    path = Path(workdir) / MASK_FILE
    if not path.exists():
        return None
    with np.load(path) as saved:
        mask, saved_names = saved["present"], tuple(str(n) for n in saved["names"])
    if saved_names != tuple(names) or mask.shape != (num_examples, len(names)):
        raise ValueError(
            f"{path} holds a mask of {mask.shape[0]} examples of {saved_names}, but the training split has "
            f"{num_examples} examples of {tuple(names)}; it belongs to another run: move it away or use another workdir"
        )
    return mask


@dataclasses.dataclass(frozen=True)
class Summary:
    """What the mask left: examples in all, complete ones, and the fraction of each modality present."""

    examples: int
    complete: int
    present: dict[str, float]
    mask: np.ndarray = dataclasses.field(repr=False, compare=False, default=None)

    def line(self) -> str:
        shares = ", ".join(f"{n} {100 * p:.1f}%" for n, p in self.present.items())
        return f"{self.examples} training examples, {self.complete} complete; present: {shares}"


def apply(dataset, config, names: Sequence[str] | None = None, workdir=None):
    """``dataset`` with ``config.missing`` applied to its training split: (dataset, Summary), or (dataset, None).

    The missing values are set to 0 and the mask added under ``PRESENT``; with ``drop_incomplete`` the
    incomplete examples are dropped instead (no mask). The mask is the one saved in ``workdir`` (a resumed
    run), else drawn. ValueError for a streamed data set.
    """
    from mvae_jax.models.base import PRESENT

    names = tuple(m.name for m in dataset.modalities) if names is None else tuple(names)
    rates = parse(config.missing, names)
    if not rates:
        return dataset, None
    if dataset.is_streamed:
        raise ValueError(
            f"missing={config.missing!r}: the {dataset.name} data set is streamed from disk; incomplete training "
            "data needs an in-memory data set (trimodal, mnist_label, polymnist)"
        )
    present = None if workdir is None else load_mask(workdir, names, dataset.num_train)
    if present is None:
        present = draw(dataset.num_train, names, rates, config.missing_seed)
    complete = present.all(axis=1)
    shares = {n: float(p) for n, p in zip(names, present.mean(0))}
    summary = Summary(len(present), int(complete.sum()), shares, present)
    labels = dict(dataset.class_labels) if dataset.class_labels is not None else None
    splits = {"train": (dataset.train, present)}
    held = dataset.validation
    if config.missing_eval and isinstance(held, dict) and len(next(iter(held.values()))):
        count = len(next(iter(held.values())))
        splits["validation"] = (held, draw(count, names, rates, config.missing_seed + 1))
    changed = {}
    for split, (data, mask) in splits.items():
        if config.drop_incomplete:
            keep = mask.all(axis=1)
            if not keep.any():
                raise ValueError(
                    f"missing={config.missing!r} with --drop_incomplete leaves no complete {split} example"
                )
            changed[split] = {k: v[keep] for k, v in data.items()}
            if labels is not None:
                labels[split] = labels[split][keep]
            continue
        erased = {}
        for i, n in enumerate(names):
            values = data[n]
            erased[n] = np.where(
                mask[:, i].reshape((-1,) + (1,) * (values.ndim - 1)), values, np.zeros((), values.dtype)
            )
        erased[PRESENT] = mask
        changed[split] = erased
    return dataclasses.replace(dataset, **changed, class_labels=labels), summary
