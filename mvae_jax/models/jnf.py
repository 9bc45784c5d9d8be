"""JNF (Senellart, Chadebec & Allassonnière 2023, "Improving Multimodal Joint Variational Autoencoders through
Normalizing Flows and Correlation Analysis", arXiv:2305.11832): a joint VAE, then unimodal posteriors made of a
Gaussian and a normalizing flow, fitted to the joint one; subsets by a product of experts sampled with HMC.

Generative model p(z) prod_m p(x_m | z), one decoder per modality, and a joint encoder q(z | X), X = x_1..x_M
(JMVAE's networks). Each modality m also has an encoder giving a Gaussian N(mu_m(x_m), sigma_m(x_m)) and a
masked autoregressive flow f_m (Papamakarios et al. 2017): the unimodal posterior is the density

    q_m(z | x_m) = N(f_m(z); mu_m(x_m), sigma_m(x_m)) |det df_m/dz|,

sampled as z = f_m^{-1}(z0), z0 ~ N(mu_m, sigma_m). Training has two stages (the authors' code, MultiVae's
``JNF``, by the paper's first author; ``--jnf_warmup`` epochs, MultiVae's ``warmup``, default 10):

1. the joint VAE alone: maximise the ELBO of all modalities (beta weighting the KL, lambda_m
   ``--likelihood_weights``)

       ELBO(X) = E_q(z|X)[sum_m lambda_m log p(x_m | z)] - beta KL(q(z|X) || p(z));

2. the joint encoder and the decoders frozen, each unimodal posterior fitted to the joint one by minimising
   L_JM = sum_m KL(q(z|X) || q_m(z|x_m)), which, up to the entropy of the frozen q(z|X), is

       L_JM = - sum_m E_q(z|X)[log q_m(z | x_m)]     (one sample z ~ q(z|X), the ELBO's own).

The per-example objective is ``-ELBO + [epoch >= warmup] L_JM``, and ``Model.trainable`` zeroes the updates of
the joint encoder and the decoders from the warm-up's end (MultiVae sets them ``requires_grad_(False)`` and resets
the optimizer), and those of the unimodal encoders and flows before it: each stage's gradients are MultiVae's, and
the validation objective (``epoch`` past the warm-up) scores both parts.

Inference (MultiVae's ``JNF.encode``):
- every modality: q(z | X), the joint encoder;
- one modality m: q_m(z | x_m), the flow;
- a subset S of two or more, short of all: the product of experts divided by the prior,
  q(z | x_S) ~ prod_{m in S} q_m(z | x_m) / p(z)^{|S|-1} (each q_m approximates p(z | x_m), proportional to
  p(x_m | z) p(z)), sampled by Hamiltonian Monte Carlo from a draw of the mixture of the experts:
  ``--jnf_hmc_steps`` steps (MultiVae 200) of ``--jnf_leapfrog_steps`` leapfrog steps (10) of size
  ``--jnf_step_size`` (0.01), with a Metropolis correction. MultiVae divides by p(z) once whatever |S|; the two
  agree for two inputs (every proper subset of the trimodal set) and we follow the product's algebra beyond.
  Unlike MultiVae, the experts' encoders run once per example, not at every leapfrog step: only the flows
  depend on z. The product over p(z)^{|S|-1} has a normaliser only when the experts together are narrower than
  the prior they divide out (for Gaussian experts: sum_m 1/sigma_m^2 > |S| - 1 per coordinate); trained
  unimodal posteriors are, but an untrained encoder's variances can exceed 1, and the chains then drift away.

``encode`` returns the first two moments of these posteriors: exact for q(z | X); for the flows and the HMC
chains, estimated from ``MOMENT_DRAWS`` (16) and ``HMC_MOMENT_DRAWS`` (4) draws per example with a fixed key
(so that the posterior mean, which coherence, latent accuracy and tSNE read, is a deterministic function of the
input). ``Model.sample`` draws from the posteriors themselves (cross-modal samples, FID). The importance-weighted
log-likelihood uses the moments' Gaussian as its proposal, which keeps the estimator unbiased.

Differences from MultiVae: MultiVae's warm-up loss leaves out ``beta`` (its config has one but the loss adds the
KL unweighted); here beta weights it. The flows are flowjax's ``masked_autoregressive_flow`` (affine
transformers, ``--jnf_flow_layers`` MADE blocks of ``--jnf_flow_depth`` hidden layers of ``--jnf_flow_width``:
2, 3 and 128 are pythae's MAF defaults, which MultiVae uses), with its permutations between blocks.

JNF-DCCA (``build_dcca``, ``--model=jnfdcca``), the paper's variant: a stage 0 of ``--jnf_dcca_epochs`` trains a
deep CCA (Andrew et al. 2013) of the modalities, one embedding network per modality, maximising the sum over
pairs of modalities of their embeddings' total canonical correlation over the batch (``total_correlation``,
MultiVae's ``mcca_loss``); then the two stages above, each unimodal encoder reading its modality's frozen
embedding. The joint encoder stays JNF's (MultiVae builds it from copies of the DCCA networks' architecture).

Incomplete data: refused, as for JMVAE (every term needs q(z | X)).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mvae_jax import distributions, losses, networks
from mvae_jax import options as opt
from mvae_jax.modality import Modality
from mvae_jax.models.base import (
    LIKELIHOOD_WEIGHTS,
    Experts,
    JointEncoder,
    Model,
    check_present,
    complete_only,
    compute_dtype,
    conv_stack,
)
from mvae_jax.networks import GaussianEncoder

MOMENT_DRAWS = 16
"""Draws per example from which ``encode`` estimates the mean and variance of a unimodal (flow) posterior."""

HMC_MOMENT_DRAWS = 4
"""HMC chains per example from which ``encode`` estimates those of a subset's posterior. Each chain costs
``jnf_hmc_steps`` x (``jnf_leapfrog_steps`` + 1) gradients of the subset's flows: at the defaults, 2,000 examples of
a trimodal pair take about 5 minutes on 2 CPU cores (measured: 200 examples x 16 chains, 130 s, with another
training run on the same cores)."""

_MOMENTS_KEY = 20230519  # the fixed key of those draws
DCCA_REG = 1e-3  # MultiVae's r1 = r2: the covariances' ridge, and that of T^T T

OPTIONS = (
    opt.integer(
        "jnf_warmup",
        10,
        "epochs that train JNF's joint encoder and decoders alone (stage 1); then they are frozen and the unimodal "
        "encoders and flows learn (stage 2; MultiVae's warmup)",
        1,
    ),
    opt.integer("jnf_flow_layers", 2, "MADE blocks of each unimodal posterior's masked autoregressive flow", 1),
    opt.integer("jnf_flow_width", 128, "units of each hidden layer of a MADE block", 1),
    opt.integer("jnf_flow_depth", 3, "hidden layers of a MADE block", 1),
    opt.integer(
        "jnf_hmc_steps",
        200,
        "Hamiltonian Monte Carlo steps that sample q(z | a subset of 2 or more, short of all) (MultiVae: 200)",
        1,
        inference=True,
        resumable=True,
    ),
    opt.integer(
        "jnf_leapfrog_steps", 10, "leapfrog steps per HMC step (MultiVae: 10)", 1, inference=True, resumable=True
    ),
    opt.number(
        "jnf_step_size",
        0.01,
        "leapfrog step size of the HMC (MultiVae: 0.01)",
        strict=True,
        inference=True,
        resumable=True,
    ),
    LIKELIHOOD_WEIGHTS,
)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""

DCCA_OPTIONS = (
    opt.integer(
        "jnf_dcca_epochs",
        30,
        "epochs that train JNF-DCCA's DCCA embeddings alone, before the joint VAE's warm-up (MultiVae's "
        "nb_epochs_dcca)",
        1,
    ),
    opt.integer("jnf_dcca_dim", 20, "size of each modality's DCCA embedding (MultiVae's embedding_dcca_dim)", 1),
    *OPTIONS,
)
"""JNF-DCCA's settings: JNF's and its DCCA's."""


