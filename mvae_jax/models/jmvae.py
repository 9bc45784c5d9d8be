"""JMVAE-kl (Suzuki, Nakayama & Matsuo 2016, arXiv:1611.01891), for any number of modalities.

Generative model p(z) prod_m p(x_m | z) with one decoder per modality; a joint
encoder q(z | x_1..x_M) over all modalities concatenated; and one unimodal
encoder q(z | x_m) per modality, trained to match the joint one. Objective
(Sec. 3.1 and 3.3 of the paper, with the KL weight beta of the paper's Eq. (1)):

    L_JMkl = E_q(z|x_1..x_M)[sum_m log p(x_m | z)] - beta KL(q(z|x_1..x_M) || p(z))
             - alpha sum_m KL(q(z|x_1..x_M) || q(z|x_m))

alpha = 0 gives plain JMVAE (the unimodal encoders then get no gradient).
Inference from one modality uses its unimodal encoder; from a subset of two
or more modalities short of all, the product of their unimodal experts
(no prior expert: each expert already approximates a posterior).

Incomplete data: refused (``--missing`` names the models that accept it).
Every term needs q(z | x_1..x_M), which reads all the modalities at once, so
an incomplete example would give JMVAE nothing to learn; train it with
``--drop_incomplete`` (the complete examples only) instead.
"""

from __future__ import annotations

from mvae_jax import losses
from mvae_jax import options as opt
from mvae_jax.modality import Modality
from mvae_jax.models.base import KL_WARMUP_EPOCHS, Model, complete_only, joint_and_experts

OPTIONS = (
    opt.number(
        "alpha",
        0.1,
        "JMVAE-kl weight of sum_m KL(q(z|all) || q(z|x_m)); 0 = plain JMVAE (Suzuki et al. 2016, Sec. 3.1)",
        allowed="a finite number >= 0 (0: plain JMVAE)",
    ),
    KL_WARMUP_EPOCHS,
)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """JMVAE-kl with MLP encoders/decoders of widths ``config.hidden_dims``, latent ``config.latent_dim``."""
    names = tuple(m.name for m in modalities)
    beta, alpha = float(config.beta), float(config.alpha)
    joint, experts, init, encode = joint_and_experts(config, modalities, prior_expert=False)

    @complete_only("jmvae")
    def loss(params, batch, rng, epoch=0, beta=beta):
        kl_beta = losses.kl_weight(beta, epoch, config.kl_warmup_epochs)
        posterior = joint.encode(params, batch)
        elbo, terms = losses.multimodal_elbo(
            rng, posterior, lambda z: experts.decode(params, z), batch, modalities, kl_beta
        )
        kl_experts = losses.kl_to_experts(posterior, {n: experts.encode(params, batch, n) for n in names})
        terms.update({f"kl_joint_to_{n}": kl for n, kl in kl_experts.items()})
        terms["loss"] = -(elbo - alpha * sum(kl_experts.values()))
        return terms

    return Model("jmvae", tuple(modalities), init, loss, encode, experts.decode)
