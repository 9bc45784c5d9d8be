"""The interface every model implements: pure functions of explicit parameters.

Also what models share: the options several of them read (one declaration each), the experts' encoders
and decoders, the batch checks and the subset masks. Why one module of about 580 lines: it is the one
file a model's author reads before writing a model (docs/ARCHITECTURE.md, "How to add a model").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
import inspect
import itertools
import math
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from mvae_jax import distributions
from mvae_jax import options as opt
from mvae_jax.modality import Modality
from mvae_jax.networks import ConvDecoder, ConvStack, Decoder, GaussianEncoder, JointGaussianEncoder

# Options several models read: one declaration each, named by every model's OPTIONS block.
LIKELIHOOD_WEIGHTS = opt.Option(
    "likelihood_weights",
    "floats",
    (),
    "weight lambda of each modality's log-likelihood, comma separated in the data set's modality order "
    "(x,y,w); empty = all 1",
    "empty (all 1) or finite numbers >= 0, one per modality",
    lambda v: all(opt.is_number(w) and math.isfinite(w) and w >= 0 for w in v),
    empty="all 1",
)
KL_WARMUP_EPOCHS = opt.integer(
    "kl_warmup_epochs",
    0,
    "KL weight rises linearly from 0 to beta over this many epochs (beta * min(1, epochs done / N), "
    "Sonderby et al. 2016); 0 = no warm-up",
)
PRIVATE_DIM = opt.integer(
    "private_dim",
    32,
    "size of each modality's private latent w_m beside the shared z (32: MMVAE+'s PolyMNIST value; DMVAE has "
    "its own, --dmvae_private_dim)",
    1,
)
NUM_SUBSETS = opt.integer(
    "num_subsets",
    1,
    "random subsets per example and step: mvae's subset ELBOs (0 = none: with 2 modalities the paper's "
    "objective); pemvae's proper subsets with --subset_sampling=random",
    allowed="an integer >= 1 (mvae: >= 0, 0 = the joint and unimodal ELBOs only)",
)

Params = Any
Batch = Mapping[str, jax.Array]

PRESENT = "_present"
"""Key of a batch's presence mask, for incomplete data (``--missing``, ``mvae_jax.missing``): (batch, M) bool,
column i for the model's modality i, True where the example has it. A batch without the key is complete. The
values of a missing modality are zeros that no objective reads: a model that accepts incomplete data
(``models.INCOMPLETE``) computes each example's objective from the modalities it has."""


class InitFn(Protocol):
    def __call__(self, rng: jax.Array) -> Params: ...


class LossFn(Protocol):
    def __call__(
        self, params: Params, batch: Batch, rng: jax.Array, epoch: jax.Array | int = 0, beta: jax.Array | float = ...
    ) -> dict[str, jax.Array]: ...


class EncodeFn(Protocol):
    def __call__(self, params: Params, batch: Batch, present: Sequence[str]) -> distributions.Gaussian: ...


class DecodeFn(Protocol):
    def __call__(self, params: Params, z: jax.Array, names: Sequence[str] | None = None) -> dict[str, jax.Array]: ...


class MixtureFn(Protocol):
    def __call__(self, params: Params, batch: Batch, present: tuple[str, ...]) -> distributions.Gaussian: ...


