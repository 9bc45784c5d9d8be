"""CMVAE (Palumbo, Manduchi, Laguna, Chopard & Vogt 2024, "Deep Generative Clustering with Multimodal Diffusion
Variational Autoencoders", ICLR 2024).

MMVAE+ (``mmvaeplus``: shared z and private w_m per modality, Laplace
posteriors, the mixture q(z | X) = (1/M) sum_m q(z | x_m), cross-modal
reconstructions with w~_d from an auxiliary prior r_d) with a clustering prior
on the shared latent: a cluster c ~ Cat(pi) and z | c ~ Laplace(mu_c, 1), pi
and the locations mu_c learned. With one sample (K = 1, the authors' PolyMNIST
``--obj iwae --K 1``) the objective (maximised) is the mean over the encoding
modality r of (the paper's Eq. 3; MultiVae's ``CMVAE._compute_k_lws``):

    z_r ~ q(z | x_r), w_r ~ q(w_r | x_r), q(c | z_r) = pi_c p(z_r | c) / sum_c' pi_c' p(z_r | c')
    L_r = sum_d lambda_d log p(x_d | w~_d, z_r)
          + beta E_{q(c | z_r)} [log pi_c + log p(z_r | c) + log p(w_r) - log q(z_r | X) - log q(w_r | x_r)
                                 - log q(c | z_r)]

Because q(c | z) is the exact posterior of the prior's cluster given z, the
expectation over c is log sum_c pi_c p(z | c) = log p(z) whatever z: the
objective is MMVAE+'s with p(z) the learned Laplace mixture, and that is how
it is computed here (``tests/test_cmvae.py`` checks it against the explicit
expectation in float64).

Initialisation as MultiVae's and the authors': pi uniform (logits 0), each
mu_c uniform in [-1, 1]^D, the clusters' scales fixed at
softmax(0) * D + eta = 1 + eta (the authors' code keeps them fixed).

After training, clusters are read from the shared latent and the number of
clusters is chosen without labels (the paper's Sec. 3.3, "post-hoc selection";
MultiVae's ``predict_clusters`` and ``prune_clusters``):
``mvae_jax.evaluation.metrics.clusters`` and eval.py's ``clusters`` section.

Options: ``--num_clusters`` C (40, the authors' PolyMNIST value, about four
times the classes: the selection prunes it), ``--latent_dim`` z's size,
``--private_dim`` each w_m's, ``--likelihood_weights``; the authors' PolyMNIST
recipe (``run_polyMNIST_experiment.sh``): latent 32, private 32, beta 2.5,
batch 128, 250 epochs, Laplace image likelihood.

Where this module differs from the authors' code (epalu/CMVAE) and
MultiVae's, beyond MMVAE+'s differences (``mmvaeplus``): K = 1 only (their
``iwae``/``dreg`` objectives with K > 1 are not built); no DiffCMVAE (the
diffusion decoder that the paper adds for sharper images).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvae_jax import distributions
from mvae_jax import options as opt
from mvae_jax.modality import Modality
from mvae_jax.models import mmvaeplus
from mvae_jax.models.base import LIKELIHOOD_WEIGHTS, PRIVATE_DIM, Model

NUM_CLUSTERS = opt.integer(
    "num_clusters",
    40,
    "clusters C of CMVAE's mixture prior on the shared latent (40: the authors' PolyMNIST value; eval.py's "
    "clusters section prunes them to the number it selects)",
    2,
)

OPTIONS = (LIKELIHOOD_WEIGHTS, PRIVATE_DIM, NUM_CLUSTERS)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


class ClusterPrior:
    """p(z) = sum_c pi_c Laplace(z; mu_c, 1): parameters ``logits`` (C,) of pi and ``locations`` (C, latent)."""

    def __init__(self, num_clusters: int):
        self.num_clusters = num_clusters

    def init(self, rng: jax.Array, latent: int) -> dict:
        return {
            "logits": jnp.zeros((self.num_clusters,), jnp.float32),
            "locations": jax.random.uniform(rng, (self.num_clusters, latent), jnp.float32, -1.0, 1.0),
        }

    @staticmethod
    def scales(params: dict) -> jax.Array:
        """The clusters' fixed scales, (C, latent): softmax(0) * D + eta, as the authors parameterise them."""
        return mmvaeplus.scales(jnp.zeros_like(params["locations"]))

    def joint(self, params: dict, z: jax.Array) -> jax.Array:
        """log pi_c + log p(z | c) for every cluster: (..., C) from z (..., latent)."""
        log_pi = jax.nn.log_softmax(params["logits"])
        per = distributions.laplace_log_density(z[..., None, :], params["locations"], self.scales(params))
        return per + log_pi

    def log_density(self, params: dict, z: jax.Array) -> jax.Array:
        return jax.nn.logsumexp(self.joint(params, z), axis=-1)

    def mixture(self, params: dict):
        return jax.nn.softmax(params["logits"]), params["locations"], self.scales(params)


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """CMVAE: MMVAE+ with ``config.num_clusters`` Laplace clusters as the prior of the shared latent."""
    return mmvaeplus.make(config, modalities, "cmvae", ClusterPrior(int(config.num_clusters)))
