"""Adversarial training of any model's image decoders (VAE-GAN, Larsen et al. 2016), with an R1 penalty.

One discriminator D_m per image modality m judges real images against two
kinds of generated ones: reconstructions x^_m = E[x_m | z], z ~ q(z | all
modalities), and prior samples x~_m = E[x_m | z], z ~ p(z). With
s(t) = softplus(t) = -log sigmoid(-t):

  generator:     the model's loss + lambda * sum_m [ s(-D_m(x^_m)) + s(-D_m(x~_m)) ]
                 (the non-saturating loss, Goodfellow et al. 2014, Sec. 3)
  discriminator: sum_m [ s(-D_m(x_m)) + s(D_m(x^_m)) + s(D_m(x~_m)) + (gamma / 2) ||grad_x D_m(x_m)||^2 ]
                 (the R1 penalty on real images, per example; Mescheder et al. 2018, Eq. 9)

D_m's network follows the modality's, as the VAE's networks do
(``--disc_network=auto``): a conv net of ``--disc_widths`` for a conv
modality (CelebA), an MLP of ``--disc_hidden_dims`` for an MLP one (the
trimodal images); ``--disc_network=conv`` gives every image a conv D (what
adversarial runs did before the option existed).

lambda is ``--adv_weight`` (0 during the first ``--adv_warmup_epochs``, while
D already learns), gamma ``--r1_weight``. D has its own Adam optimizer
(``--disc_learning_rate``, b1 = 0.5 as in DCGAN) and its own parameters: the
generator's step never changes them, and the discriminator's step sees the
generated images as constants.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses

import jax
import jax.numpy as jnp
import optax

from mvae_jax import options as opt
from mvae_jax.models.base import compute_dtype
from mvae_jax.networks import Discriminator, MLPDiscriminator

DISC_NETWORKS = ("auto", "conv")

OPTIONS = (
    opt.number("adv_weight", 1.0, "weight lambda of the generator's GAN loss"),
    opt.number("disc_learning_rate", 2e-3, "the discriminators' Adam learning rate (b1 = 0.5)", strict=True),
    opt.number("r1_weight", 1.0, "gamma of the R1 penalty (gamma / 2) ||grad D(real)||^2; 0 = off"),
    opt.widths("disc_widths", (32, 64, 128), "channels of the conv discriminator's stride-2 conv layers", "32,64,128"),
    opt.choice(
        "disc_network",
        "auto",
        DISC_NETWORKS,
        "auto = each image's discriminator follows its modality's network (a conv net for conv modalities, an MLP "
        "for MLP ones, e.g. the trimodal images); conv = a conv net for every image (adversarial runs saved before "
        "this option load as conv)",
        legacy="conv",
    ),
    opt.widths(
        "disc_hidden_dims", (128, 128), "widths of the MLP discriminator's hidden layers (leaky ReLU)", "128,128"
    ),
    opt.integer(
        "adv_warmup_epochs", 0, "epochs before the generator's GAN loss counts (the discriminator learns meanwhile)"
    ),
)
"""The settings adversarial training reads (``--adversarial``); one of them without it is refused."""


def generator_loss(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating generator loss -log sigmoid(D(G)) per example: (batch,) -> (batch,).

    Goodfellow et al. 2014, Sec. 3.
    """
    return jax.nn.softplus(-fake_logits)


def discriminator_loss(real_logits: jax.Array, fake_logits: Mapping[str, jax.Array]) -> jax.Array:
    """-log sigmoid(D(x)) - sum_f log(1 - sigmoid(D(f))) per example: (batch,) (Goodfellow et al. 2014, Eq. 1)."""
    return jax.nn.softplus(-real_logits) + sum(jax.nn.softplus(f) for f in fake_logits.values())


def r1_penalty(discriminate, images: jax.Array) -> jax.Array:
    """||grad_x D(x)||^2 per real example: (batch,) (Mescheder et al. 2018, Eq. 9, without gamma / 2).

    ``discriminate`` must treat examples independently (no batch statistics):
    then the gradient of sum_i D(x_i) with respect to x_i is grad D(x_i), and one
    backward pass gives every example's gradient.
    """
    grad = jax.grad(lambda x: jnp.sum(discriminate(x)))(images)
    return jnp.sum(grad.reshape(grad.shape[0], -1) ** 2, axis=-1)


