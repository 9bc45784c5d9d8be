"""One frozen dataclass holds every setting of a run; it is saved as JSON beside the checkpoints.

Its fields come from the option blocks (``mvae_jax.options``): the run's own here, and those each model, data
set and adversarial training declare beside the code that reads them."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from mvae_jax import missing, tracking
from mvae_jax import options as opt
from mvae_jax.files import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from mvae_jax.options import Option

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"  # one JSON line per epoch: the mean loss terms, time and samples/s

PRECISIONS = ("fp32", "bf16")
ACTIVATIONS = ("relu", "swish")  # of the MLPs (mvae_jax.networks.ACTIVATIONS)
OPTIMIZERS = ("adam", "amsgrad")  # mvae_jax.training.state.make_optimizer


def _registry(name: str, default: str, help: str) -> Option:
    """``model`` or ``dataset``: a name in its registry (which Config.validate checks, the registry being open)."""
    return Option(name, "str", default, help, "", lambda v: isinstance(v, str) and bool(v))


RUN_OPTIONS = (
    _registry("model", "jmvae", "model to train"),
    _registry("dataset", "trimodal", "paired data set"),
    Option(
        "plugins",
        "strs",
        (),
        "your own modules, comma separated import paths, imported first: they register data sets, models, "
        "scorers or eval sections (mvae_jax.plugins); saved in config.json, so that resuming, restore_model and "
        "eval.py import them too",
        "import paths of Python modules, e.g. my_lab.halves",
        lambda v: all(isinstance(n, str) and n.strip() for n in v),
        empty="none",
        resumable=True,
    ),
    opt.number(
        "beta",
        1.0,
        "weight of KL(q(z|all) || p(z)), the paper's Eq. (1); several, comma separated, train a sweep (one run per "
        "beta, one compiled program)",
        strict=True,
    ),
    opt.integer("epochs", 20, "train until this many epochs are done (counting resumed ones)", 1, resumable=True),
    opt.integer("batch_size", 128, "examples per step (a multiple of the device count)", 1),
    opt.integer(
        "train_examples",
        0,
        "train on the first N training examples only (after the validation hold-out, in the data set's fixed "
        "order: a reduced budget); the validation split, the test split, the scorers and the latent probe are "
        "unchanged; 0 = all",
        0,
    ),
    *missing.OPTIONS,
    opt.number("learning_rate", 1e-3, "the optimizer's learning rate", strict=True, allowed="a number > 0"),
    opt.choice(
        "optimizer",
        "adam",
        OPTIMIZERS,
        "adam, or amsgrad (Reddi et al. 2018) as PyTorch's Adam(amsgrad=True) computes it: what the MMVAE+ and "
        "CMVAE authors train with",
    ),
    opt.integer("latent_dim", 20, "size of z", 1),
    opt.widths("hidden_dims", (512, 512), "widths of the hidden layers of every MLP, comma separated", "512,512"),
    opt.widths(
        "decoder_hidden_dims",
        (),
        "widths of the hidden layers of the MLP decoders, comma separated (e.g. 512,512,512, MVAE's 3-layer decoders)",
        "512,512,512",
        may_be_empty="the mirror of hidden_dims",
    ),
    opt.choice("activation", "relu", ACTIVATIONS, "nonlinearity of every MLP: relu, or swish = x sigmoid(x) (MVAE's)"),
    opt.integer(
        "seed",
        0,
        "seed of initialisation, noise and batch order; several, comma separated, train a sweep (one run per seed, "
        "one compiled program)",
    ),
    opt.integer("pair_seed", 0, "seed of the MNIST / Fashion-MNIST pairing"),
    Option(
        "data_dir",
        "path",
        None,
        "folder with the data set's files (mnist/ and fashion_mnist/ IDX files, celeba/, polymnist/)",
        empty="tensorflow-datasets",
        resumable=True,
    ),
    Option(
        "workdir",
        "path",
        None,
        "where config, metrics and checkpoints go",
        "a directory path",
        lambda v: bool(v),
        empty="runs/<model>_beta<beta>",
        resumable=True,
    ),
    opt.integer("keep_checkpoints", 3, "how many of the latest epoch checkpoints to keep", 1, resumable=True),
    Option(
        "tracker",
        "strs",
        ("tensorboard",),
        "where the config, each epoch's metrics and eval.py's results go besides the workdir's files, comma "
        "separated: tensorboard (event files in the workdir), mlflow (MLFLOW_TRACKING_URI; the mlflow extra), "
        "wandb (WANDB_MODE=offline writes under the workdir; the wandb extra), or none",
        "tensorboard, mlflow, wandb (comma separated, each once), or none",
        tracking.allowed,
        resumable=True,
    ),
    Option(
        "tracker_project",
        "str",
        "mvae_jax",
        "the MLflow experiment and the W&B project the run is logged to",
        "a non-empty name",
        lambda v: isinstance(v, str) and bool(v.strip()),
        resumable=True,
    ),
    opt.integer(
        "tensorboard_images",
        5,
        "every N epochs the trackers also get a grid of cross-modal samples (0: none)",
        resumable=True,
    ),
    opt.switch("adversarial", "add a discriminator per image modality and its non-saturating GAN loss (VAE-GAN)"),
    opt.choice(
        "precision",
        "fp32",
        PRECISIONS,
        "bf16: matmuls and convolutions in bfloat16 (for GPUs and TPUs), params, optimizer and losses in float32; "
        "may change when resuming",
        resumable=True,
    ),
    opt.integer(
        "nan_rollbacks",
        0,
        "on a non-finite loss or parameter, roll back to the last good checkpoint and multiply the learning rates "
        "by --nan_lr_factor, at most this many times per launch; 0 = stop with an error",
        resumable=True,
    ),
    Option(
        "nan_lr_factor",
        "float",
        0.5,
        "what each NaN rollback multiplies the learning rates by (saved in config.json)",
        "a number strictly between 0 and 1",
        lambda v: opt.is_number(v) and 0 < v < 1,
        resumable=True,
    ),
)
"""The run's own settings, read whatever the model and data set."""


