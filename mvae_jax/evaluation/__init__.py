"""Evaluation of a trained model: metrics (``metrics``), the sections of eval.py (``sections``), tables (``report``).

Every metric takes the model (pure functions), its parameters and data as
dicts of arrays keyed by modality name; image modalities are scored by
classifiers passed in as functions (see :mod:`mvae_jax.classifiers`), so a
test can pass exact ones.
"""

from mvae_jax.evaluation.metrics import (
    classify_outputs,
    coherence,
    coherence_pairs,
    fid,
    fid_pairs,
    frechet_distance,
    frechet_distance_gaussians,
    iw_log_likelihood,
    label_accuracy,
    label_coherence,
    label_diversity,
    label_samples,
    latent_accuracy,
    log_likelihoods,
    mean_pairwise_distance,
    model_latent,
    parse_query,
    posterior_means,
    predict_labels,
    prior_coherence,
    prior_images,
    query_images,
    query_latents,
    subset_key,
)
from mvae_jax.evaluation.report import results_table
from mvae_jax.evaluation.sections import LABELLED, SECTIONS, Context

__all__ = [
    "LABELLED",
    "SECTIONS",
    "Context",
    "classify_outputs",
    "coherence",
    "coherence_pairs",
    "fid",
    "fid_pairs",
    "frechet_distance",
    "frechet_distance_gaussians",
    "label_coherence",
    "label_diversity",
    "label_samples",
    "mean_pairwise_distance",
    "iw_log_likelihood",
    "label_accuracy",
    "latent_accuracy",
    "log_likelihoods",
    "model_latent",
    "parse_query",
    "posterior_means",
    "predict_labels",
    "prior_coherence",
    "prior_images",
    "query_images",
    "query_latents",
    "results_table",
    "subset_key",
]