@dataclasses.dataclass(frozen=True)
class Model:
    """A multimodal VAE as pure, jittable functions.

    Attributes:
      name: registry name, e.g. ``"jmvae"``.
      modalities: the modalities it models, in a fixed order.
      init: rng -> params.
      loss: (params, batch, rng, epoch=0, beta=config.beta) -> {term: (batch,)};
        the term ``"loss"`` is the per-example objective to minimise, the others
        are for logging. ``epoch`` (epochs completed) drives schedules; ``beta``
        overrides the run's KL weight (a beta sweep vmaps over it). Both may be traced.
      encode: (params, batch, present) -> (mu, logvar), each (batch, latent):
        the mean and log variance of the posterior q(z | the modalities in
        ``present``), any non-empty subset. For a Gaussian posterior this is the
        posterior itself; for a mixture, its first two moments.
      decode: (params, z, names=None) -> {name: logits (..., *shape)} for ``names`` (every modality by default).
      mixture: None for Gaussian posteriors; else (params, batch, present) ->
        (mus, logvars), each (components, batch, latent): the posterior as an
        equal-weight mixture of Gaussians (MMVAE, MoPoE). Use ``posterior``.
      trainable: None when every parameter learns at every step; else
        (params, epoch) -> a tree like params of 0/1 scalars, by which the
        training step multiplies the optimizer's updates (PEMVAE's
        ``freeze_encoder``). ``epoch`` may be traced.
      latent_prior: p(z), which eval.py's generation "from the prior" draws:
        ``"gaussian"`` N(0, I), or ``"laplace"`` Laplace(0, 1) (MMVAE+).
      prior_mixture: None when p(z) is ``latent_prior``'s standard distribution; else params ->
        (weights (C,), locations (C, latent), scales (C, latent)): a learned p(z), a mixture of
        ``latent_prior``'s family (CMVAE's clusters).
      private_latents: the decoders also read latents of their own modality (MMVAE+, DMVAE, CMVAE), which
        ``decode`` sets to their prior mean; estimates over z alone (the importance-weighted log-likelihood)
        do not apply.
      decode_drawing: for a model with private latents, (params, z, names, rng) -> logits as ``decode``, each
        modality's private latent drawn from its prior p(w_m) (the papers' test-time generation). Use
        ``generate``.
      sample: None when q(z | present) is ``posterior``'s Gaussian or mixture; else (params, batch, present,
        rng, num) -> z (num, batch, latent) drawn from a posterior that is neither (JNF's flows and HMC), whose
        moments ``encode`` returns. Use ``draw``.
    """

    name: str
    modalities: tuple[Modality, ...]
    init: InitFn
    loss: LossFn
    encode: EncodeFn
    decode: DecodeFn
    mixture: MixtureFn | None = None
    trainable: Callable[[Params, jax.Array], Params] | None = None
    latent_prior: str = "gaussian"
    prior_mixture: Callable[[Params], tuple[jax.Array, jax.Array, jax.Array]] | None = None
    private_latents: bool = False
    sample: Callable[..., jax.Array] | None = None
    decode_drawing: Callable[..., dict[str, jax.Array]] | None = None
    # Programs compiled for this model by ``per_model_jit`` functions: they live and die with the model.
    _jitted: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        # A batch from Python is checked where it enters (at trace time under jit: no cost per step).
        names = self.names
        if not getattr(self.loss, "checks_batch", False):  # the loss reads every modality
            object.__setattr__(self, "loss", _checking(self.loss, self.modalities, lambda *a, **k: names))
        if not getattr(self.encode, "checks_batch", False):  # encode reads those present
            object.__setattr__(self, "encode", _checking(self.encode, self.modalities, lambda present: present))
        if self.sample is not None and not getattr(self.sample, "checks_batch", False):
            object.__setattr__(self, "sample", _checking(self.sample, self.modalities, lambda present, *a: present))

    def posterior(self, params: Params, batch: Batch, present: Sequence[str]) -> distributions.Gaussian:
        """q(z | present) as an equal-weight mixture: (mus, logvars), each (components, batch, latent).

        One component for models with Gaussian posteriors.
        """
        if self.mixture is not None:
            return self.mixture(params, batch, tuple(present))
        mu, logvar = self.encode(params, batch, tuple(present))
        return mu[None], logvar[None]

    def draw(self, params: Params, batch: Batch, present: Sequence[str], rng: jax.Array, num: int) -> jax.Array:
        """z ~ q(z | present), ``num`` per example: (num, batch, latent) (reparameterised where the posterior is
        Gaussian or a mixture, whose component choice is not differentiated)."""
        if self.sample is not None:
            return self.sample(params, batch, tuple(present), rng, num)
        return distributions.sample_mixture(rng, *self.posterior(params, batch, present), (num,))

    def generate(
        self, params: Params, z: jax.Array, names: Sequence[str] | None = None, rng: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """``decode``, or with ``rng`` each private latent drawn from its prior (``decode_drawing``; the same as
        ``decode`` for a model without private latents)."""
        if rng is None or self.decode_drawing is None:
            return self.decode(params, z, names)
        return self.decode_drawing(params, z, names, rng)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)


