"""PEMVAE, the paper's parameter-efficient multimodal VAE: one encoder for every subset of modalities.

Generative model p(z) prod_m p(x_m | z), decoders as JMVAE's. JMVAE and TELBO
train a joint encoder plus a second set of unimodal encoders; this model
trains no unimodal encoders. Its one encoder
(:class:`mvae_jax.networks.FusionEncoder`) has a feature map per modality, a
fusion of the present features (``--fusion``: a sum with learned mask tokens
for the absent ones by default) and a fusion head: with all modalities present
it is JMVAE's joint encoder. Its parameters are those of JMVAE without
unimodal encoders, plus M x hidden[0] mask-token scalars.

Training, in two stages (``--warmup_epochs``, default 1):

1. epochs < warmup_epochs: the joint ELBO, the paper's Eq. (1), as JMVAE:
       L_1 = E_q(z|x_1..x_M)[sum_m log p(x_m | z)] - beta KL(q(z|x_1..x_M) || p(z))
2. then the same encoder also learns to serve subsets. For each example and
   each subset S drawn (``--subset_sampling``: ``all``, the default = each of
   the 2^M - 2 proper subsets; ``random`` = ``--num_subsets`` proper subsets
   drawn uniformly per example),
       L_2 = L_1 + sum_S u_S [ E_q(z|x_S)[sum_{m in T_S} log p(x_m | z)] - beta KL(q(z|x_S) || p(z))
                               - a KL(sg[q(z|x_1..x_M)] || q(z|x_S)) ]
   where sg (stop_gradient) holds the joint posterior fixed as the target;
   the decoders are held fixed in the subset ELBO (only the encoder learns to
   infer from S; p(x | z) keeps being fitted by the joint ELBO, which stays in
   the objective so the joint posterior does not drift). T_S is S
   (``--subset_targets=present``) or every modality (``all``: cross-modal
   reconstruction, as the subsampled objectives of Wu & Goodman 2018 and
   Sutter et al. 2021 reconstruct all modalities from a subset's posterior);
   u_S is ``--unimodal_weight`` (default 3) for |S| = 1, else 1; a is
   ``--subset_kl_weight`` (the role of JMVAE-kl's alpha, Suzuki et al. 2016,
   Eq. 11). ``--subset_objective`` keeps both bracketed parts (``elbo_kl``),
   the KL alone (``kl``: JMVAE-kl's term with q(z|x_S) for q(z|x_m)) or the
   ELBO alone (``elbo``).

``--freeze_encoder`` trains only the mask tokens of the encoder in stage 2
(its networks stay as the joint stage left them; the decoders keep training):
the literal reading of "reuses the pretrained encoder networks of the joint
model". ``--modality_dropout=p`` drops each modality from the encoder's input
of L_1's first term with probability p per example, one always kept
(ModDrop, Neverova et al. 2016), while every modality is still reconstructed;
the KL target of stage 2 stays the posterior given all modalities.

Incomplete data (``--missing``): the one encoder takes any subset, so an
example with only the modalities P trains as if P were all there is. Its
"joint" posterior is q(z | x_P) (the mask tokens stand in for the rest), L_1
reconstructs P, the subsets S of stage 2 are the proper subsets of P (none
for |P| = 1), their KL target is sg[q(z | x_P)], and ``subset_targets=all``
reconstructs P. Modality dropout drops among P.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from mvae_jax import distributions, losses
from mvae_jax import options as opt
from mvae_jax.modality import Modality
from mvae_jax.models.base import (
    KL_WARMUP_EPOCHS,
    NUM_SUBSETS,
    Experts,
    Model,
    check_present,
    compute_dtype,
    conv_widths,
    presence,
    random_present_subsets,
    random_subset_masks,
    subsets,
)
from mvae_jax.networks import FusionEncoder

log = logging.getLogger(__name__)


def subset_mask(subset, names, batch_size: int) -> jax.Array:
    """(modalities, batch) 0/1: the same subset for every example, modality order of ``names``."""
    return jnp.broadcast_to(jnp.asarray([[float(n in subset)] for n in names]), (len(names), batch_size))


def modality_dropout_masks(rng: jax.Array, num_modalities: int, batch_size: int, rate: float) -> jax.Array:
    """(modalities, batch) 0/1: each modality kept with probability 1 - ``rate``; where none is, one drawn uniformly."""
    k_keep, k_one = jax.random.split(rng)
    keep = jax.random.bernoulli(k_keep, 1.0 - rate, (num_modalities, batch_size)).astype(jnp.float32)
    one = jax.nn.one_hot(jax.random.randint(k_one, (batch_size,), 0, num_modalities), num_modalities).T
    return jnp.where(jnp.sum(keep, axis=0, keepdims=True) > 0, keep, one)


SUBSET_OBJECTIVES = ("elbo_kl", "kl", "elbo")

# docs/PEMVAE.md chose the defaults of subset_sampling and unimodal_weight on validation; a config.json written
# before they existed trained with their legacy values, and resumes or evaluates as it was trained.
OPTIONS = (
    NUM_SUBSETS,
    opt.integer("warmup_epochs", 1, "epochs of the joint ELBO alone, before the encoder also learns subsets"),
    KL_WARMUP_EPOCHS,
    opt.choice(
        "subset_sampling",
        "all",
        ("random", "all"),
        "all = every proper subset every step; random = --num_subsets random proper subsets per example and step "
        "(cheaper; the default before docs/PEMVAE.md)",
        legacy="random",
    ),
    opt.number("unimodal_weight", 3.0, "weight of the subset terms of single-modality subsets (others 1)", legacy=1.0),
    opt.choice(
        "subset_objective",
        "elbo_kl",
        SUBSET_OBJECTIVES,
        "what a subset S trains: elbo_kl = its ELBO + KL(sg q(z|all) || q(z|S)); kl = the KL alone; "
        "elbo = the ELBO alone",
    ),
    opt.number("subset_kl_weight", 1.0, "weight of KL(sg q(z|all) || q(z|S)) (as JMVAE's alpha)"),
    opt.choice(
        "subset_targets",
        "present",
        ("present", "all"),
        "what the subset ELBO reconstructs from z ~ q(z|S): present = the modalities in S; all = every modality",
    ),
    opt.switch(
        "freeze_encoder",
        "after the warm-up, train only the mask tokens of the encoder (the joint encoder's networks stay as "
        "pretrained); the decoders keep training",
    ),
    opt.choice(
        "fusion",
        "tokens",
        ("tokens", "mean", "zero"),
        "how present modality features combine: tokens = sum, absent ones replaced by learned mask tokens; "
        "mean = mean over the present ones; zero = sum, absent ones 0",
    ),
    opt.Option(
        "modality_dropout",
        "float",
        0.0,
        "in the joint ELBO, drop each modality from the encoder's input with this probability per example "
        "(one always stays); every modality is still reconstructed",
        "a number >= 0 and < 1",
        lambda v: opt.is_number(v) and 0 <= v < 1,
    ),
)
"""The settings this model reads beyond the run's own (a flag for another model is refused)."""


