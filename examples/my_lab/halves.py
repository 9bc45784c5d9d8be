"""A plugin of mvae_jax, written as a user's own module: a data set, a model, a scorer and an eval section.

    PYTHONPATH=examples python train.py --plugins=my_lab.halves --model=poe --dataset=halves \
        --data_dir=../shared/datasets --epochs=2
    PYTHONPATH=examples python eval.py --workdir=runs/poe_beta1.0

Importing this module registers (``mvae_jax.plugins``):

- data set ``halves``: each MNIST digit cut into its left and right half, two image modalities of 28x14;
  the digit's class comes with the files (no label modality); validation held out (``--validation=N``);
- scorer source ``mnist_left``: MNIST's left halves as an image classification set, whose CNN scores
  ``left`` (trained once, cached); ``right`` is scored by a CNN trained on the data set's own split;
- model ``poe``: a product of experts trained on the ELBO of both halves plus that of each half alone
  (MVAE's objective without its random subsets, Wu & Goodman 2018, Sec. 2.2);
- eval section ``reconstruction``: the mean squared error of each half reconstructed from both.

config.json records ``plugins: ["my_lab.halves"]``, so resuming, ``training.restore_model`` and eval.py
import it again; only ``PYTHONPATH`` must still find it.
"""

from __future__ import annotations

import jax
import numpy as np

from mvae_jax import distributions, losses, plugins
from mvae_jax.data import FROM_FILES, OWN_SPLIT, Dataset, DatasetSpec, Scorer, hold_out, sources
from mvae_jax.evaluation.sections import Section
from mvae_jax.modality import Modality
from mvae_jax.models import Model, check_present
from mvae_jax.models.base import Experts

MODALITIES = (Modality("left", (28, 14, 1), "bernoulli"), Modality("right", (28, 14, 1), "bernoulli"))


def _halves(data_dir):
    """{split: ({"left", "right"} float32 in [0, 1], labels)} of MNIST's IDX files (or tensorflow-datasets)."""
    out = {}
    for split, (images, labels) in sources.load_image_classification("mnist", data_dir).items():
        x = np.asarray(images, np.float32) / 255.0
        out[split] = ({"left": x[:, :, :14], "right": x[:, :, 14:]}, np.asarray(labels))
    return out


def load(config) -> Dataset:
    splits = _halves(config.data_dir)
    (train, train_labels), (test, test_labels) = splits["train"], splits["test"]
    train, validation = hold_out({**train, "": train_labels}, config.validation)
    labels = {"train": train.pop(""), "validation": validation.pop(""), "test": test_labels}
    return Dataset("halves", MODALITIES, train, test, validation=validation, class_labels=labels)


SPEC = DatasetSpec(
    "halves",
    lambda config: MODALITIES,
    load,
    labels=FROM_FILES,
    scorers={"left": Scorer("mnist_left"), "right": Scorer(OWN_SPLIT)},
    options=("validation",),
)


def left_halves(data_dir):
    """MNIST's left halves as a classification set: {"train": (images, labels), "test": ...}."""
    return {split: (data["left"], labels) for split, (data, labels) in _halves(data_dir).items()}


def build(config, modalities) -> Model:
    """p(z) p(left | z) p(right | z); q(z | x_S) = p(z) prod_{m in S} q~(z | x_m) (MVAE, Sec. 2.1);
    loss = -(ELBO(left, right) + ELBO(left) + ELBO(right)), each KL weighted by beta."""
    names = tuple(m.name for m in modalities)
    experts = Experts(config, modalities)

    def encode(params, batch, present):
        present = check_present(present, names)
        return distributions.product_of_experts(*experts.encode_stack(params, batch, present), prior_expert=True)

    def loss(params, batch, rng, epoch=0, beta=float(config.beta)):
        terms, total = {}, 0.0
        for key, subset in zip(jax.random.split(rng, 3), (names, names[:1], names[1:])):
            chosen = tuple(m for m in modalities if m.name in subset)
            elbo, _ = losses.multimodal_elbo(
                key,
                encode(params, batch, subset),
                lambda z, s=subset: experts.decode(params, z, s),
                batch,
                chosen,
                beta,
            )
            terms[f"elbo_{'_'.join(subset)}"] = elbo
            total = total + elbo
        return {**terms, "loss": -total}

    return Model("poe", tuple(modalities), experts.init_from, loss, encode, experts.decode)


def reconstruction(ctx) -> dict:
    """{"reconstruction": {modality: mean squared error of its mean given both halves}} on the scored split."""
    data = {k: v[:1000] for k, v in ctx.scored.items()}
    mu, _ = ctx.model.encode(ctx.params, data, ctx.model.names)
    logits = ctx.model.decode(ctx.params, mu)
    errors = {m.name: float(np.mean((np.asarray(m.mean(logits[m.name])) - data[m.name]) ** 2)) for m in MODALITIES}
    return {"reconstruction": errors}


plugins.register_dataset(SPEC)
plugins.register_source("mnist_left", left_halves)
plugins.register_model("poe", build)
plugins.register_section(Section("reconstruction", reconstruction, ("reconstruction",)))