def check(config) -> None:
    """ValueError when the warm-up (and JNF-DCCA's DCCA epochs) leave no epoch to the unimodal posteriors."""
    first = config.jnf_dcca_epochs if config.model == "jnfdcca" else 0
    if config.epochs <= config.jnf_warmup + first:
        before = f"jnf_dcca_epochs={first} + " if first else ""
        raise ValueError(
            f"{before}jnf_warmup={config.jnf_warmup} with epochs={config.epochs} leaves no epoch to train the "
            f"unimodal encoders and flows; allowed: {'jnf_dcca_epochs + ' if first else ''}jnf_warmup < epochs "
            f"(e.g. --epochs={first + config.jnf_warmup + 10})"
        )


def import_flowjax():
    """flowjax, equinox and paramax, or an ImportError that says how to install them (the ``flows`` extra)."""
    try:
        import equinox
        import flowjax.distributions
        import flowjax.flows
        import paramax
    except ImportError as e:
        raise ImportError(
            "model='jnf' needs flowjax for its normalizing flows, an optional extra: pip install -e '.[flows]' "
            "(or pip install flowjax)"
        ) from e
    return flowjax, equinox, paramax


class Flows:
    """One masked autoregressive flow f_m per modality (flowjax), its arrays in the model's params.

    ``params["flows"][m]`` maps "00", "01", ... to the flow's trainable arrays in flowjax's tree order; the rest
    (masks, permutations) is fixed at build time, the same for every seed. ``log_density`` evaluates
    q_m(z | x_m) through f_m (fast for a MAF: one pass); ``sample`` inverts it (one pass per coordinate).
    """

    def __init__(self, names, latent: int, layers: int, width: int, depth: int):
        flowjax, eqx, paramax = import_flowjax()
        self.names, self.latent = tuple(names), latent

        def make(key):  # flowjax's bijection maps the base (z0) to z; its inverse is the fast direction
            base = flowjax.distributions.Normal(jnp.zeros(latent))
            return flowjax.flows.masked_autoregressive_flow(
                key, base_dist=base, flow_layers=layers, nn_width=width, nn_depth=depth, invert=True
            ).bijection

        fixed = lambda leaf: isinstance(leaf, paramax.NonTrainable)
        split = lambda key: eqx.partition(make(key), eqx.is_inexact_array, is_leaf=fixed)
        self._arrays = lambda key: jax.tree_util.tree_leaves(split(key)[0])
        arrays, static = split(jax.random.PRNGKey(0))
        self._treedef, self._static = jax.tree_util.tree_structure(arrays), static
        self._combine, self._unwrap = eqx.combine, paramax.unwrap

    def init(self, rng: jax.Array) -> dict:
        keys = jax.random.split(rng, len(self.names))
        return {n: {f"{i:02d}": a for i, a in enumerate(self._arrays(k))} for n, k in zip(self.names, keys)}

    def bijection(self, params, name: str):
        arrays = params["flows"][name]
        leaves = [arrays[f"{i:02d}"] for i in range(len(arrays))]
        return self._unwrap(self._combine(jax.tree_util.tree_unflatten(self._treedef, leaves), self._static))

    def log_density(self, params, name: str, z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
        """log q_m(z | x_m) = log N(f_m(z); mu, diag(exp(logvar))) + log |det df_m/dz|: z (..., latent) -> (...)."""
        flat = z.reshape(-1, self.latent)
        z0, log_det = jax.vmap(self.bijection(params, name).inverse_and_log_det)(flat)
        z0, log_det = z0.reshape(z.shape), log_det.reshape(z.shape[:-1])
        return distributions.gaussian_log_density(z0, mu, logvar) + log_det

    def sample(self, params, name: str, rng: jax.Array, mu: jax.Array, logvar: jax.Array, num: int) -> jax.Array:
        """z = f_m^{-1}(z0), z0 ~ N(mu, diag(exp(logvar))): (num, batch, latent)."""
        z0 = distributions.sample_gaussian(rng, jnp.broadcast_to(mu, (num, *mu.shape)), logvar)
        z = jax.vmap(self.bijection(params, name).transform)(z0.reshape(-1, self.latent))
        return z.reshape(z0.shape)


def hmc(log_target, z: jax.Array, rng: jax.Array, steps: int, leapfrog: int, step_size: float) -> jax.Array:
    """``steps`` Hamiltonian Monte Carlo steps from ``z`` (..., latent), each chain its own: (..., latent).

    ``log_target``: z (..., latent) -> (...) unnormalised log densities, one per chain. Each step draws a
    momentum rho ~ N(0, I), runs ``leapfrog`` leapfrog steps of size ``step_size`` on
    H(z, rho) = -log_target(z) + |rho|^2 / 2 and accepts the end point with probability min(1, exp(H0 - H))
    (Neal 2011, "MCMC using Hamiltonian dynamics", Sec. 5.2.3; MultiVae's ``sample_from_poe_subset``).
    """
    value_and_grad = jax.value_and_grad(lambda z: jnp.sum(log_target(z)))
    per_chain = lambda z: (log_target(z), value_and_grad(z)[1])

    def step(z, key):
        k_momentum, k_accept = jax.random.split(key)
        rho = jax.random.normal(k_momentum, z.shape, z.dtype)
        log_p0, grad = per_chain(z)
        h0 = -log_p0 + 0.5 * jnp.sum(rho**2, axis=-1)

        def leap(_, carry):
            z_new, rho, grad, _ = carry
            rho = rho + 0.5 * step_size * grad
            z_new = z_new + step_size * rho
            log_p, grad = per_chain(z_new)
            return z_new, rho + 0.5 * step_size * grad, grad, log_p

        z_new, rho, _, log_p = jax.lax.fori_loop(0, leapfrog, leap, (z, rho, grad, log_p0))
        h = -log_p + 0.5 * jnp.sum(rho**2, axis=-1)
        accept = jax.random.uniform(k_accept, h.shape) < jnp.exp(h0 - h)
        return jnp.where(accept[..., None], z_new, z), None

    z, _ = jax.lax.scan(step, z, jax.random.split(rng, steps))
    return z


class Embedding(nn.Module):
    """A deterministic embedding h_m(x_m) (batch, out) of JNF-DCCA's DCCA: ``make_encoder``'s networks, one head."""

    hidden: tuple[int, ...]
    out: int
    conv: object = ()
    dtype: object = None
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        h = networks.features(x, self.conv, "conv", self.dtype)
        return networks.MLP((*self.hidden, self.out), self.dtype, self.activation, name="mlp")(h).astype(jnp.float32)


def total_correlation(h1: jax.Array, h2: jax.Array, reg: float = DCCA_REG) -> jax.Array:
    """The DCCA objective of two views' embeddings (n, d): the sum of the singular values of
    T = S11^{-1/2} S12 S22^{-1/2} (Andrew, Arora, Bilmes & Livescu 2013, "Deep Canonical Correlation
    Analysis", Sec. 2, the total correlation of the d canonical pairs), with MultiVae's ``cca_loss`` settings:
    S11, S22 the batch covariances plus ``reg`` I, and the singular values as the square roots of the eigenvalues
    of T^T T + ``reg`` I (its ``use_all_singular_values=False`` with all d kept).

    Whitened by Cholesky factors instead of the symmetric roots: L1^{-1} S12 L2^{-T} = Q1 T Q2^T with Q1, Q2
    orthogonal, so the singular values are the same, and no eigenvector enters the gradient.
    """
    n = h1.shape[0]
    h1, h2 = h1 - jnp.mean(h1, axis=0), h2 - jnp.mean(h2, axis=0)
    eye = jnp.eye(h1.shape[1], dtype=h1.dtype)
    l1 = jnp.linalg.cholesky(h1.T @ h1 / (n - 1) + reg * eye)
    l2 = jnp.linalg.cholesky(h2.T @ h2 / (n - 1) + reg * eye)
    t = jax.scipy.linalg.solve_triangular(l1, h1.T @ h2 / (n - 1), lower=True)
    t = jax.scipy.linalg.solve_triangular(l2, t.T, lower=True).T
    eigenvalues = jnp.linalg.eigvalsh(t.T @ t + reg * eye)
    return jnp.sum(jnp.sqrt(jnp.maximum(eigenvalues, 1e-9)))


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """JNF with JMVAE's networks (``hidden_dims``, or the data set's conv networks) and latent ``latent_dim``."""
    return _make(config, modalities, dcca=False)


def build_dcca(config, modalities: tuple[Modality, ...]) -> Model:
    """JNF-DCCA: JNF whose unimodal encoders read the embeddings of a DCCA trained first."""
    return _make(config, modalities, dcca=True)


def _make(config, modalities: tuple[Modality, ...], dcca: bool) -> Model:
    """JNF, or JNF-DCCA with ``dcca``: the stages, their objective and the inference of both.

    Long because the model is its closures: the stages' losses and the inference share the networks and
    flows built here."""
    name = "jnfdcca" if dcca else "jnf"
    names = tuple(m.name for m in modalities)
    beta, warmup = float(config.beta), int(config.jnf_warmup)
    first = int(config.jnf_dcca_epochs) if dcca else 0  # the epochs of the DCCA, before the joint VAE's
    weights = config.likelihood_weight(names)
    joint, experts = JointEncoder(config, modalities), Experts(config, modalities, encoders=not dcca)
    flows = Flows(names, config.latent_dim, config.jnf_flow_layers, config.jnf_flow_width, config.jnf_flow_depth)
    hmc_settings = (int(config.jnf_hmc_steps), int(config.jnf_leapfrog_steps), float(config.jnf_step_size))
    if dcca:
        dim, dtype = int(config.jnf_dcca_dim), compute_dtype(config)
        hidden = lambda m: {"conv": (), "mopoe": (dim,)}.get(m.network, tuple(config.hidden_dims))
        embeddings = {m.name: Embedding(hidden(m), dim, conv_stack(config, m) or (), dtype, config.activation)
                      for m in modalities}  # fmt: skip
        encoders = {n: GaussianEncoder(tuple(config.hidden_dims), config.latent_dim, (), dtype, config.activation)
                    for n in names}  # fmt: skip

    def init(rng):
        k_joint, k_enc, k_dec, k_flows, k_dcca = jax.random.split(rng, 5)
        params = {**joint.init(k_joint), **experts.init(k_enc, k_dec), "flows": flows.init(k_flows)}
        if dcca:
            keys = jax.random.split(k_dcca, 2 * len(names))
            one = {m.name: jnp.zeros((1, *m.shape), jnp.float32) for m in modalities}
            params["dcca"] = {n: embeddings[n].init(keys[i], one[n])["params"] for i, n in enumerate(names)}
            h = jnp.zeros((1, dim), jnp.float32)
            params["encoders"] = {n: encoders[n].init(keys[len(names) + i], h)["params"] for i, n in enumerate(names)}
        return params

    def embed(params, batch, n):
        return embeddings[n].apply({"params": params["dcca"][n]}, batch[n])

    def gaussian(params, batch, n):
        """The Gaussian of q_m(z | x_m) before the flow: from x_m (JNF) or from its frozen DCCA embedding."""
        if not dcca:
            return experts.encode(params, batch, n)
        h = jax.lax.stop_gradient(embed(params, batch, n))
        return encoders[n].apply({"params": params["encoders"][n]}, h)

    def stage_of(epoch):
        epoch = jnp.asarray(epoch)
        return jnp.where(epoch < first, 0, jnp.where(epoch < first + warmup, 1, 2))

    @complete_only(name)
    def loss(params, batch, rng, epoch=0, beta=beta):
        stage = stage_of(epoch)
        posterior = joint.encode(params, batch)
        elbo, terms = losses.multimodal_elbo(
            rng, posterior, lambda z: experts.decode(params, z), batch, modalities, beta, weights
        )
        z = jax.lax.stop_gradient(distributions.sample_gaussian(rng, *posterior))  # the ELBO's own sample
        fit = {n: -flows.log_density(params, n, z, *gaussian(params, batch, n)) for n in names}
        terms.update({f"neg_log_q_{n}": v for n, v in fit.items()})
        terms["elbo"], terms["l_jm"] = elbo, sum(fit.values())
        terms["loss"] = jnp.where(stage >= 1, -elbo, 0.0) + jnp.where(stage == 2, terms["l_jm"], 0.0)
        if dcca:  # a batch statistic, the same for every example of the batch
            h = {n: embed(params, batch, n) for n in names}
            pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
            correlation = sum(total_correlation(h[a], h[b]) for a, b in pairs)
            terms["dcca_correlation"] = jnp.broadcast_to(correlation, elbo.shape)
            terms["loss"] = terms["loss"] - jnp.where(stage == 0, terms["dcca_correlation"], 0.0)
        return terms

    def trainable(params, epoch):
        """The DCCA's embeddings learn in stage 0, the joint encoder and decoders in 1, the encoders and flows in 2."""
        stage = stage_of(epoch)
        group_stage = {"dcca": 0, "joint_encoder": 1, "decoders": 1, "encoders": 2, "flows": 2}
        return {
            k: jax.tree_util.tree_map(lambda p, s=group_stage[k]: (stage == s).astype(p.dtype), v)
            for k, v in params.items()
        }

    def sample(params, batch, present, rng, num: int):
        """z ~ q(z | present): (num, batch, latent)."""
        present = check_present(present, names)
        if present == names:
            mu, logvar = joint.encode(params, batch)
            return distributions.sample_gaussian(rng, jnp.broadcast_to(mu, (num, *mu.shape)), logvar)
        gaussians = {n: gaussian(params, batch, n) for n in present}  # read once: only the flows see z
        if len(present) == 1:
            return flows.sample(params, present[0], rng, *gaussians[present[0]], num)

        def log_target(z):  # log prod_m q_m(z | x_m) - (|S| - 1) log p(z)
            log_q = sum(flows.log_density(params, n, z, *gaussians[n]) for n in present)
            prior = distributions.gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
            return log_q - (len(present) - 1) * prior

        k_start, k_which, k_chain = jax.random.split(rng, 3)
        keys = jax.random.split(k_start, len(present))
        starts = jnp.stack([flows.sample(params, n, k, *gaussians[n], num) for n, k in zip(present, keys)])
        which = jax.random.randint(k_which, starts.shape[1:3], 0, len(present))  # a draw of the experts' mixture
        start = jnp.take_along_axis(starts, which[None, :, :, None], axis=0)[0]
        return hmc(log_target, start, k_chain, *hmc_settings)

    def encode(params, batch, present):
        present = check_present(present, names)
        if present == names:
            return joint.encode(params, batch)
        draws = MOMENT_DRAWS if len(present) == 1 else HMC_MOMENT_DRAWS
        z = sample(params, batch, present, jax.random.PRNGKey(_MOMENTS_KEY), draws)
        mean = jnp.mean(z, axis=0)
        return mean, jnp.log(jnp.maximum(jnp.var(z, axis=0), jnp.finfo(z.dtype).tiny))

    return Model(name, tuple(modalities), init, loss, encode, experts.decode, trainable=trainable, sample=sample)