def check(config) -> None:
    """ValueError for settings that contradict each other (each option's own range is checked by its Option)."""
    rules = (
        (config.num_subsets >= 1, "num_subsets", NUM_SUBSETS.allowed),
        (
            config.subset_sampling != "all" or config.num_subsets == 1,
            "num_subsets",
            "1 with subset_sampling=all (every proper subset is trained each step)",
        ),
        (
            config.subset_objective != "elbo" or config.subset_kl_weight == 1.0,
            "subset_kl_weight",
            "the default with subset_objective=elbo, which has no KL term",
        ),
        (
            config.subset_objective != "kl" or config.subset_kl_weight > 0,
            "subset_kl_weight",
            "a number > 0 with subset_objective=kl, whose only term it weights",
        ),
    )
    for ok, name, allowed in rules:
        if not ok:
            raise ValueError(f"{name}={getattr(config, name)!r} is invalid; allowed: {allowed}")


def build(config, modalities: tuple[Modality, ...]) -> Model:
    """PEMVAE with MLP networks of widths ``config.hidden_dims``, latent ``config.latent_dim``.

    Long because the model is its closures: init, encode and the loss of the
    module docstring share the networks and options built here.
    """
    names = tuple(m.name for m in modalities)
    beta, num_subsets, warmup = float(config.beta), int(config.num_subsets), int(config.warmup_epochs)
    sampling, objective, targets = config.subset_sampling, config.subset_objective, config.subset_targets
    unimodal_weight, kl_weight, dropout = (
        float(config.unimodal_weight),
        float(config.subset_kl_weight),
        float(config.modality_dropout),
    )
    use_elbo, use_kl = objective in ("elbo_kl", "elbo"), objective in ("elbo_kl", "kl")
    if warmup >= config.epochs:
        log.warning(
            "warmup_epochs=%d >= epochs=%d: pemvae will only train the joint ELBO, and cannot yet "
            "infer from subsets; resume with more epochs",
            warmup,
            config.epochs,
        )
    if config.freeze_encoder and config.fusion != "tokens":
        raise ValueError(
            f"freeze_encoder=True with fusion={config.fusion!r} leaves nothing to learn the subsets: "
            "only the mask tokens of fusion=tokens train after the warm-up"
        )
    encoder = FusionEncoder(
        names,
        tuple(config.hidden_dims),
        config.latent_dim,
        conv_widths(config, modalities),
        compute_dtype(config),
        config.fusion,
        config.activation,
    )
    experts = Experts(config, modalities, encoders=False)
    proper = [s for s in subsets(names) if len(s) < len(names)]

    def given(batch, present):
        return {n: batch[n] for n in present}

    def init(rng: jax.Array):
        k_enc, k_dec = jax.random.split(rng)
        one = {m.name: jnp.zeros((1, *m.shape), jnp.float32) for m in modalities}
        return {"encoder": encoder.init(k_enc, one)["params"], **experts.init(None, k_dec)}

    def encode(params, batch, present):
        present = check_present(present, names)
        return encoder.apply({"params": params["encoder"]}, given(batch, present))

    def encode_masked(params, batch, masks):
        return encoder.apply({"params": params["encoder"]}, given(batch, names), dict(zip(names, masks)))

    def loss(params, batch, rng, epoch=0, beta=beta):
        """The module docstring's objective: the joint ELBO, then from the warm-up on the subset terms. Long
        because both share the draws, the masks and the joint posterior computed here."""
        kl_beta = losses.kl_weight(beta, epoch, config.kl_warmup_epochs)
        k_joint, k_subsets = jax.random.split(rng)
        k_drop = jax.random.fold_in(rng, 2)
        present = presence(batch, names)  # None: a complete batch
        joint = encode(params, batch, names) if present is None else encode_masked(params, batch, present)
        size = batch[names[0]].shape[0]
        if dropout == 0:
            source = joint
        else:
            kept = modality_dropout_masks(k_drop, len(names), size, dropout)
            if present is not None:  # drop among the present ones, one always kept
                kept = kept * present
                kept = jnp.where(jnp.sum(kept, axis=0) > 0, kept, present)
            source = encode_masked(params, batch, kept)
        present_mask = None if present is None else dict(zip(names, present))
        elbo, terms = losses.multimodal_elbo(
            k_joint, source, lambda z: experts.decode(params, z), batch, modalities, kl_beta, mask=present_mask
        )
        terms["elbo_joint"] = elbo
        # (label, key, subset): a fixed subset per draw with "all", one drawn per example (None) with "random"
        if sampling == "random":
            draws = [(str(j), key, None) for j, key in enumerate(jax.random.split(k_subsets, num_subsets))]
        else:
            draws = [("_".join(s), key, s) for s, key in zip(proper, jax.random.split(k_subsets, len(proper)))]

        def joint_only():
            zero = jnp.zeros_like(elbo)
            return {
                f"{kind}_{label}": zero
                for label, _, _ in draws
                for kind in ("subset", "elbo_subset", "kl_joint_to_subset")
            }

        def subset_terms():
            target = jax.lax.stop_gradient(joint)
            fixed = {"decoders": jax.lax.stop_gradient(params["decoders"])}
            out = {}
            for label, key, subset in draws:
                k_mask, k_z = jax.random.split(key)
                found = 1.0  # the example has this proper subset of its modalities
                if subset is not None:
                    masks = subset_mask(subset, names, size)
                    if present is not None:
                        found = jnp.all(masks <= present, axis=0) & jnp.any(masks < present, axis=0)
                        masks = jnp.where(found, masks, present)  # unused: keeps the encoder's input non-empty
                elif present is None:
                    masks = random_subset_masks(k_mask, len(names), size, proper=True)
                else:
                    masks, found = random_present_subsets(k_mask, present, proper=True)
                mask = dict(zip(names, masks))
                posterior = encode_masked(params, batch, masks)
                kl = distributions.kl_gaussians(*target, *posterior)
                sub_elbo = jnp.zeros_like(elbo)
                if use_elbo:
                    sub_elbo, _ = losses.multimodal_elbo(
                        k_z,
                        posterior,
                        lambda z: experts.decode(fixed, z),
                        batch,
                        modalities,
                        kl_beta,
                        mask=mask if targets == "present" else present_mask,
                    )
                weight = jnp.where(jnp.sum(masks, axis=0) == 1, unimodal_weight, 1.0) * found
                out[f"subset_{label}"] = weight * (sub_elbo - (kl_weight * kl if use_kl else 0.0))
                out[f"elbo_subset_{label}"], out[f"kl_joint_to_subset_{label}"] = sub_elbo, kl
            return out

        terms.update(jax.lax.cond(epoch < warmup, joint_only, subset_terms))
        terms["loss"] = -(elbo + sum(terms[f"subset_{label}"] for label, _, _ in draws))
        return terms

    def trainable(params, epoch):
        """1 for parameters that learn at ``epoch``, 0 for the encoder's networks after the warm-up with
        ``freeze_encoder`` (its mask tokens still learn)."""
        learning = jnp.where(jnp.asarray(epoch) < warmup, 1.0, 0.0)
        mask = jax.tree_util.tree_map(lambda p: jnp.ones((), p.dtype), params)
        mask["encoder"] = {
            k: (v if k == "mask_tokens" else jax.tree_util.tree_map(lambda m: m * learning, v))
            for k, v in mask["encoder"].items()
        }
        return mask

    return Model(
        "pemvae",
        tuple(modalities),
        init,
        loss,
        encode,
        experts.decode,
        trainable=trainable if config.freeze_encoder else None,
    )
