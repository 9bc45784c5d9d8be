"""One frozen dataclass holds every setting of a run; it is saved as JSON beside the checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from mvae_jax.files import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"  # one JSON line per epoch: the mean loss terms, time and samples/s

# Settings that may change when a run is resumed: everything else defines the
# model, its data or its optimisation, and must match the saved run.
RESUMABLE = frozenset(
    {
        "epochs",
        "data_dir",
        "workdir",
        "keep_checkpoints",
        "precision",
        "nan_rollbacks",
        "nan_lr_factor",
        "tensorboard_images",
    }
)

PRECISIONS = ("fp32", "bf16")
ACTIVATIONS = ("relu", "swish")  # of the MLPs (mvae_jax.networks.ACTIVATIONS)

# PEMVAE's choices (mvae_jax.models.pemvae says what each does).
SUBSET_SAMPLINGS = ("random", "all")
SUBSET_OBJECTIVES = ("elbo_kl", "kl", "elbo")
SUBSET_TARGETS = ("present", "all")
FUSIONS = ("tokens", "mean", "zero")


def dataset_options() -> dict[str, tuple[str, ...]]:
    """{option: the data sets that read it}, from the data sets' contracts (``DatasetSpec.options``)."""
    from mvae_jax.data import DATASETS

    owners: dict[str, tuple[str, ...]] = {}
    for name, spec in DATASETS.items():
        for option in spec.options:
            owners[option] = (*owners.get(option, ()), name)
    return owners


