"""Latent samplers: where "generation from the prior" draws its z.

A VAE's aggregate posterior rarely fills N(0, I): regions of the prior that no
training example encodes to decode to blur or to the wrong class. Fitting a
density to the training posteriors after training and sampling z from it
instead raises the prior coherence and lowers the FID from the prior for every
model (Ghosh et al. 2020, "From variational to deterministic autoencoders":
ex-post density estimation; MultiVae's ``samplers``).

- ``prior``: z ~ the model's own prior, N(0, I) (Laplace(0, 1) for MMVAE+:
  ``Model.latent_prior``), the default.
- ``gmm``: a Gaussian mixture of ``sampler_components`` full-covariance
  components (scikit-learn's ``GaussianMixture``, EM, ``tol=1e-3``,
  ``max_iter=2000``, as MultiVae's ``GaussianMixtureSampler``), fitted on the
  means of q(z | every modality) of the first ``latent_train_points`` training
  pairs. MultiVae fits one sample of that posterior per example; we fit its
  means, as the issue that asked for samplers specifies (the mean is the
  example's code without the encoder's noise).

A ``LatentSampler`` is arrays, so ``sample`` is a pure JAX function (jit, vmap).
Fitted samplers are saved beside the checkpoints,
``<workdir>/samplers/<name>_k<components>_n<points>_epoch<epoch>.npz``, and read
back by the next evaluation of the same epoch and settings.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.files import atomic_write_bytes, unwritable

log = logging.getLogger(__name__)

SAMPLERS = ("prior", "gmm")
SAMPLERS_DIR = "samplers"


@dataclasses.dataclass(frozen=True)
class LatentSampler:
    """A Gaussian mixture over z: ``weights`` (K,), ``means`` (K, latent), ``scale_trils`` (K, latent, latent)
    lower-triangular factors of the covariances. ``name`` "prior" is the model's prior itself: N(0, I) (K = 1),
    or with ``family`` "laplace" Laplace(0, 1) per coordinate."""

    name: str
    weights: np.ndarray
    means: np.ndarray
    scale_trils: np.ndarray
    family: str = "gaussian"

    @property
    def latent(self) -> int:
        return self.means.shape[-1]

    def sample(self, rng: jax.Array, num_samples: int) -> jax.Array:
        """z (num_samples, latent): a component per sample by its weight, then z = mean + L eps."""
        if self.name == "prior" and self.family == "laplace":
            return jax.random.laplace(rng, (num_samples, self.latent))
        if self.name == "prior":  # the draw eval.py always made: the same z as before samplers existed
            return jax.random.normal(rng, (num_samples, self.latent))
        k_component, k_eps = jax.random.split(rng)
        component = jax.random.categorical(k_component, jnp.log(jnp.asarray(self.weights)), shape=(num_samples,))
        eps = jax.random.normal(k_eps, (num_samples, self.latent))
        means, trils = jnp.asarray(self.means, jnp.float32), jnp.asarray(self.scale_trils, jnp.float32)
        return means[component] + jnp.einsum("nij,nj->ni", trils[component], eps)

    def log_density(self, z: jax.Array) -> jax.Array:
        """log of the mixture's density at z (n, latent): (n,)."""
        z = jnp.asarray(z)
        if self.family == "laplace":
            return -jnp.sum(jnp.log(2.0) + jnp.abs(z), axis=-1)
        trils = jnp.asarray(self.scale_trils, z.dtype)
        diff = z[None] - jnp.asarray(self.means, z.dtype)[:, None]  # (K, n, latent)
        solved = jax.scipy.linalg.solve_triangular(trils, jnp.swapaxes(diff, 1, 2), lower=True)  # (K, latent, n)
        log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(trils, axis1=1, axis2=2))), axis=-1)  # (K,)
        per = -0.5 * jnp.sum(solved**2, axis=1) - log_det[:, None] - 0.5 * self.latent * jnp.log(2 * jnp.pi)
        return jax.nn.logsumexp(per + jnp.log(jnp.asarray(self.weights, z.dtype))[:, None], axis=0)


def prior(latent: int, family: str = "gaussian") -> LatentSampler:
    """N(0, I) over ``latent`` dimensions (``family`` "laplace": Laplace(0, 1) per coordinate)."""
    return LatentSampler("prior", np.ones(1), np.zeros((1, latent)), np.eye(latent)[None], family)


def fit_gmm(codes: np.ndarray, components: int = 10, seed: int = 0) -> LatentSampler:
    """A full-covariance Gaussian mixture fitted by EM on ``codes`` (n, latent) (scikit-learn).

    ValueError naming the numbers when there are fewer codes than components.
    """
    from sklearn.mixture import GaussianMixture

    codes = np.asarray(codes, np.float64)
    if components < 1 or len(codes) < components:
        raise ValueError(
            f"sampler_components={components}: a Gaussian mixture needs 1 to n components, and there are "
            f"{len(codes)} training codes"
        )
    gmm = GaussianMixture(components, covariance_type="full", max_iter=2000, tol=1e-3, random_state=seed)
    gmm.fit(codes)
    return LatentSampler("gmm", gmm.weights_, gmm.means_, np.linalg.cholesky(gmm.covariances_))


def save(sampler: LatentSampler, path: Path) -> None:
    """The sampler's arrays as an .npz, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, name=sampler.name, weights=sampler.weights, means=sampler.means, trils=sampler.scale_trils)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path) -> LatentSampler:
    with np.load(path) as f:
        return LatentSampler(str(f["name"]), f["weights"], f["means"], f["trils"])


def fitted(
    name: str, codes_fn, latent: int, workdir: str | None, epoch: int, components: int, points: int, seed=0, family=""
):
    """The sampler ``name`` of a run: the prior (of ``family``), or a GMM read from the run's ``samplers/``
    folder when one was fitted with these settings, else fitted on ``codes_fn()`` (n, latent) and saved there
    (where writable)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r} is invalid; allowed: {', '.join(SAMPLERS)}")
    if name == "prior":
        return prior(latent, family or "gaussian")
    path = None
    if workdir is not None and Path(workdir).is_dir():
        path = Path(workdir) / SAMPLERS_DIR / f"{name}_k{components}_n{points}_seed{seed}_epoch{epoch}.npz"
        if path.is_file():
            try:
                return load(path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("%s cannot be read (%s): fitting the sampler again", path, e)
    sampler = fit_gmm(codes_fn(), components, seed)
    if path is not None and unwritable(path.parent) is None:
        path.parent.mkdir(exist_ok=True)
        save(sampler, path)
    return sampler
