"""Latent samplers: where "generation from the prior" draws its z.

A VAE's aggregate posterior rarely fills N(0, I): regions of the prior that no
training example encodes to decode to blur or to the wrong class. Fitting a
density to the training posteriors after training and sampling z from it
instead raises the prior coherence and lowers the FID from the prior for every
model (Ghosh et al. 2020, "From variational to deterministic autoencoders":
ex-post density estimation; MultiVae's ``samplers``).

- ``prior``: z ~ the model's own prior, N(0, I) (Laplace(0, 1) for MMVAE+:
  ``Model.latent_prior``; CMVAE's learned mixture of Laplace clusters:
  ``Model.prior_mixture``), the default.
- ``gmm``: a Gaussian mixture of ``sampler_components`` full-covariance
  components (scikit-learn's ``GaussianMixture``, EM, ``tol=1e-3``,
  ``max_iter=2000``, as MultiVae's ``GaussianMixtureSampler``), fitted on the
  means of q(z | every modality) of the first ``latent_train_points`` training
  pairs. MultiVae fits one sample of that posterior per example; we fit its
  means, as the issue that asked for samplers specifies (the mean is the
  example's code without the encoder's noise).

- ``maf``: a masked autoregressive flow (Papamakarios et al. 2017) fitted by
  maximum likelihood on the same codes, standardised per coordinate, through
  flowjax (the ``flows`` extra: ``pip install -e '.[flows]'``): 2 MADE layers
  of 3 hidden layers of 128 units (MultiVae's ``MAFSampler`` defaults, from
  pythae), affine transformers, a N(0, I) base; Adam at flowjax's 5e-4,
  batches of 100, up to ``MAF_EPOCHS`` epochs with early stopping on a
  held-out tenth of the codes (patience 5), the best epoch's flow kept.
  flowjax rather than distrax: it ships the MAF and its fitting loop, is
  maintained for current JAX, and needs no TensorFlow Probability.

A ``LatentSampler`` is arrays, so ``sample`` is a pure JAX function (jit, vmap).
Fitted samplers are saved beside the checkpoints,
``<workdir>/samplers/gmm_k<components>_n<points>_seed<seed>_epoch<epoch>.npz`` (``maf_l2w128d3_...`` for
the flow), and read
back by the next evaluation of the same epoch and settings.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax.files import atomic_write_bytes, unwritable

log = logging.getLogger(__name__)

SAMPLERS = ("prior", "gmm", "maf")
MAF_LAYERS, MAF_WIDTH, MAF_DEPTH, MAF_EPOCHS = 2, 128, 3, 100
SAMPLERS_DIR = "samplers"


@dataclasses.dataclass(frozen=True)
class LatentSampler:
    """A Gaussian mixture over z: ``weights`` (K,), ``means`` (K, latent), ``scale_trils`` (K, latent, latent)
    lower-triangular factors of the covariances. ``name`` "prior" is the model's prior itself: N(0, I) (K = 1),
    or with ``family`` "laplace" Laplace(0, 1) per coordinate, or a learned mixture (``Model.prior_mixture``,
    CMVAE's clusters: K > 1, Laplace components of diagonal scales ``scale_trils``)."""

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
        standard = self.name == "prior" and len(self.weights) == 1
        if standard and self.family == "laplace":
            return jax.random.laplace(rng, (num_samples, self.latent))
        if standard:  # the draw eval.py always made: the same z as before samplers existed
            return jax.random.normal(rng, (num_samples, self.latent))
        k_component, k_eps = jax.random.split(rng)
        component = jax.random.categorical(k_component, jnp.log(jnp.asarray(self.weights)), shape=(num_samples,))
        means, trils = jnp.asarray(self.means, jnp.float32), jnp.asarray(self.scale_trils, jnp.float32)
        if self.family == "laplace":  # a learned mixture prior (CMVAE): diagonal scales
            scales = jnp.diagonal(trils, axis1=1, axis2=2)
            return means[component] + scales[component] * jax.random.laplace(k_eps, (num_samples, self.latent))
        eps = jax.random.normal(k_eps, (num_samples, self.latent))
        return means[component] + jnp.einsum("nij,nj->ni", trils[component], eps)

    def log_density(self, z: jax.Array) -> jax.Array:
        """log of the mixture's density at z (n, latent): (n,)."""
        z = jnp.asarray(z)
        if self.family == "laplace":
            scales = jnp.diagonal(jnp.asarray(self.scale_trils, z.dtype), axis1=1, axis2=2)[:, None]  # (K, 1, latent)
            diff = jnp.abs(z[None] - jnp.asarray(self.means, z.dtype)[:, None])
            per = -jnp.sum(jnp.log(2.0 * scales) + diff / scales, axis=-1)  # (K, n)
            return jax.nn.logsumexp(per + jnp.log(jnp.asarray(self.weights, z.dtype))[:, None], axis=0)
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


def import_flowjax():
    """flowjax, or an ImportError that says how to install it (the ``flows`` extra)."""
    try:
        import flowjax.flows  # noqa: F401
        import flowjax.train  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "sampler='maf' needs flowjax, an optional extra: pip install -e '.[flows]' (or pip install flowjax)"
        ) from e
    import flowjax

    return flowjax