def check_batch(modalities: Sequence[Modality], batch, names: Sequence[str]) -> None:
    """ValueError naming the modality and what was expected if ``batch`` lacks one of ``names`` or holds
    values of the wrong shape: (..., *shape) per modality, one-hot vectors (not integer labels) for a
    categorical one, images with their channel axis."""
    if not isinstance(batch, Mapping):
        raise ValueError(f"a batch is a dict {{modality: array}}, got {type(batch).__name__}")
    by_name = {m.name: m for m in modalities}
    for name in names:
        if name not in batch:
            raise ValueError(
                f"the batch has no modality {name!r} (it has {sorted(batch)}); this model's modalities: "
                f"{', '.join(by_name)}"
            )
        modality, value = by_name[name], batch[name]
        if not hasattr(value, "shape"):  # a list: its shape and dtype as an array would have them
            value = np.asarray(value)
        shape, dtype = tuple(value.shape), value.dtype
        expected = f"(batch, {', '.join(str(d) for d in modality.shape)})"
        if modality.likelihood == "categorical" and jnp.issubdtype(dtype, jnp.integer):
            raise ValueError(
                f"modality {name!r}: integer labels of shape {shape}; expected one-hot vectors {expected} "
                f"(e.g. jax.nn.one_hot(labels, {modality.shape[0]}))"
            )
        if len(shape) < len(modality.shape) + 1 or shape[len(shape) - len(modality.shape) :] != modality.shape:
            hint = ""
            if len(modality.shape) == 3 and shape[1:] == modality.shape[:2]:
                hint = " (the channel axis is missing: add it with x[..., None])"
            raise ValueError(f"modality {name!r}: values of shape {shape}; expected {expected}{hint}")


def _checking(fn, modalities, present_of):
    """``fn(params, batch, ...)`` that first checks the batch's modalities ``present_of(...)`` (``check_batch``)."""
    known = {m.name for m in modalities}

    @functools.wraps(fn)
    def checked(params, batch, *args, **kwargs):
        check_batch(modalities, batch, [n for n in present_of(*args, **kwargs) if n in known])
        return fn(params, batch, *args, **kwargs)

    checked.checks_batch = True
    return checked


AFTER_WARMUPS = 1 << 30
"""An ``epoch`` for ``model.loss`` at which every warm-up and schedule is over: the objective a run ends with."""