def blocks() -> dict[str, dict[str, tuple[Option, ...]]]:
    """{scope: {owner: its options}}: the run's, the models', the data sets' and adversarial training's."""
    from mvae_jax import adversarial
    from mvae_jax.data import DATASETS
    from mvae_jax.models import OPTIONS

    return {
        "run": {"run": RUN_OPTIONS},
        "model": dict(OPTIONS),
        "dataset": {name: spec.options for name, spec in DATASETS.items()},
        "adversarial": {"adversarial": adversarial.OPTIONS},
    }


def all_options() -> dict[str, Option]:
    """{name: Option} of every setting, in the order of Config's fields."""
    merged: dict[str, Option] = {}
    for scope, owned in blocks().items():
        for name, option in opt.merge(owned, scope).items():
            if name in merged and merged[name] is not option:
                raise ValueError(f"option {name!r} is declared by the {scope} block and by another block")
            merged[name] = option
    return merged


def readers(name: str) -> tuple[str, ...]:
    """The models, data sets or ``("adversarial",)`` that read option ``name``; () for the run's own."""
    for scope, owned in blocks().items():
        if scope != "run" and name in (found := opt.owners(owned)):
            return found[name]
    return ()


def help_line(name: str) -> str:
    """The option's help, prefixed with what reads it ("pemvae: ...") and followed by its default."""
    option = OPTIONS[name]
    who = readers(name)
    shown = option.shown_default()
    return (f"{', '.join(who)}: " if who else "") + option.help + (f" (default: {shown})" if shown else "")


def dataset_options() -> dict[str, tuple[str, ...]]:
    """{option: the data sets that read it}, from the data sets' contracts (``DatasetSpec.options``)."""
    return opt.owners(blocks()["dataset"])


