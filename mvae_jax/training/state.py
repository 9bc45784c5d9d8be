"""The train state and one training step: optimizers, the step on a batch, its sharded and swept form.

``make_train_step`` is the step of one run; ``make_step_fn`` adds dynamic
binarization, the batch's sharding constraint and the vmap over the members
of a beta sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from flax import struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import optax

from mvae_jax import adversarial, losses
from mvae_jax import config as config_lib
from mvae_jax.models import Model

# Streams folded into the run's key: each use of randomness has its own.
STEP_STREAM, PERMUTATION_STREAM, BINARIZE_STREAM, DISC_INIT_STREAM = 0, 1, 2, 3
_ADVERSARY_STREAM = 1  # folded into a step's key


class TrainState(struct.PyTreeNode):
    """Everything a resumed run needs: counters, parameters, optimizer states and the base key.

    ``disc_params`` and ``disc_opt_state`` hold the discriminators of
    adversarial training (``mvae_jax.adversarial``), None without it.
    """

    step: jax.Array  # int32 (), optimizer steps taken
    epoch: jax.Array  # int32 (), epochs completed
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 (2,), base key; per-step and per-epoch keys are folded from it
    disc_params: Any = None
    disc_opt_state: Any = None


class Reporter(Protocol):
    """Progress hooks a command line implements (the library itself only logs).

    In a beta sweep, losses are arrays with one value per beta.
    """

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, index: int, running_loss) -> None: ...

    def epoch_end(self, metrics: Mapping[str, Any]) -> None: ...


class AmsgradState(NamedTuple):
    count: jax.Array  # steps taken
    mu: optax.Updates  # first moment
    nu: optax.Updates  # second moment
    nu_max: optax.Updates  # the elementwise maximum of nu over the steps so far (not bias corrected)


def scale_by_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """AMSGrad (Reddi, Kale & Kumar, ICLR 2018, Algorithm 2) as PyTorch's ``Adam(amsgrad=True)`` computes it.

    With m_t and v_t Adam's moments and t the step: v_max_t = max(v_max_{t-1}, v_t), and the update is
    -(m_t / (1 - b1^t)) / (sqrt(v_max_t) / sqrt(1 - b2^t) + eps) before the learning rate. The maximum is taken
    over the raw moments and the current step's bias correction applied after it, as in
    ``torch.optim.adam._single_tensor_adam``: the optimizer the MMVAE+ and CMVAE authors train PolyMNIST with.
    ``optax.amsgrad`` takes the maximum over the bias-corrected moments instead, so the first steps' large
    corrected moments (v_1 / (1 - b2) = g_1^2) bound the step size for the whole run; the two differ whenever
    the gradients shrink during training (tests/test_training.py shows both against a float64 computation).
    """

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return AmsgradState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())

    def update(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        first = 1 - b1**count
        root_second = jnp.sqrt(1 - b2**count)
        steps = jax.tree.map(lambda m, v: (m / first) / (jnp.sqrt(v) / root_second + eps), mu, nu_max)
        return steps, AmsgradState(count, mu, nu, nu_max)

    return optax.GradientTransformation(init, update)


def make_optimizer(config: config_lib.Config) -> optax.GradientTransformation:
    """The run's optimizer at its learning rate: Adam (Kingma & Ba 2015), or AMSGrad in PyTorch's form
    (``scale_by_amsgrad``; ``--optimizer=amsgrad``, the MMVAE+ and CMVAE recipes)."""
    if config.optimizer == "amsgrad":
        return optax.chain(scale_by_amsgrad(), optax.scale_by_learning_rate(config.learning_rate))
    return optax.adam(config.learning_rate)


def make_optimizers(
    config: config_lib.Config, modalities
) -> tuple[optax.GradientTransformation, adversarial.Adversary | None]:
    """(the generator's optimizer, the discriminators' ``Adversary`` or None): both from ``config``'s learning rates,
    so a NaN rollback that lowers them rebuilds both."""
    return make_optimizer(config), adversarial.make_adversary(config, modalities)


def create_train_state(
    model: Model, tx: optax.GradientTransformation, seed: int, adversary: adversarial.Adversary | None = None
) -> TrainState:
    """Fresh parameters and optimizer state(s) for ``seed``."""
    rng = jax.random.PRNGKey(seed)
    init_rng, rng = jax.random.split(rng)
    params = model.init(init_rng)
    state = TrainState(jnp.int32(0), jnp.int32(0), params, tx.init(params), rng)
    if adversary is not None:
        shapes = {m.name: m.shape for m in model.modalities}
        disc_params = adversary.init(jax.random.fold_in(rng, DISC_INIT_STREAM), shapes)
        state = state.replace(disc_params=disc_params, disc_opt_state=adversary.tx.init(disc_params))
    return state


def make_train_step(model: Model, tx: optax.GradientTransformation, adversary: adversarial.Adversary | None = None):
    """(state, batch, beta=None) -> (state, {term: batch mean}): one gradient step on the mean per-example loss.

    ``beta`` (may be traced) overrides the model's KL weight. With an
    ``adversary`` the generator's loss gains its adversarial term and the
    discriminators then take one step of their own on the same generated images.
    """

    def train_step(state: TrainState, batch, beta=None):
        rng = jax.random.fold_in(jax.random.fold_in(state.rng, STEP_STREAM), state.step)
        beta_arg = () if beta is None else (beta,)

        def objective(params):
            terms = model.loss(params, batch, rng, state.epoch, *beta_arg)
            fakes = None
            if adversary is not None:
                fakes = adversary.fakes(model, params, batch, jax.random.fold_in(rng, _ADVERSARY_STREAM))
                adv = adversary.generator_terms(state.disc_params, fakes, state.epoch)
                terms = {
                    **terms,
                    **adv,
                    "vae_loss": terms["loss"],
                    "loss": terms["loss"] + adv["adv_weight"] * adv["adv_generator"],
                }
            terms = losses.mean_terms(terms)
            return terms["loss"], (terms, fakes)

        grads, (terms, fakes) = jax.grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if model.trainable is not None:  # frozen parameters: their updates are zeroed
            updates = jax.tree_util.tree_map(lambda u, m: u * m, updates, model.trainable(state.params, state.epoch))
        params = optax.apply_updates(state.params, updates)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        if adversary is not None:
            disc_params, disc_opt_state, disc_terms = adversary.step(
                state.disc_params, state.disc_opt_state, batch, fakes
            )
            new = new.replace(disc_params=disc_params, disc_opt_state=disc_opt_state)
            terms = {**terms, **disc_terms}
        return new, terms

    return train_step


def make_step_fn(
    model: Model,
    tx: optax.GradientTransformation,
    mesh: Mesh | None = None,
    binarize: tuple[str, ...] = (),
    adversary: adversarial.Adversary | None = None,
    betas: tuple[float, ...] | None = None,
    member_batches: bool = False,
):
    """(state, batch) -> (state, terms): the step of a run, or of a sweep, on one batch (not jitted).

    With ``betas`` the state is stacked (one member per run of the sweep,
    leading axis) and the step is vmapped over members, each with its own key
    (its seed), counters and beta. ``member_batches``: the batch has a leading
    member axis too (each member's own batch order, ``EpochFn``); else every
    member sees the same batch. The modalities named in ``binarize`` hold
    probabilities: each step replaces them by fresh Bernoulli draws of the
    member's key (dynamic binarization).
    """
    train_step = make_train_step(model, tx, adversary)
    spec = P(None, "data") if betas is not None and member_batches else P("data")
    batch_sharding = NamedSharding(mesh, spec) if mesh is not None else None

    def binarized(rng, step, batch):
        if not binarize:
            return batch
        batch, key = dict(batch), jax.random.fold_in(jax.random.fold_in(rng, BINARIZE_STREAM), step)
        for i, name in enumerate(binarize):
            probs = batch[name]
            batch[name] = jax.random.bernoulli(jax.random.fold_in(key, i), probs).astype(probs.dtype)
        return batch

    def member(state: TrainState, batch, beta=None):
        return train_step(state, binarized(state.rng, state.step, batch), *(() if beta is None else (beta,)))

    def step(state: TrainState, batch):
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(dict(batch), batch_sharding)
        if betas is None:
            return member(state, batch)
        batch_axis = 0 if member_batches else None
        return jax.vmap(member, in_axes=(0, batch_axis, 0))(state, batch, jnp.asarray(betas, jnp.float32))

    return step


def first_member(counter: jax.Array, betas) -> jax.Array:
    """A counter of a run, or of the first run of a sweep (all runs of a sweep step together)."""
    return counter if betas is None else counter[0]