@dataclasses.dataclass(frozen=True)
class FlowSampler:
    """A normalizing flow over standardised codes: z = ``shift`` + ``scale`` * u, u ~ ``flow`` (a flowjax
    distribution). ``losses``: the fit's training and validation losses per epoch (empty when read back)."""

    name: str
    flow: Any
    shift: np.ndarray
    scale: np.ndarray
    losses: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def latent(self) -> int:
        return int(self.shift.shape[-1])

    def sample(self, rng: jax.Array, num_samples: int) -> jax.Array:
        if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):  # flowjax takes typed keys only
            rng = jax.random.wrap_key_data(rng)
        u = self.flow.sample(rng, (num_samples,))
        return jnp.asarray(self.shift, jnp.float32) + jnp.asarray(self.scale, jnp.float32) * u

    def log_density(self, z: jax.Array) -> jax.Array:
        u = (jnp.asarray(z) - self.shift) / self.scale
        return self.flow.log_prob(u) - jnp.sum(jnp.log(jnp.asarray(self.scale)))


def _maf_skeleton(latent: int, seed: int):
    flowjax = import_flowjax()
    base = flowjax.distributions.Normal(jnp.zeros(latent))
    return flowjax.flows.masked_autoregressive_flow(
        jax.random.key(seed), base_dist=base, flow_layers=MAF_LAYERS, nn_width=MAF_WIDTH, nn_depth=MAF_DEPTH
    )


def fit_maf(codes: np.ndarray, seed: int = 0, max_epochs: int = MAF_EPOCHS) -> FlowSampler:
    """A MAF fitted by maximum likelihood on ``codes`` (n, latent), standardised per coordinate (flowjax).

    ValueError naming the count when there are too few codes to hold a tenth out for early stopping.
    """
    flowjax = import_flowjax()
    codes = np.asarray(codes, np.float64)
    if len(codes) < 20:
        raise ValueError(f"sampler='maf' needs at least 20 training codes (a tenth held out); there are {len(codes)}")
    shift, scale = codes.mean(0), np.maximum(codes.std(0), 1e-6)
    flow = _maf_skeleton(codes.shape[1], seed)
    flow, losses = flowjax.train.fit_to_data(
        jax.random.key(seed + 1),
        flow,
        jnp.asarray((codes - shift) / scale, jnp.float32),
        max_epochs=max_epochs,
        show_progress=False,
    )
    losses = {k: [float(v) for v in vals] for k, vals in losses.items()}
    return FlowSampler("maf", flow, shift.astype(np.float32), scale.astype(np.float32), losses)


def save_flow(sampler: FlowSampler, path: Path) -> None:
    """The flow's parameters (equinox's leaf serialisation) and its standardisation, in one file, atomically."""
    import equinox as eqx

    leaves = io.BytesIO()
    eqx.tree_serialise_leaves(leaves, sampler.flow)
    buffer = io.BytesIO()
    np.savez(buffer, shift=sampler.shift, scale=sampler.scale, flow=np.frombuffer(leaves.getvalue(), np.uint8))
    atomic_write_bytes(path, buffer.getvalue())


def load_flow(path: Path, seed: int) -> FlowSampler:
    import equinox as eqx

    with np.load(path) as f:
        shift, scale, leaves = f["shift"], f["scale"], f["flow"].tobytes()
    flow = eqx.tree_deserialise_leaves(io.BytesIO(leaves), _maf_skeleton(shift.shape[-1], seed))
    return FlowSampler("maf", flow, shift, scale)


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
    if name == "maf":
        import_flowjax()  # before the codes are computed
    path = None
    stem = f"gmm_k{components}" if name == "gmm" else f"maf_l{MAF_LAYERS}w{MAF_WIDTH}d{MAF_DEPTH}"
    if workdir is not None and Path(workdir).is_dir():
        path = Path(workdir) / SAMPLERS_DIR / f"{stem}_n{points}_seed{seed}_epoch{epoch}.npz"
        if path.is_file():
            try:
                return load(path) if name == "gmm" else load_flow(path, seed)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                log.warning("%s cannot be read (%s): fitting the sampler again", path, e)
    sampler = fit_gmm(codes_fn(), components, seed) if name == "gmm" else fit_maf(codes_fn(), seed)
    if path is not None and unwritable(path.parent) is None:
        path.parent.mkdir(exist_ok=True)
        (save if name == "gmm" else save_flow)(sampler, path)
    return sampler