# Options of adversarial training: setting one without adversarial=True is an error.
ADVERSARIAL_OPTIONS = (
    "adv_weight",
    "disc_learning_rate",
    "r1_weight",
    "disc_widths",
    "disc_network",
    "disc_hidden_dims",
    "adv_warmup_epochs",
)
DISC_NETWORKS = ("auto", "conv")  # auto: the discriminator's network follows the modality's (conv or MLP)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every hyper-parameter of one training run.

    The defaults train JMVAE-kl on the trimodal MNIST / Fashion-MNIST / label
    set with the MLP widths and latent size of Suzuki et al. 2016 (Sec. 4).
    """

    model: str = "jmvae"
    dataset: str = "trimodal"
    beta: float = 1.0
    alpha: float = 0.1
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    latent_dim: int = 20
    hidden_dims: tuple[int, ...] = (512, 512)
    decoder_hidden_dims: tuple[int, ...] = ()
    activation: str = "relu"
    seed: int = 0
    pair_seed: int = 0
    validation: int = 0
    data_dir: str | None = None
    workdir: str | None = None
    keep_checkpoints: int = 3
    tensorboard_images: int = 5
    likelihood_weights: tuple[float, ...] = ()
    num_subsets: int = 1
    warmup_epochs: int = 1
    subset_sampling: str = "all"
    unimodal_weight: float = 3.0
    subset_objective: str = "elbo_kl"
    subset_kl_weight: float = 1.0
    subset_targets: str = "present"
    freeze_encoder: bool = False
    fusion: str = "tokens"
    modality_dropout: float = 0.0
    num_samples: int = 10
    kl_warmup_epochs: int = 0
    attributes: tuple[str, ...] = ()
    num_modalities: int = 5
    conv_widths: tuple[int, ...] = (32, 64, 128, 256)
    adversarial: bool = False
    adv_weight: float = 1.0
    disc_learning_rate: float = 2e-3
    r1_weight: float = 1.0
    disc_widths: tuple[int, ...] = (32, 64, 128)
    disc_network: str = "auto"
    disc_hidden_dims: tuple[int, ...] = (128, 128)
    adv_warmup_epochs: int = 0
    precision: str = "fp32"
    nan_rollbacks: int = 0
    nan_lr_factor: float = 0.5

    def __post_init__(self):
        for name in _TUPLES:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.data_dir is not None and str(self.data_dir):
            # stored absolute, so that eval.py and restore_model find the data from any directory
            object.__setattr__(self, "data_dir", os.path.abspath(os.path.expanduser(str(self.data_dir))))
        if self.workdir is None or isinstance(self.workdir, _DerivedWorkdir):
            # Derived here only: dataclasses.replace(config, beta=2.0) passes the old derived workdir back in,
            # and it is derived again from the new model and beta; a workdir someone gave stays as given.
            object.__setattr__(self, "workdir", default_workdir(self.model, self.beta))

    def validate(self, given=None, scopes: bool = True) -> Config:
        """Raise ValueError naming the first bad value and what is allowed; return self.

        One check per field, in the order of the fields: long, but a list, not logic.

        ``given``: the names of the settings the user gave (train.py's flags): one that the model, the data
        set or non-adversarial training does not read is refused even at its default value. Without it,
        only settings that differ from their defaults can be caught. ``scopes=False`` (a saved config.json) skips
        that check: a run saves every field, some changed by training itself (a NaN rollback lowers
        ``disc_learning_rate`` of a run without a discriminator too).
        """
        given = frozenset(given or ())
        from mvae_jax.data import DATASETS
        from mvae_jax.models import MODELS, model_options

        def need(ok: bool, name: str, allowed: str):
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")

        need(self.model in MODELS, "model", ", ".join(sorted(MODELS)))
        need(self.dataset in DATASETS, "dataset", ", ".join(sorted(DATASETS)))
        need(_is_float(self.beta) and math.isfinite(self.beta) and self.beta > 0, "beta", "a finite number > 0")
        # alpha = 0 is plain JMVAE (Suzuki et al. 2016, Sec. 3.1), a model of its own
        need(
            _is_float(self.alpha) and math.isfinite(self.alpha) and self.alpha >= 0,
            "alpha",
            "a finite number >= 0 (0: plain JMVAE)",
        )
        need(_is_float(self.learning_rate) and 0 < self.learning_rate < math.inf, "learning_rate", "a number > 0")
        for name in ("epochs", "batch_size", "latent_dim", "keep_checkpoints"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("seed", "pair_seed", "validation", "tensorboard_images"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an integer >= 0")
        for name, example in (
            ("hidden_dims", "512,512"),
            ("conv_widths", "32,64,128,256"),
            ("disc_widths", "32,64,128"),
            ("disc_hidden_dims", "128,128"),
        ):
            widths = getattr(self, name)
            need(
                len(widths) >= 1 and all(_is_int(h) and h >= 1 for h in widths),
                name,
                f"one or more integers >= 1, e.g. {example}",
            )
        need(
            all(_is_int(h) and h >= 1 for h in self.decoder_hidden_dims),
            "decoder_hidden_dims",
            "empty (the mirror of hidden_dims) or integers >= 1, e.g. 512,512,512",
        )
        need(self.activation in ACTIVATIONS, "activation", ", ".join(ACTIVATIONS))
        need(bool(self.workdir), "workdir", "a directory path")
        DATASETS[self.dataset].validate(self)  # the data set's own settings (contract.DatasetSpec.check)
        names = [m.name for m in DATASETS[self.dataset].modalities(self)]
        need(
            self.likelihood_weights == ()
            or (
                len(self.likelihood_weights) == len(names)
                and all(_is_float(v) and math.isfinite(v) and v >= 0 for v in self.likelihood_weights)
            ),
            "likelihood_weights",
            f"empty (all 1) or {len(names)} finite numbers >= 0, one per modality {','.join(names)}",
        )
        need(_is_int(self.num_samples) and self.num_samples >= 1, "num_samples", "an integer >= 1")
        low = 0 if self.model == "mvae" else 1  # MVAE with 2 modalities: its joint and unimodal ELBOs are every subset
        need(
            _is_int(self.num_subsets) and self.num_subsets >= low,
            "num_subsets",
            "an integer >= 1 (mvae: >= 0, 0 = the joint and unimodal ELBOs only)",
        )
        for name in ("warmup_epochs", "kl_warmup_epochs", "adv_warmup_epochs"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an integer >= 0")
        need(isinstance(self.adversarial, bool), "adversarial", "true or false")
        for name, allowed in (
            ("subset_sampling", SUBSET_SAMPLINGS),
            ("subset_objective", SUBSET_OBJECTIVES),
            ("subset_targets", SUBSET_TARGETS),
            ("fusion", FUSIONS),
        ):
            need(getattr(self, name) in allowed, name, ", ".join(allowed))
        for name in ("unimodal_weight", "subset_kl_weight"):
            value = getattr(self, name)
            need(_is_float(value) and math.isfinite(value) and value >= 0, name, "a finite number >= 0")
        need(isinstance(self.freeze_encoder, bool), "freeze_encoder", "true or false")
        need(
            _is_float(self.modality_dropout) and 0 <= self.modality_dropout < 1,
            "modality_dropout",
            "a number >= 0 and < 1",
        )
        need(
            self.model != "pemvae" or self.subset_sampling != "all" or self.num_subsets == 1,
            "num_subsets",
            "1 with subset_sampling=all (every proper subset is trained each step)",
        )
        need(
            self.subset_objective != "elbo" or self.subset_kl_weight == 1.0,
            "subset_kl_weight",
            "the default with subset_objective=elbo, which has no KL term",
        )
        need(
            self.subset_objective != "kl" or self.subset_kl_weight > 0,
            "subset_kl_weight",
            "a number > 0 with subset_objective=kl, whose only term it weights",
        )
        need(self.disc_network in DISC_NETWORKS, "disc_network", ", ".join(DISC_NETWORKS))
        need(self.precision in PRECISIONS, "precision", ", ".join(PRECISIONS))
        need(_is_int(self.nan_rollbacks) and self.nan_rollbacks >= 0, "nan_rollbacks", "an integer >= 0")
        need(
            _is_float(self.nan_lr_factor) and 0 < self.nan_lr_factor < 1,
            "nan_lr_factor",
            "a number strictly between 0 and 1",
        )
        for name in ("adv_weight", "r1_weight"):
            value = getattr(self, name)
            need(_is_float(value) and math.isfinite(value) and value >= 0, name, "a finite number >= 0")
        need(
            _is_float(self.disc_learning_rate) and 0 < self.disc_learning_rate < math.inf,
            "disc_learning_rate",
            "a number > 0",
        )
        if not scopes:
            return self
        defaults = Config()
        for scope, options in (("model", model_options()), ("dataset", dataset_options())):
            for name, owners in options.items():
                if getattr(self, scope) not in owners and (
                    name in given or getattr(self, name) != getattr(defaults, name)
                ):
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} applies to {scope} {_either(owners)} only, "
                        f"not to {scope}={getattr(self, scope)!r}; leave it out"
                    )
        if not self.adversarial:
            for name in ADVERSARIAL_OPTIONS:
                if name in given or getattr(self, name) != getattr(defaults, name):
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} applies to adversarial training only; "
                        "add --adversarial or leave it out"
                    )
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["workdir"] = None if self.workdir is None else str.__str__(self.workdir)  # a plain str in JSON
        for name in _TUPLES:
            d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """The Config of a saved dict; a pemvae run saved before an option existed gets the value it trained with."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        if d.get("model") == "pemvae":
            d = {**{k: v for k, v in _PEMVAE_BEFORE_OPTIONS.items() if k not in d}, **d}
        if d.get("adversarial") and "disc_network" not in d:  # saved before D followed the modality: conv for all
            d = {**d, "disc_network": "conv"}
        return cls(**d)

    def likelihood_weight(self, names) -> dict[str, float]:
        """{modality: weight of its log-likelihood}: ``likelihood_weights`` in the order of ``names``, or all 1."""
        weights = self.likelihood_weights or (1.0,) * len(names)
        if len(weights) != len(names):
            raise ValueError(
                f"likelihood_weights={self.likelihood_weights!r} needs one weight per modality {tuple(names)}"
            )
        return {n: float(w) for n, w in zip(names, weights)}

    def differences(self, other: Config, ignore=RESUMABLE) -> dict[str, tuple[Any, Any]]:
        """{field: (self's value, other's value)} for fields that differ, outside ``ignore``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}


# What pemvae did before these options existed (docs/PEMVAE.md chose today's defaults on validation):
# a config.json written then lacks them, and resumes or evaluates as it was trained.
_PEMVAE_BEFORE_OPTIONS = {"subset_sampling": "random", "unimodal_weight": 1.0}

_TUPLES = (
    "hidden_dims",
    "decoder_hidden_dims",
    "likelihood_weights",
    "attributes",
    "conv_widths",
    "disc_widths",
    "disc_hidden_dims",
)


class _DerivedWorkdir(str):
    """A workdir derived from the model and beta (``default_workdir``), not given: derived again on replace."""


def default_workdir(model: str, beta: float) -> str:
    """runs/<model>_beta<beta>, e.g. runs/jmvae_beta2.0."""
    return _DerivedWorkdir(os.path.join("runs", f"{model}_beta{float(beta)}"))


def save_config(config: Config, workdir: str | os.PathLike) -> Path:
    """Write workdir/config.json atomically (a temporary file, then rename)."""
    path = Path(workdir) / CONFIG_FILE
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def load_config(workdir: str | os.PathLike) -> Config:
    """The Config saved in workdir/config.json, checked like train.py's flags.

    FileNotFoundError naming the path if absent; ValueError naming the file, the key and what is allowed if it
    is not JSON, holds a value of the wrong type (``"hidden_dims": 64``) or a value out of range.
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {workdir}: is it a workdir written by train.py?")
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it, or train a new run in another --workdir")
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a JSON {type(saved).__name__}, not an object of settings")
    try:
        for key, value in saved.items():
            _check_type(key, value)
        return Config.from_dict(saved).validate(scopes=False)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# What a config.json value must be, by the field's annotation (JSON has lists where Config has tuples).
_JSON_TYPES = {
    "int": ("an integer", lambda v: _is_int(v)),
    "float": ("a number", lambda v: _is_float(v)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "str | None": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "tuple[int, ...]": ("a list of integers, e.g. [512, 512]", lambda v: _list_of(v, _is_int)),
    "tuple[float, ...]": ("a list of numbers, e.g. [1.0, 1.0]", lambda v: _list_of(v, _is_float)),
    "tuple[str, ...]": ('a list of strings, e.g. ["Male"]', lambda v: _list_of(v, lambda x: isinstance(x, str))),
}


def _list_of(value, ok) -> bool:
    return isinstance(value, list) and all(ok(x) for x in value)


def _check_type(key: str, value) -> None:
    """ValueError naming ``key`` if its saved ``value`` is not of its field's type (unknown keys: from_dict)."""
    field = {f.name: f for f in dataclasses.fields(Config)}.get(key)
    if field is None or field.type not in _JSON_TYPES:
        return
    allowed, ok = _JSON_TYPES[field.type]
    if not ok(value):
        raise ValueError(f"{key}={json.dumps(value)} is invalid; allowed: {allowed}")


def _either(names) -> str:
    """ "a", "a or b", "a, b or c"."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