def make_mean_loss_fn(model: Model, num_examples: int, batch_size: int, final_epoch: int, betas=None):
    """(params, rng, data) -> {term: mean of ``model.loss``'s per-example terms over ``num_examples`` pairs}, jitted.

    The run's objective on a data set: train.py's validation after each epoch,
    eval.py's ``objective`` section. ``final_epoch`` is the ``epoch`` the loss
    is scored at (``AFTER_WARMUPS``: every schedule over). ``data`` maps
    modality name -> (num_examples, *shape), already in its final form
    (mnist_label's images are binarized once). The pairs are
    scored in batches of ``batch_size`` (the last padded and masked out), each
    with its own key folded from ``rng``. With ``betas`` the params are
    stacked (a sweep) and each member is scored with its own beta, and with its
    own key if ``rng`` is stacked too (a seed sweep).
    """
    if num_examples < 1:
        raise ValueError(f"the validation split is empty (num_examples={num_examples}); allowed: at least 1 pair")
    size = min(batch_size, num_examples)
    batches = -(-num_examples // size)
    pad = batches * size - num_examples
    mask = jnp.asarray(np.arange(batches * size) < num_examples, jnp.float32).reshape(batches, size)
    epoch = jnp.int32(final_epoch)

    def member(params, rng, data, beta=None):
        beta_arg = () if beta is None else (beta,)

        def body(sums, inputs):
            index, batch, weights = inputs
            terms = model.loss(params, batch, jax.random.fold_in(rng, index), epoch, *beta_arg)
            return {k: sums[k] + jnp.sum(v * weights) for k, v in terms.items()}, None

        first = jax.tree_util.tree_map(lambda x: x[:size], data)
        shapes = jax.eval_shape(lambda: model.loss(params, first, rng, epoch, *beta_arg))
        zeros = {k: jnp.zeros((), jnp.float32) for k in shapes}
        # Padding rows: zeros, with every modality present (a presence mask of incomplete data: no example empty).
        stacked = {
            k: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=k == PRESENT).reshape(
                batches, size, *x.shape[1:]
            )
            for k, x in data.items()
        }
        sums, _ = jax.lax.scan(body, zeros, (jnp.arange(batches), stacked, mask))
        return {k: v / num_examples for k, v in sums.items()}

    if betas is None:
        return jax.jit(member)
    values = jnp.asarray(betas, jnp.float32)

    def swept(params, rng, data):
        typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
        key_axis = 0 if rng.ndim > (0 if typed else 1) else None  # a key per member (a seed sweep), or one for all
        return jax.vmap(member, in_axes=(0, key_axis, None, 0))(params, rng, data, values)

    return jax.jit(swept)


def per_model_jit(static_argnums: tuple[int, ...] = (), static_argnames: tuple[str, ...] = ()):
    """Decorator: ``fn(model, *args)`` jitted once per Model instance, its compiled programs kept in the model.

    A module-level ``jax.jit`` taking the model as a static argument keeps one
    cache entry per Model ever built (a Model hashes by its functions'
    identity) for the life of the process; here they are freed with the model.
    ``static_argnums`` count ``model`` as argument 0, as they would for ``jax.jit(fn)``.
    """

    def decorate(fn):
        # Without ``model``, each static argument moves one place left; static names are given as positions
        # too, so that positional calls of them are static as well.
        positions = list(inspect.signature(fn).parameters)
        names = tuple(n for n in static_argnames if n != "model")
        nums = tuple(sorted({i - 1 for i in static_argnums if i != 0} | {positions.index(n) - 1 for n in names}))

        @functools.wraps(fn)
        def call(model: Model, *args, **kwargs):
            jitted = model._jitted.get(fn)
            if jitted is None:
                jitted = model._jitted[fn] = jax.jit(
                    functools.partial(fn, model), static_argnums=nums, static_argnames=names
                )
            return jitted(*args, **kwargs)

        return call

    return decorate


