"""MMVAE (Shi, Siddharth, Paige & Torr 2019, "Variational Mixture-of-Experts Autoencoders", arXiv:1911.03393).

Generative model p(z) prod_m p(x_m | z); the joint posterior is the uniform
mixture of the unimodal experts (the paper's Eq. 2), and of the experts in S
for a subset S:

    q(z | x_1..x_M) = (1/M) sum_m q(z | x_m)

Objective: the importance-weighted bound with stratified sampling over the
mixture components (the paper's Eq. 4), K samples from each expert:

    L = (1/M) sum_m E_{z^1..K ~ q(z|x_m)} [ log (1/K) sum_k w(z^k) ],
    log w(z) = sum_n lambda_n log p(x_n | z) + beta (log p(z) - log q(z | x_1..x_M))

(beta = 1 is the paper's bound; other values weigh the prior-to-posterior
ratio as beta weighs the KL of the other models). Gradients are the doubly
reparameterised ones, DReG (Tucker et al. 2019, Eq. 8, as the paper's code
uses them): the variational parameters are held fixed inside log q, decoder
gradients get the normalised weights w~_k and encoder gradients, through z,
get w~_k^2. The loss value reported is -L itself.

Flags: ``--num_samples`` K (default 10; the paper used 30 on MNIST-SVHN with
DReG) and ``--likelihood_weights`` lambda (the paper's likelihood scaling,
default 1 for every modality; the paper scaled MNIST by 3072 / 784 against
SVHN). ``encode`` returns the mixture's mean and variance; ``posterior`` the
mixture itself.

Incomplete data (``--missing``): an example with only the modalities P takes
the bound of the model on P: the mixture of the experts of P, the likelihoods of
P, the mean over m in P (as MultiVae's MMVAE does with its masks).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvae_jax import distributions, losses
from mvae_jax import options as opt
from mvae_jax.modality import Modality
from mvae_jax.models.base import LIKELIHOOD_WEIGHTS, Experts, Model, check_present, presence


def dreg(log_weights_fn):
    """``log_weights_fn(z, *args) -> (K, ...)`` whose cotangent into z is scaled by w~ = softmax over K.

    The forward value is unchanged. With the surrogate sum_k sg(w~_k) log w_k
    this gives DReG (Tucker et al. 2019): w~ for the other arguments, w~^2 along z.
    """

    @jax.custom_vjp
    def f(z, *args):
        return log_weights_fn(z, *args)

    def forward(z, *args):
        log_weights, vjp = jax.vjp(log_weights_fn, z, *args)
        return log_weights, (log_weights, vjp)

    def backward(residuals, cotangent):
        log_weights, vjp = residuals
        grad_z, *grad_args = vjp(cotangent)
        normalised = jax.nn.softmax(log_weights, axis=0)
        return (grad_z * normalised[..., None], *grad_args)

    f.defvjp(forward, backward)
    return f


OPTIONS = (
    LIKELIHOOD_WEIGHTS,
    opt.integer("num_samples", 10, "importance samples K per modality (DReG estimator)", minimum=1),
)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """MMVAE with MLP networks of widths ``config.hidden_dims``, latent ``config.latent_dim``."""
    names = tuple(m.name for m in modalities)
    beta, num_samples = float(config.beta), int(config.num_samples)
    weights = config.likelihood_weight(names)
    experts = Experts(config, modalities)

    def mixture(params, batch, present):
        return experts.encode_stack(params, batch, check_present(present, names))

    def encode(params, batch, present):
        return distributions.mixture_moments(*mixture(params, batch, present))

    def log_weights(z, decoders, batch, mus, logvars, beta, present=None):
        """log w(z) for z (K, batch, latent) -> (K, batch); q's parameters and beta are passed in, held fixed.

        ``present`` (M, batch) 0/1: each example's likelihoods and mixture over its own modalities."""
        logits = experts.decode({"decoders": decoders}, z)
        lls = [weights[m.name] * m.log_likelihood(logits[m.name], batch[m.name]) for m in modalities]
        log_prior = distributions.gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
        if present is None:
            log_q = distributions.mixture_log_density(z, mus[:, None], logvars[:, None])
        else:
            lls = [p * ll for p, ll in zip(present, lls)]
            log_q = distributions.masked_mixture_log_density(z, mus[:, None], logvars[:, None], present[:, None])
        return sum(lls) + beta * (log_prior - log_q)

    dreg_log_weights = dreg(log_weights)

    def loss(params, batch, rng, epoch=0, beta=beta):
        mus, logvars = experts.encode_stack(params, batch, names)  # (M, batch, latent)
        eps = jax.random.normal(rng, (len(names), num_samples, *mus.shape[1:]), mus.dtype)
        zs = mus[:, None] + jnp.exp(0.5 * logvars[:, None]) * eps  # (M, K, batch, latent)
        fixed_q = jax.lax.stop_gradient((mus, logvars))
        data = {n: batch[n] for n in names}
        present = presence(batch, names)  # None: a complete batch
        extra = () if present is None else (present,)
        terms, total, surrogate = {}, 0.0, 0.0
        for i, n in enumerate(names):
            lw = dreg_log_weights(zs[i], params["decoders"], data, *fixed_q, beta, *extra)
            bound = losses.importance_weighted_bound(lw)
            normalised = jax.lax.stop_gradient(jax.nn.softmax(lw, axis=0))
            term = jnp.sum(normalised * lw, axis=0)
            if present is not None:  # the experts of missing modalities draw nothing
                bound, term = present[i] * bound, present[i] * term
            surrogate = surrogate + term
            total = total + bound
            terms[f"iwae_{n}"] = bound
        count = len(names) if present is None else jnp.sum(present, axis=0)
        bound = total / count
        surrogate = surrogate / count
        terms["iwae"] = bound
        # Value -L, gradient that of the DReG surrogate.
        terms["loss"] = jax.lax.stop_gradient(-bound) - (surrogate - jax.lax.stop_gradient(surrogate))
        return terms

    return Model("mmvae", tuple(modalities), experts.init_from, loss, encode, experts.decode, mixture=mixture)