class _Settings:
    """The methods of Config (whose fields come from the option blocks: ``all_options``)."""

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

        Each option's own check (its Option), then the data set's and the model's checks of settings that
        must agree with each other, then the scopes.

        ``given``: the names of the settings the user gave (train.py's flags): one that the model, the data
        set or non-adversarial training does not read is refused even at its default value. Without it,
        only settings that differ from their defaults can be caught. ``scopes=False`` (a saved config.json) skips
        that check: a run saves every field, some changed by training itself (a NaN rollback lowers
        ``disc_learning_rate`` of a run without a discriminator too).
        """
        given = frozenset(given or ())
        from mvae_jax import plugins
        from mvae_jax.data import DATASETS
        from mvae_jax.models import CHECKS, MODELS

        plugins.load(self.plugins)  # before the registries are asked: they may hold its model and data set

        for name, registry in (("model", MODELS), ("dataset", DATASETS)):
            if getattr(self, name) not in registry:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: {', '.join(sorted(registry))}")
        for option in OPTIONS.values():
            error = option.error(getattr(self, option.name))
            if error:
                raise ValueError(error)
        DATASETS[self.dataset].validate(self)  # the data set's own settings (contract.DatasetSpec.check)
        names = [m.name for m in DATASETS[self.dataset].modalities(self)]
        if self.likelihood_weights and len(self.likelihood_weights) != len(names):
            raise ValueError(
                f"likelihood_weights={self.likelihood_weights!r} is invalid; allowed: empty (all 1) or "
                f"{len(names)} finite numbers >= 0, one per modality {','.join(names)}"
            )
        if self.model in CHECKS:
            CHECKS[self.model](self)
        self._check_missing(names)
        if not scopes:
            return self
        defaults = Config()
        for scope, owned in (("model", blocks()["model"]), ("dataset", blocks()["dataset"])):
            for name, owners in opt.owners(owned).items():
                if getattr(self, scope) not in owners and (
                    name in given or getattr(self, name) != getattr(defaults, name)
                ):
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} applies to {scope} {_either(owners)} only, "
                        f"not to {scope}={getattr(self, scope)!r}; leave it out"
                    )
        if not self.adversarial:
            for name in opt.owners(blocks()["adversarial"]):
                if name in given or getattr(self, name) != getattr(defaults, name):
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} applies to adversarial training only; "
                        "add --adversarial or leave it out"
                    )
        return self

    def _check_missing(self, names) -> None:
        """``missing`` against the data set's modalities, and the model's acceptance of incomplete examples."""
        from mvae_jax.models import INCOMPLETE

        rates = missing.parse(self.missing, names)
        if not rates:
            for name, default in (("drop_incomplete", False), ("missing_eval", False), ("missing_seed", 0)):
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} applies with --missing only (missing={self.missing!r} "
                        "leaves every example complete); leave it out"
                    )
            return
        if not self.drop_incomplete and self.model not in INCOMPLETE:
            raise ValueError(
                f"model={self.model!r} cannot train on incomplete data (missing={self.missing!r}): its objective "
                f"needs every modality at once. Models that can: {', '.join(INCOMPLETE)}; or add "
                "--drop_incomplete to train on the complete examples only"
            )
        if self.adversarial:
            raise ValueError(
                f"missing={self.missing!r} with --adversarial: the discriminators' real images would include "
                "the erased ones; train adversarially on complete data"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["workdir"] = None if self.workdir is None else str.__str__(self.workdir)  # a plain str in JSON
        for name in _TUPLES:
            d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """The Config of a saved dict. A setting it lacks takes the value that the run trained with: the
        option's ``legacy`` value where its block is in use (the model chosen, adversarial training on),
        else its default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        owned = blocks()
        in_use = [
            *owned["model"].get(d.get("model", "jmvae"), ()),
            *owned["dataset"].get(d.get("dataset", "trimodal"), ()),
            *(owned["adversarial"]["adversarial"] if d.get("adversarial") else ()),
        ]
        legacy = {o.name: o.legacy for o in in_use if o.legacy is not opt.NO_LEGACY and o.name not in d}
        return cls(**{**legacy, **d})

    def likelihood_weight(self, names) -> dict[str, float]:
        """{modality: weight of its log-likelihood}: ``likelihood_weights`` in the order of ``names``, or all 1."""
        weights = self.likelihood_weights or (1.0,) * len(names)
        if len(weights) != len(names):
            raise ValueError(
                f"likelihood_weights={self.likelihood_weights!r} needs one weight per modality {tuple(names)}"
            )
        return {n: float(w) for n, w in zip(names, weights)}

    def differences(self, other: Config, ignore=None) -> dict[str, tuple[Any, Any]]:
        """{field: (self's value, other's value)} for fields that differ, outside ``ignore`` (default: the
        settings that may change on resume, ``RESUMABLE``)."""
        ignore = RESUMABLE if ignore is None else ignore
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}


OPTIONS = all_options()
"""{name: Option} of every setting (the fields of Config, in order)."""

RESUMABLE = frozenset(name for name, option in OPTIONS.items() if option.resumable)
"""Settings that may change when a run is resumed: everything else defines the model, its data or its
optimisation, and must match the saved run."""

_TUPLES = tuple(name for name, option in OPTIONS.items() if option.kind in ("ints", "floats", "strs"))

Config = dataclasses.make_dataclass(
    "Config",
    [(name, option.annotation, dataclasses.field(default=option.default)) for name, option in OPTIONS.items()],
    bases=(_Settings,),
    frozen=True,
)
Config.__module__ = __name__  # for pickle and reprs (make_dataclass's module= is Python >= 3.12)
Config.__doc__ = """Every setting of one training run: the run's own (``RUN_OPTIONS``), each model's, each data
set's and adversarial training's (their blocks: ``blocks()``), one field each.

The defaults train JMVAE-kl on the trimodal MNIST / Fashion-MNIST / label set with the MLP widths and latent
size of Suzuki et al. 2016 (Sec. 4)."""


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
            check_type(key, value)
        from mvae_jax import plugins

        plugins.load(saved.get("plugins", ()))  # before from_dict: the run's model and data set may be theirs
        return Config.from_dict(saved).validate(scopes=False)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# What a config.json value must be, by the option's kind (JSON has lists where Config has tuples).
_JSON_TYPES = {
    "int": ("an integer", lambda v: _is_int(v)),
    "float": ("a number", lambda v: _is_float(v)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "path": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "ints": ("a list of integers, e.g. [512, 512]", lambda v: _list_of(v, _is_int)),
    "floats": ("a list of numbers, e.g. [1.0, 1.0]", lambda v: _list_of(v, _is_float)),
    "strs": ('a list of strings, e.g. ["Male"]', lambda v: _list_of(v, lambda x: isinstance(x, str))),
}


def _list_of(value, ok) -> bool:
    return isinstance(value, list) and all(ok(x) for x in value)


def check_type(key: str, value) -> None:
    """ValueError naming ``key`` if its saved ``value`` is not of its option's kind (unknown keys: from_dict)."""
    option = OPTIONS.get(key)
    if option is None:
        return
    allowed, ok = _JSON_TYPES[option.kind]
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
