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

JNF-DCCA, the paper's variant whose unimodal encoders read embeddings of a deep CCA trained first, is not here.
Incomplete data: refused, as for JMVAE (every term needs q(z | X)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvae_jax import distributions, losses
from mvae_jax import options as opt
from mvae_jax.modality import Modality
from mvae_jax.models.base import (
    LIKELIHOOD_WEIGHTS,
    Model,
    check_present,
    complete_only,
    joint_and_experts,
)

MOMENT_DRAWS = 16
"""Draws per example from which ``encode`` estimates the mean and variance of a unimodal (flow) posterior."""

HMC_MOMENT_DRAWS = 4
"""HMC chains per example from which ``encode`` estimates those of a subset's posterior. Each chain costs
``jnf_hmc_steps`` x (``jnf_leapfrog_steps`` + 1) gradients of the subset's flows: at the defaults, 2,000 examples of
a trimodal pair take about 5 minutes on 2 CPU cores (measured: 200 examples x 16 chains, 130 s)."""

_MOMENTS_KEY = 20230519  # the fixed key of those draws

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
    ),
    opt.integer("jnf_leapfrog_steps", 10, "leapfrog steps per HMC step (MultiVae: 10)", 1),
    opt.number("jnf_step_size", 0.01, "leapfrog step size of the HMC (MultiVae: 0.01)", strict=True),
    LIKELIHOOD_WEIGHTS,
)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


def check(config) -> None:
    """ValueError when the warm-up leaves no epoch to the unimodal posteriors (stage 2)."""
    if config.epochs <= config.jnf_warmup:
        raise ValueError(
            f"jnf_warmup={config.jnf_warmup} with epochs={config.epochs} leaves no epoch to train JNF's unimodal "
            f"encoders and flows; allowed: jnf_warmup < epochs (e.g. --jnf_warmup={max(1, config.epochs // 2)})"
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


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """JNF with JMVAE's networks (``hidden_dims``, or the data set's conv networks) and latent ``latent_dim``."""
    names = tuple(m.name for m in modalities)
    beta, warmup = float(config.beta), int(config.jnf_warmup)
    weights = config.likelihood_weight(names)
    joint, experts, init_networks, _ = joint_and_experts(config, modalities, prior_expert=False)
    flows = Flows(names, config.latent_dim, config.jnf_flow_layers, config.jnf_flow_width, config.jnf_flow_depth)
    hmc_settings = (int(config.jnf_hmc_steps), int(config.jnf_leapfrog_steps), float(config.jnf_step_size))

    def init(rng):
        k_networks, k_flows = jax.random.split(rng)
        return {**init_networks(k_networks), "flows": flows.init(k_flows)}

    def unimodal_log_densities(params, batch, z):
        """{m: log q_m(z | x_m)} for z (..., batch, latent)."""
        return {n: flows.log_density(params, n, z, *experts.encode(params, batch, n)) for n in names}

    @complete_only("jnf")
    def loss(params, batch, rng, epoch=0, beta=beta):
        posterior = joint.encode(params, batch)
        elbo, terms = losses.multimodal_elbo(
            rng, posterior, lambda z: experts.decode(params, z), batch, modalities, beta, weights
        )
        z = jax.lax.stop_gradient(distributions.sample_gaussian(rng, *posterior))  # the ELBO's own sample
        fit = {n: -lq for n, lq in unimodal_log_densities(params, batch, z).items()}
        terms.update({f"neg_log_q_{n}": v for n, v in fit.items()})
        terms["elbo"], terms["l_jm"] = elbo, sum(fit.values())
        terms["loss"] = -elbo + jnp.where(jnp.asarray(epoch) >= warmup, terms["l_jm"], 0.0)
        return terms

    def trainable(params, epoch):
        """Stage 1 (epoch < warmup): the joint encoder and decoders learn; stage 2: the encoders and flows."""
        stage2 = (jnp.asarray(epoch) >= warmup).astype(jnp.float32)
        learns = {"joint_encoder": 1.0 - stage2, "decoders": 1.0 - stage2, "encoders": stage2, "flows": stage2}
        return {k: jax.tree_util.tree_map(lambda p, w=learns[k]: w.astype(p.dtype), v) for k, v in params.items()}

    def sample(params, batch, present, rng, num: int):
        """z ~ q(z | present): (num, batch, latent)."""
        present = check_present(present, names)
        if present == names:
            mu, logvar = joint.encode(params, batch)
            return distributions.sample_gaussian(rng, jnp.broadcast_to(mu, (num, *mu.shape)), logvar)
        if len(present) == 1:
            return flows.sample(params, present[0], rng, *experts.encode(params, batch, present[0]), num)
        gaussians = {n: experts.encode(params, batch, n) for n in present}  # read once: only the flows see z

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

    return Model("jnf", tuple(modalities), init, loss, encode, experts.decode, trainable=trainable, sample=sample)