def check_present(present: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    """``present`` as a tuple in the order of ``names``; ValueError if empty, unknown or repeated."""
    present = tuple(present)
    unknown = [p for p in present if p not in names]
    if not present or unknown or len(set(present)) != len(present):
        raise ValueError(
            f"present={present!r} is not a non-empty subset of the modalities {tuple(names)}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    return tuple(n for n in names if n in present)


def presence(batch: Batch, names: Sequence[str]) -> jax.Array | None:
    """(M, batch) float32 0/1 of the batch's ``PRESENT`` mask in the order of ``names``; None: a complete batch."""
    if PRESENT not in batch:
        return None
    mask = jnp.asarray(batch[PRESENT])
    if mask.ndim != 2 or mask.shape[-1] != len(names):
        raise ValueError(
            f"batch[{PRESENT!r}] has shape {tuple(mask.shape)}; expected (batch, {len(names)}): one column per "
            f"modality {', '.join(names)}"
        )
    return jnp.moveaxis(mask, -1, 0).astype(jnp.float32)


def complete_only(name: str):
    """A loss that refuses a batch with a presence mask: ``name``'s objective needs every modality at once."""

    def refuse(loss):
        @functools.wraps(loss)
        def checked(params, batch, *args, **kwargs):
            if PRESENT in batch:
                raise ValueError(
                    f"{name} cannot train on incomplete data: every term of its objective needs q(z | all the "
                    f"modalities); models that accept --missing: {', '.join(INCOMPLETE_MODELS)}"
                )
            return loss(params, batch, *args, **kwargs)

        return checked

    return refuse


INCOMPLETE_MODELS = ["mvae", "telbo", "pemvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus", "dmvae", "cmvae"]
"""The models that train on examples that lack modalities (``--missing``); JMVAE's objective needs them all.
A plugin's model joins with ``plugins.register_model(..., incomplete=True)``."""


def flatten_inputs(batch: Batch, modalities: Sequence[Modality]) -> jax.Array:
    """Concatenate the flattened modalities into one input: (batch, sum of sizes)."""
    parts = [batch[m.name].reshape(batch[m.name].shape[0], -1) for m in modalities]
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def subsets(names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Every non-empty subset of ``names``, in the order of ``names``, smallest first."""
    return tuple(s for r in range(1, len(names) + 1) for s in itertools.combinations(tuple(names), r))


def random_subset_masks(rng: jax.Array, num_modalities: int, batch_size: int, proper: bool = False) -> jax.Array:
    """(modalities, batch) 0/1 masks of subsets drawn uniformly per example.

    From all 2^M - 1 non-empty subsets, or with ``proper`` from the 2^M - 2
    that leave at least one modality out. Modality i is in the subset when
    bit i of the subset's index is set.
    """
    high = 2**num_modalities - (1 if proper else 0)
    if high <= 1:
        raise ValueError(f"no {'proper ' if proper else ''}non-empty subsets of {num_modalities} modalities")
    index = jax.random.randint(rng, (batch_size,), 1, high)
    return ((index[None, :] >> jnp.arange(num_modalities)[:, None]) & 1).astype(jnp.float32)


def random_present_subsets(rng: jax.Array, present: jax.Array, proper: bool = False) -> tuple[jax.Array, jax.Array]:
    """(masks (modalities, batch) 0/1, found (batch,) 0/1): per example, a subset of its present modalities drawn
    uniformly from the non-empty ones (``proper``: from those that leave one of them out).

    ``present`` (modalities, batch) 0/1. ``found`` is 0 where no such subset exists (``proper`` with one
    modality present); the mask is then that of some other subset, to be weighted by ``found``. For a
    complete batch these are the draws of ``random_subset_masks`` with the same key.
    """
    num_modalities = present.shape[0]
    codes = jnp.arange(1, 2**num_modalities)  # subset i <-> bits of its code
    bits = ((codes[:, None] >> jnp.arange(num_modalities)[None, :]) & 1).astype(jnp.float32)  # (S, M)
    inside = jnp.all(bits[:, :, None] <= present[None], axis=1)  # (S, batch): subset within the present ones
    if proper:
        inside &= jnp.any(bits[:, :, None] < present[None], axis=1)
    count = jnp.sum(inside, axis=0)
    # The k-th allowed subset, k uniform: with every subset allowed, randint's draw of random_subset_masks.
    k = jax.random.randint(rng, count.shape, 0, jnp.maximum(count, 1))
    chosen = jnp.argmax(jnp.cumsum(inside, axis=0) > k[None], axis=0)
    return bits[chosen].T, (count > 0).astype(jnp.float32)


MOPOE_CONV = ConvStack((32, 64, 128), kernel=3, activation="relu")
"""MoPoE's PolyMNIST image networks (Sutter et al. 2021, their ``ConvNetworksImgMMNIST.py``): 3x3 stride-2
convolutions of 32, 64, 128 channels with ReLU (3x28x28 -> 128x4x4), then a dense layer of the latent's width with
ReLU and the posterior's heads; the decoder mirrors it (dense to 128x4x4, transposed convolutions to 3x28x28)."""


def conv_stack(config, modality: Modality) -> ConvStack | None:
    """The convolutional stack of a modality's networks: the run's ``conv_widths`` (DCGAN-style), MoPoE's, or None."""
    if modality.network == "conv":
        return ConvStack(tuple(config.conv_widths))
    if modality.network == "mopoe":
        return MOPOE_CONV
    return None


def conv_widths(config, modalities: Sequence[Modality]) -> dict[str, ConvStack]:
    """{name: its ``conv_stack``} for the modalities with convolutional networks."""
    return {m.name: conv_stack(config, m) for m in modalities if m.network != "mlp"}


def compute_dtype(config):
    """The dtype the networks' matmuls and convolutions run in: bfloat16 for ``precision="bf16"``, else None (float32).

    Parameters, optimizer states and every loss term stay float32 either way.
    """
    return jnp.bfloat16 if config.precision == "bf16" else None


def make_encoder(config, modality: Modality) -> GaussianEncoder:
    """q(z | x_m): an MLP of the run's ``hidden_dims``; for a conv modality its ``conv_widths`` and a dense layer."""
    if modality.network == "conv":
        return GaussianEncoder((), config.latent_dim, conv_stack(config, modality), compute_dtype(config))
    if modality.network == "mopoe":  # MoPoE's dense layer of the latent's width before the heads
        return GaussianEncoder((config.latent_dim,), config.latent_dim, MOPOE_CONV, compute_dtype(config))
    return GaussianEncoder(
        tuple(config.hidden_dims), config.latent_dim, dtype=compute_dtype(config), activation=config.activation
    )


def make_decoder(config, modality: Modality):
    """p(x_m | z): the mirror of ``make_encoder``, or an MLP of ``decoder_hidden_dims`` when they are given."""
    if modality.network != "mlp":
        return ConvDecoder(conv_stack(config, modality), modality.shape, compute_dtype(config))
    hidden = tuple(config.decoder_hidden_dims) or tuple(config.hidden_dims)[::-1]
    return Decoder(hidden, modality.shape, compute_dtype(config), config.activation)


class Experts:
    """One Gaussian encoder q(z | x_m) and one decoder p(x_m | z) per modality (``make_encoder``, ``make_decoder``).

    Parameters live under ``"encoders"`` and ``"decoders"``, keyed by modality
    name. The building block of every model here; JMVAE and the
    parameter-efficient model add their joint encoder beside it.
    """

    def __init__(self, config, modalities: Sequence[Modality], encoders: bool = True):
        self.modalities = tuple(modalities)
        self.names = tuple(m.name for m in self.modalities)
        self.latent = config.latent_dim
        self.encoders = {m.name: make_encoder(config, m) for m in self.modalities} if encoders else {}
        self.decoders = {m.name: make_decoder(config, m) for m in self.modalities}

    def init_from(self, rng: jax.Array) -> dict:
        """``init`` with the encoder and decoder keys split from one ``rng``."""
        k_encoders, k_decoders = jax.random.split(rng)
        return self.init(k_encoders, k_decoders)

    def init(self, k_encoders: jax.Array | None, k_decoders: jax.Array) -> dict:
        """{"encoders": {m: params}, "decoders": {m: params}} (no "encoders" if built without them)."""
        z = jnp.zeros((1, self.latent), jnp.float32)
        params = {
            "decoders": {
                m.name: self.decoders[m.name].init(k, z)["params"]
                for m, k in zip(self.modalities, jax.random.split(k_decoders, len(self.modalities)))
            }
        }
        if self.encoders:
            one = {m.name: jnp.zeros((1, *m.shape), jnp.float32) for m in self.modalities}
            params["encoders"] = {
                m.name: self.encoders[m.name].init(k, one[m.name])["params"]
                for m, k in zip(self.modalities, jax.random.split(k_encoders, len(self.modalities)))
            }
        return params

    def encode(self, params, batch: Batch, name: str) -> distributions.Gaussian:
        """q(z | x_name): (mu, logvar), each (batch, latent)."""
        return self.encoders[name].apply({"params": params["encoders"][name]}, batch[name])

    def encode_stack(self, params, batch: Batch, present: Sequence[str]) -> distributions.Gaussian:
        """The experts of ``present`` stacked: (mus, logvars), each (len(present), batch, latent)."""
        experts = [self.encode(params, batch, n) for n in present]
        return jnp.stack([e[0] for e in experts]), jnp.stack([e[1] for e in experts])

    def decode(self, params, z: jax.Array, names: Sequence[str] | None = None) -> dict[str, jax.Array]:
        """{name: logits (..., *shape)} for ``names`` (all modalities by default); z (..., latent)."""
        names = self.names if names is None else names
        return {n: self.decoders[n].apply({"params": params["decoders"][n]}, z) for n in names}


class JointEncoder:
    """q(z | x_1..x_M) from one MLP over all modalities concatenated; params under ``"joint_encoder"`` (JMVAE, TELBO).

    Conv modalities enter through their own convolutional features (``JointGaussianEncoder``).
    """

    def __init__(self, config, modalities: Sequence[Modality]):
        self.modalities = tuple(modalities)
        self.network = JointGaussianEncoder(
            tuple(m.name for m in self.modalities),
            tuple(config.hidden_dims),
            config.latent_dim,
            conv_widths(config, self.modalities),
            compute_dtype(config),
            config.activation,
        )

    def init(self, rng: jax.Array) -> dict:
        one = {m.name: jnp.zeros((1, *m.shape), jnp.float32) for m in self.modalities}
        return {"joint_encoder": self.network.init(rng, one)["params"]}

    def encode(self, params, batch: Batch) -> distributions.Gaussian:
        """(mu, logvar), each (batch, latent)."""
        return self.network.apply({"params": params["joint_encoder"]}, batch)


def joint_and_experts(config, modalities: Sequence[Modality], prior_expert: bool):
    """(joint, experts, init, encode) of a model with a joint encoder beside unimodal experts (JMVAE, TELBO).

    ``encode``: q(z | all) from the joint network, q(z | x_m) from expert m,
    any other subset from the product of its experts (times p(z) if ``prior_expert``).
    """
    names = tuple(m.name for m in modalities)
    joint = JointEncoder(config, modalities)
    experts = Experts(config, modalities)

    def init(rng: jax.Array):
        k_joint, k_enc, k_dec = jax.random.split(rng, 3)
        return {**joint.init(k_joint), **experts.init(k_enc, k_dec)}

    def encode(params, batch: Batch, present) -> distributions.Gaussian:
        present = check_present(present, names)
        if present == names:
            return joint.encode(params, batch)
        if len(present) == 1:
            return experts.encode(params, batch, present[0])
        return distributions.product_of_experts(
            *experts.encode_stack(params, batch, present), prior_expert=prior_expert
        )

    return joint, experts, init, encode


def private_drawing(experts: Experts, private: int, draw: Callable[..., jax.Array]):
    """``Model.decode_drawing`` of a model whose decoder of m reads (w_m, z), w_m of size ``private`` first:
    each target t decoded with its own w_t = ``draw(key, shape, dtype)``, a draw of p(w_t), the key folded
    from ``rng`` by t's index among the modalities."""

    def decode_drawing(params, z, targets, rng):
        out = {}
        for t in experts.names if targets is None else tuple(targets):
            w = draw(jax.random.fold_in(rng, experts.names.index(t)), (*z.shape[:-1], private), z.dtype)
            out.update(experts.decode(params, jnp.concatenate([w, z], axis=-1), (t,)))
        return out

    return decode_drawing