@dataclasses.dataclass(frozen=True)
class Adversary:
    """The discriminators of a run and their two losses; built by ``make_adversary``."""

    names: tuple[str, ...]  # the image modalities judged
    discriminators: Mapping[str, Discriminator | MLPDiscriminator]  # one network per judged modality
    tx: optax.GradientTransformation
    weight: float
    r1_weight: float
    warmup_epochs: int

    def init(self, rng: jax.Array, shapes: Mapping[str, tuple[int, ...]]) -> dict:
        """{image modality: discriminator params}."""
        keys = jax.random.split(rng, len(self.names))
        return {
            n: self.discriminators[n].init(k, jnp.zeros((1, *shapes[n]), jnp.float32))["params"]
            for n, k in zip(self.names, keys)
        }

    def discriminate(self, disc_params, name: str, images: jax.Array) -> jax.Array:
        return self.discriminators[name].apply({"params": disc_params[name]}, images)

    def fakes(self, model, params, batch, rng: jax.Array) -> dict[str, dict[str, jax.Array]]:
        """{"reconstruction" | "prior": {image modality: (batch, H, W, C) pixel means}}, differentiable in params."""
        k_posterior, k_prior = jax.random.split(rng)
        z_posterior = model.draw(params, batch, model.names, k_posterior, 1)[0]
        z_prior = jax.random.normal(k_prior, z_posterior.shape, z_posterior.dtype)
        modality = {m.name: m for m in model.modalities}
        out = {}
        for kind, z in (("reconstruction", z_posterior), ("prior", z_prior)):
            logits = model.decode(params, z, self.names)
            out[kind] = {n: modality[n].mean(logits[n]) for n in self.names}
        return out

    def generator_terms(self, disc_params, fakes, epoch) -> dict[str, jax.Array]:
        """{"adv_generator": the non-saturating loss summed over images and kinds, "adv_weight": lambda now}.

        Each (batch,).
        """
        total = sum(
            generator_loss(self.discriminate(disc_params, n, images[n]))
            for images in fakes.values()
            for n in self.names
        )
        weight = jnp.where(jnp.asarray(epoch) < self.warmup_epochs, 0.0, self.weight)
        return {"adv_generator": total, "adv_weight": jnp.broadcast_to(weight, total.shape)}

    def discriminator_terms(self, disc_params, batch, fakes) -> dict[str, jax.Array]:
        """Per-example terms of the discriminator's objective; ``"disc_loss"`` is minimised."""
        terms, total = {}, 0.0
        for n in self.names:
            discriminate = lambda x, n=n: self.discriminate(disc_params, n, x)
            real = discriminate(batch[n])
            fake = {kind: discriminate(images[n]) for kind, images in fakes.items()}
            loss = discriminator_loss(real, fake)
            r1 = r1_penalty(discriminate, batch[n]) if self.r1_weight else jnp.zeros_like(loss)
            terms[f"disc_real_{n}"] = jax.nn.sigmoid(real)
            terms.update({f"disc_{kind}_{n}": jax.nn.sigmoid(f) for kind, f in fake.items()})
            terms[f"r1_{n}"] = r1
            total = total + loss + 0.5 * self.r1_weight * r1
        terms["disc_loss"] = total
        return terms

    def step(self, disc_params, disc_opt_state, batch, fakes):
        """One optimizer step of the discriminators against constant ``fakes``: (params, opt_state, {term: mean})."""
        fakes = jax.lax.stop_gradient(fakes)

        def objective(p):
            terms = {k: jnp.mean(v) for k, v in self.discriminator_terms(p, batch, fakes).items()}
            return terms["disc_loss"], terms

        grads, terms = jax.grad(objective, has_aux=True)(disc_params)
        updates, disc_opt_state = self.tx.update(grads, disc_opt_state, disc_params)
        return optax.apply_updates(disc_params, updates), disc_opt_state, terms


def make_adversary(config, modalities) -> Adversary | None:
    """The run's ``Adversary``, or None without ``config.adversarial``; ValueError if the data set has no images."""
    if not config.adversarial:
        return None
    names = tuple(m.name for m in modalities if m.is_image)
    if not names:
        raise ValueError(
            f"adversarial=True needs an image modality; dataset={config.dataset!r} has {[m.name for m in modalities]}"
        )
    dtype = compute_dtype(config)
    discriminators = {
        m.name: (
            MLPDiscriminator(tuple(config.disc_hidden_dims), dtype)
            if m.network == "mlp" and config.disc_network == "auto"
            else Discriminator(tuple(config.disc_widths), dtype)
        )
        for m in modalities
        if m.is_image
    }
    return Adversary(
        names,
        discriminators,
        optax.adam(config.disc_learning_rate, b1=0.5),
        float(config.adv_weight),
        float(config.r1_weight),
        int(config.adv_warmup_epochs),
    )
