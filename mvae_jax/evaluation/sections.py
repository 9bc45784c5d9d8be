"""The sections of ``eval.py`` as a registry: ``SECTIONS[name](context) -> {metrics key: value}``.

Each section reads what it needs from one ``Context`` (the run, its data, the
evaluation's options) and returns the entries it adds to ``metrics.json``;
figures go into ``context.out_dir``. A ``Section`` declares the metrics keys it
writes, the options it reads (eval.py's flags come from them), whether it needs
class labels and the files it writes. ``eval.py`` parses flags, builds the
context and runs the sections asked for, saving after each. To add a section,
write ``fn(context) -> dict`` here and register a ``Section`` in ``SECTIONS``.

The sections that score are here; those that draw are in ``figure_sections``; the ``Context`` they read and
the scoring CNNs they share in ``context``.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import logging

import jax
import jax.numpy as jnp

from mvae_jax import options as opt
from mvae_jax.evaluation import metrics
from mvae_jax.evaluation.context import Context, Skipped, scoring_cnns
from mvae_jax.evaluation.figure_sections import (  # noqa: F401 (panel_titles, query: api's and eval.py's names)
    SAMPLES_FILE,
    cross_modal,
    curves,
    panel_titles,
    query,
    samples,
    tsne,
)
from mvae_jax.models.base import Model

log = logging.getLogger("mvae_jax.evaluation")


DIVERSITY_SAMPLES = 100  # images per class generated from the label (``diversity``, ``label_coherence``)
LABEL_STREAM = 7  # their key: fold_in(--seed key, 7), so both statistics describe the same images


def coherence(ctx: Context) -> dict:
    """Cross-modal and prior coherence, scored by the data set's CNNs, and the coherence of samples given
    the label (``metrics.label_coherence``).

    By default the CNNs shipped in ``mvae_jax/weights`` (checksum verified), so
    every user scores with the same ones; with ``--classifier_dir`` or
    ``--classifier_epochs``, ones trained here once and cached.
    """
    from mvae_jax import classifiers

    cnns, accuracies = scoring_cnns(ctx)
    classify = {name: lambda images, p=params: classifiers.predict(p, images) for name, params in cnns.items()}
    scorable = metrics.scorable(ctx.model, classify)
    if not scorable:
        raise Skipped(f"no modality of {ctx.config.dataset} can be classified (its contract declares no scorer)")
    pairs = metrics.coherence_pairs(ctx.model, classify)
    n = ctx.options.coherence_points or len(ctx.scored_labels)  # the first N: a split's order covers every class
    scored = {name: values[:n] for name, values in ctx.scored.items()}
    with ctx.progress(len(pairs), "coherence") as update:
        sampling = jax.random.fold_in(ctx.rng, 2) if ctx.options.generation == "sample" else None
        scores = metrics.coherence(
            ctx.model, ctx.params, scored, ctx.scored_labels[:n], classify, progress=update, rng=sampling
        )
    if len(scorable) >= 2:
        sampler = ctx.sampler()
        scores[sampler.name] = metrics.prior_coherence(
            ctx.model,
            ctx.params,
            jax.random.fold_in(ctx.rng, 1),
            classify,
            ctx.options.prior_samples,
            sampler=sampler,
            private=ctx.options.generation == "sample",
        )
    else:
        log.warning("coherence: no prior coherence, which needs two classified modalities (%s has one)", scorable[0])
    out = {"classifiers": accuracies, "coherence": scores, "coherence_by_inputs": metrics.coherence_by_inputs(scores)}
    label = ctx.dataset.label_modality
    if label is not None:  # the same images as fid's diversity (same key and count)
        sampled = metrics.label_coherence(
            ctx.model, ctx.params, label, jax.random.fold_in(ctx.rng, LABEL_STREAM), classify, DIVERSITY_SAMPLES
        )
        out["label_coherence"] = {**sampled, "samples": DIVERSITY_SAMPLES}
    return out


OBJECTIVE_STREAM = 8  # folded into the evaluation's key: the objective's z draws


def objective(ctx: Context) -> dict:
    """The model's own training objective on the split: the mean of every loss term of ``model.loss``, at the
    weights of the end of training (warm-ups over), one z draw per pair, as train.py's validation scores it.

    For MVAE this is its sub-sampled objective, the sum of the ELBOs of all modalities, of each single one and of
    any random subsets, with ``--likelihood_weights``; ``loss`` is its negative. In-memory data sets only.
    """
    from mvae_jax.models.base import AFTER_WARMUPS, make_mean_loss_fn

    if not isinstance(ctx.scored, dict):
        log.warning("section objective: the %s split is read from disk batch by batch; skipped", ctx.options.split)
        return {}
    n = len(ctx.scored[ctx.model.names[0]])
    fn = make_mean_loss_fn(ctx.model, n, ctx.config.batch_size, AFTER_WARMUPS)
    data = {k: jnp.asarray(v) for k, v in ctx.scored.items()}
    terms = jax.device_get(fn(ctx.params, jax.random.fold_in(ctx.rng, OBJECTIVE_STREAM), data))
    return {"objective": {**{k: float(v) for k, v in terms.items()}, "points": n}}


def fid(ctx: Context) -> dict:
    """Frechet distances of generated to real images in the scoring CNN's penultimate features (lower: closer),
    and the diversity of images generated from the label in the same features (``metrics.label_diversity``).

    Per image modality t with a scoring CNN (a class scorer, else an attribute scorer: CelebA's faces in the
    features of its attribute CNN): "S->t" from one z ~ q(z | x_S)
    per pair, "joint->t" (reconstruction) and "prior->t", each over the first
    ``--fid_points`` pairs of the split and as many generated images, against
    those pairs' real images (``metrics.fid``). Values from different
    ``--fid_points`` are not comparable (the estimate is biased with n).
    """
    from mvae_jax import classifiers

    cnns, _ = scoring_cnns(ctx)
    cnns = cnns or scoring_cnns(ctx, attributes=True)[0]
    if not cnns:
        raise Skipped(f"no image modality of {ctx.config.dataset} has a scoring CNN, whose features FID compares")
    if ctx.dataset.is_streamed:
        data = ctx.scored.take(ctx.options.fid_points)
    else:
        data = {k: v[: ctx.options.fid_points] for k, v in ctx.scored.items()}
    n = len(data[ctx.model.names[0]])
    features = {name: lambda images, p=params: classifiers.features(p, images) for name, params in cnns.items()}
    with ctx.progress(len(metrics.fid_pairs(ctx.model, tuple(features))) + 1, f"FID of {n} images") as update:
        scores = metrics.fid(
            ctx.model,
            ctx.params,
            data,
            jax.random.fold_in(ctx.rng, 6),
            features,
            progress=update,
            binarize=ctx.dataset.binarize,
            sampler=ctx.sampler(),
            private=ctx.options.generation == "sample",
        )
    out = {"fid": {**scores, "points": n}}
    label = ctx.dataset.label_modality
    if label is not None:
        diversity = metrics.label_diversity(
            ctx.model,
            ctx.params,
            label,
            jax.random.fold_in(ctx.rng, LABEL_STREAM),
            features,
            DIVERSITY_SAMPLES,
            data,
            ctx.scored_labels[:n],
        )
        out["diversity"] = {**diversity, "samples": DIVERSITY_SAMPLES}
    return out


def latent_accuracy(ctx: Context) -> dict:
    """Logistic regressions on the posterior means of every subset, fit on training pairs."""
    train, labels = ctx.dataset.train, ctx.train_labels
    if ctx.options.latent_train_points:
        train = {k: v[: ctx.options.latent_train_points] for k, v in train.items()}
    with ctx.progress(2 ** len(ctx.model.names) - 1, "latent accuracy") as update:
        scores = metrics.latent_accuracy(
            ctx.model,
            ctx.params,
            train,
            labels[: len(train[ctx.model.names[0]])],
            ctx.scored,
            ctx.scored_labels,
            progress=update,
        )
    return {"latent_accuracy": scores}


def clusters(ctx: Context) -> dict:
    """A cluster prior's clusters (CMVAE): their number selected on training pairs without labels, then their
    accuracy and NMI against the classes of the evaluated split (``metrics.clusters``)."""
    if ctx.model.prior_mixture is None:
        raise Skipped(f"{ctx.model.name} has no cluster prior (clusters are cmvae's)")
    if ctx.dataset.is_streamed:
        raise Skipped(f"{ctx.config.dataset} is streamed: the cluster selection reads training pairs in memory")
    train, points = ctx.dataset.train, ctx.options.latent_train_points
    if points:
        train = {k: v[:points] for k, v in train.items()}
    scores = metrics.clusters.cluster_scores(
        ctx.model, ctx.params, train, ctx.scored, ctx.scored_labels, jax.random.fold_in(ctx.rng, 11), ctx.config.beta
    )
    return {"clusters": scores}


def log_likelihood(ctx: Context) -> dict:
    """Importance-weighted log-likelihoods of every modality and of all of them."""
    if ctx.model.latent_prior != "gaussian" or ctx.model.private_latents:
        private = " and private latents" if ctx.model.private_latents else ""
        raise Skipped(
            f"{ctx.model.name}: the importance-weighted estimate assumes one latent with prior N(0, I); "
            f"{ctx.model.name} has a {ctx.model.latent_prior} prior{private}"
        )
    options, data = ctx.options, ctx.scored
    if ctx.dataset.is_streamed:
        data = data.take(options.ll_points or len(data))
    elif options.ll_points:
        data = {k: v[: options.ll_points] for k, v in data.items()}
    n = len(data[ctx.model.names[0]])
    with ctx.progress(n * (len(ctx.model.names) + 1), f"log-likelihood (K={options.iw_samples})") as update:
        ll = metrics.log_likelihoods(
            ctx.model,
            ctx.params,
            data,
            jax.random.fold_in(ctx.rng, 2),
            options.iw_samples,
            options.iw_proposal,
            progress=update,
        )
    return {
        "log_likelihood": {**ll, "num_samples": options.iw_samples, "proposal": options.iw_proposal, "test_points": n}
    }


@dataclasses.dataclass(frozen=True)
class Section:
    """One section of eval.py: ``run(context)`` returns the entries it adds to metrics.json, which must be
    among its declared ``keys``; ``options``: the flags only it (or the sections sharing them) reads, from
    which eval.py builds its own; ``labelled``: it needs class labels (``DatasetSpec.labels``); ``files``: the
    figures and arrays it writes into the eval folder; ``applies``: None, or model -> whether the default
    sections include it for that model (asked for by name, it runs and says why it is skipped)."""

    name: str
    run: Callable[[Context], dict]
    keys: tuple[str, ...] = ()
    options: tuple[opt.Option, ...] = ()
    labelled: bool = False
    files: tuple[str, ...] = ()
    applies: Callable[[Model], bool] | None = None

    def __call__(self, ctx: Context) -> dict:
        out = self.run(ctx)
        undeclared = sorted(set(out) - set(self.keys))
        if undeclared:
            raise RuntimeError(f"section {self.name} wrote {undeclared}, which it does not declare in keys {self.keys}")
        return out


# The options of the sections (eval.py's flags beyond the run, split and output it names).
SCORER_OPTIONS = (
    opt.Option(
        "classifier_dir",
        "path",
        None,
        "score with CNNs trained here and cached in DIR (trained once if absent) instead of the ones shipped in "
        "mvae_jax/weights (the default: the same scorers for every user, checksum verified)",
    ),
    opt.integer(
        "classifier_epochs",
        0,
        "train scoring CNNs of this many epochs (cached in --classifier_dir, default $MVAE_JAX_CACHE/classifiers "
        "or ~/.cache/mvae_jax/classifiers) instead of using the shipped ones (0: the shipped ones, 5 epochs for "
        "MNIST, 10 for Fashion-MNIST)",
    ),
)
PRIOR_SAMPLES = opt.integer("prior_samples", 10_000, "z ~ p(z) for prior coherence", 1)
SAMPLER_OPTIONS = (
    opt.choice(
        "sampler",
        "prior",
        metrics.samplers.SAMPLERS,
        "where generation 'from the prior' draws z (prior coherence, FID, samples.png): prior = the model's p(z); "
        "gmm = a Gaussian mixture, maf = a masked autoregressive flow (the flows extra), fitted on the means of "
        "q(z|every modality) of the first --latent_train_points training pairs, saved in the run's samplers/ "
        "(metrics keys 'gmm' and 'gmm->t', or 'maf' and 'maf->t', instead of 'prior', 'prior->t')",
    ),
    opt.integer("sampler_components", 10, "components of --sampler=gmm (MultiVae's default)", 1),
)
GENERATION = opt.choice(
    "generation",
    "mean",
    ("mean", "sample"),
    "how coherence and FID generate: mean = conditional coherence decodes the mean of q(z|x_S), and a model's "
    "private latents (MMVAE+, CMVAE, DMVAE) sit at their prior's mean; sample = the papers' test-time "
    "generation (MoPoE's and MMVAE+'s code, MultiVae's CoherenceEvaluator): one z ~ q(z|x_S) per example, and "
    "private latents drawn from their prior. FID always draws z; sample draws the private latents too",
)
COHERENCE_POINTS = opt.integer(
    "coherence_points",
    0,
    "pairs of the split the conditional coherences score: the first N (0: all, the papers' protocol; fewer for a "
    "reduced budget, which the report states)",
)
LATENT_TRAIN_POINTS = opt.integer(
    "latent_train_points",
    20_000,
    "training pairs the latent classifiers are fit on, and the clusters section selects on: the first N (0: all). "
    "20,000 fit in 5.4 s against 12.9 s "
    "for all 60,000, every subset's accuracy within 0.002 of the full fit (JMVAE, docs/PERFORMANCE.md)",
)
LIKELIHOOD_OPTIONS = (
    opt.integer("iw_samples", 1000, "importance samples K per estimate", 1),
    opt.choice(
        "iw_proposal", "own", ("own", "joint"), "z for log p(x_m) from q(z|x_m) (own) or q(z|all) (joint: JMVAE paper)"
    ),
    opt.integer(
        "ll_points",
        1000,
        "pairs of the split the likelihoods average: the first N (a few minutes with K = 1000; 0: all, the "
        "published estimate, about ten times longer)",
    ),
)
FID_POINTS = opt.integer(
    "fid_points", 5000, "pairs of the split the FIDs compare with as many generated images: the first N", 2
)
TSNE_POINTS = opt.integer("tsne_points", 5000, "test pairs in tsne.png", 5)

_SECTIONS = (
    Section(
        "coherence",
        coherence,
        ("classifiers", "coherence", "coherence_by_inputs", "label_coherence"),
        (*SCORER_OPTIONS, PRIOR_SAMPLES, COHERENCE_POINTS, GENERATION, *SAMPLER_OPTIONS, LATENT_TRAIN_POINTS),
        labelled=True,
    ),
    Section("latent_accuracy", latent_accuracy, ("latent_accuracy",), (LATENT_TRAIN_POINTS,), labelled=True),
    Section(
        "clusters",
        clusters,
        ("clusters",),
        (LATENT_TRAIN_POINTS,),
        labelled=True,
        applies=lambda model: model.prior_mixture is not None,
    ),
    Section("log_likelihood", log_likelihood, ("log_likelihood",), LIKELIHOOD_OPTIONS),
    Section("objective", objective, ("objective",)),
    Section(
        "fid",
        fid,
        ("fid", "diversity"),
        (*SCORER_OPTIONS, FID_POINTS, GENERATION, *SAMPLER_OPTIONS, LATENT_TRAIN_POINTS),
    ),
    Section("tsne", tsne, (), (TSNE_POINTS,), labelled=True, files=("tsne.png",)),
    Section("cross_modal", cross_modal, (), labelled=True, files=("cross_modal.png",)),
    Section("samples", samples, (), (*SAMPLER_OPTIONS, LATENT_TRAIN_POINTS), files=(SAMPLES_FILE, "samples.png")),
    Section("curves", curves, (), files=("curves.png",)),
)

SECTIONS: dict[str, Section] = {section.name: section for section in _SECTIONS}
"""Section name -> Section, in the order eval.py runs them. To add one, register a Section here."""

LABELLED = tuple(name for name, section in SECTIONS.items() if section.labelled)
"""The built-in sections that need class labels (``DatasetSpec.labels``); ``labelled_sections()`` adds those
that plugins registered."""


def labelled_sections() -> tuple[str, ...]:
    """Every registered section that needs class labels, in the order they run."""
    return tuple(name for name, section in SECTIONS.items() if getattr(section, "labelled", False))


def options() -> dict[str, opt.Option]:
    """{name: Option} of every section's options (one object where sections share one); a plain function
    registered as a section has none."""
    return opt.merge({name: getattr(s, "options", ()) for name, s in SECTIONS.items()}, "section")


def readers(name: str) -> tuple[str, ...]:
    """The sections that read option ``name``."""
    return opt.owners({n: getattr(s, "options", ()) for n, s in SECTIONS.items()}).get(name, ())
