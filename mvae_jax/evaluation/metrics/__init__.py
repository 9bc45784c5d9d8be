"""Evaluation of a trained model, one module per metric (as MultiVae's ``metrics/<metric>/``):
``coherences``, ``latents``, ``likelihoods``, ``fids``, ``queries``, ``clusters``, and what they share (``common``).

Every function takes the model (pure functions), its parameters and data as
dicts of arrays keyed by modality name; image modalities are scored by
classifiers passed in as functions (see :mod:`mvae_jax.classifiers`), so a
test can pass exact ones. Long loops report to an optional ``progress(n)``
callback (a tqdm bar's ``update``); the library itself never prints.
Everything is importable from here too (``metrics.coherence``).
"""

from mvae_jax.evaluation.metrics import clusters, samplers
from mvae_jax.evaluation.metrics.coherences import (
    coherence,
    coherence_by_inputs,
    coherence_pairs,
    label_coherence,
    label_samples,
    prior_coherence,
    scorable,
)
from mvae_jax.evaluation.metrics.common import (
    Classify,
    Progress,
    classify_outputs,
    model_latent,
    posterior_means,
    prior_images,
    subset_key,
)
from mvae_jax.evaluation.metrics.fids import (
    fid,
    fid_pairs,
    frechet_distance,
    frechet_distance_gaussians,
    label_diversity,
    mean_pairwise_distance,
)
from mvae_jax.evaluation.metrics.latents import label_accuracy, latent_accuracy, predict_labels
from mvae_jax.evaluation.metrics.likelihoods import iw_log_likelihood, log_likelihoods
from mvae_jax.evaluation.metrics.queries import parse_query, query_images, query_latents

__all__ = [
    "clusters",
    "samplers",
    "Classify",
    "Progress",
    "classify_outputs",
    "coherence",
    "coherence_by_inputs",
    "coherence_pairs",
    "fid",
    "fid_pairs",
    "frechet_distance",
    "frechet_distance_gaussians",
    "iw_log_likelihood",
    "label_accuracy",
    "label_coherence",
    "label_diversity",
    "label_samples",
    "latent_accuracy",
    "log_likelihoods",
    "mean_pairwise_distance",
    "model_latent",
    "parse_query",
    "posterior_means",
    "predict_labels",
    "prior_coherence",
    "prior_images",
    "query_images",
    "query_latents",
    "scorable",
    "subset_key",
]
