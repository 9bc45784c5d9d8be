"""Settings declared beside the code that reads them.

Each block of a run's settings is a tuple of :class:`Option`: the run's own
(``mvae_jax.config.RUN_OPTIONS``), each model's (``OPTIONS`` in its module under
``mvae_jax.models``), each data set's (``DatasetSpec.options``) and adversarial
training's (``mvae_jax.adversarial.OPTIONS``). An option carries its default, its
help line, its check and the value a run saved before it existed trained with.
From these blocks come the fields of :class:`mvae_jax.config.Config`, train.py's
flags and help, the refusal of a flag the chosen model or data set does not read,
and the documentation site's tables of flags (``docs/hooks.py``).

An option read by several models (``likelihood_weights``) is one object that each
of their blocks names, so that its default and help exist once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Any

NO_LEGACY = object()  # the option's default is also what runs saved before it existed trained with

# The kinds of value an option holds: the Config annotation, what a config.json value must be, and how a
# flag's text is read.
KINDS = ("int", "float", "str", "bool", "path", "ints", "floats", "strs")


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of a run.

    ``check(value)`` is True when the value is allowed (or ``choices`` lists the
    allowed values), and ``allowed`` says what is: the error names both.
    ``legacy``: the value a config.json written before this option existed
    trained with; it applies where the option's block is in use (its model is
    chosen, adversarial training is on). ``empty``: how the help and the docs
    show an empty default ("all 1"). ``resumable``: it may change when a run is
    resumed. ``inference``: a model's setting that changes no parameter, only how the trained model infers
    (JNF's HMC): eval.py's ``--model_options`` may set it for one evaluation.
    """

    name: str
    kind: str
    default: Any
    help: str
    allowed: str = ""
    check: Callable[[Any], bool] | None = None
    legacy: Any = NO_LEGACY
    empty: str = ""
    resumable: bool = False
    choices: tuple[str, ...] = ()
    inference: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind={self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind in ("ints", "floats", "strs"):
            object.__setattr__(self, "default", tuple(self.default))

    @property
    def annotation(self) -> str:
        return {
            "int": "int",
            "float": "float",
            "str": "str",
            "bool": "bool",
            "path": "str | None",
            "ints": "tuple[int, ...]",
            "floats": "tuple[float, ...]",
            "strs": "tuple[str, ...]",
        }[self.kind]

    def error(self, value) -> str | None:
        """None if ``value`` is allowed, else the error naming it and what is allowed."""
        if self.choices:
            ok = value in self.choices
            allowed = self.allowed or ", ".join(self.choices)
        else:
            ok = self.check is None or _safely(self.check, value)
            allowed = self.allowed
        return None if ok else f"{self.name}={value!r} is invalid; allowed: {allowed}"

    def shown_default(self) -> str:
        """The default as the help and the docs' tables show it."""
        if isinstance(self.default, tuple):
            return ",".join(map(str, self.default)) or self.empty
        if self.default is None or self.default == "":
            return self.empty
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


def _safely(check, value) -> bool:
    try:
        return bool(check(value))
    except (TypeError, ValueError):
        return False


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# The checks most options use, with the words their errors say.


def integer(name: str, default: int, help: str, minimum: int = 0, **kw) -> Option:
    """An integer >= ``minimum`` (or what ``check`` allows, ``allowed`` saying what that is)."""
    allowed = kw.pop("allowed", f"an integer >= {minimum}")
    check = kw.pop("check", lambda v: is_int(v) and v >= minimum)
    return Option(name, "int", default, help, allowed, check, **kw)


def number(name: str, default: float, help: str, low: float = 0.0, strict: bool = False, **kw) -> Option:
    """A finite number >= ``low`` (> ``low`` with ``strict``)."""
    text = f"a finite number {'>' if strict else '>='} {low:g}"
    return Option(
        name,
        "float",
        default,
        help,
        kw.pop("allowed", text),
        lambda v: is_number(v) and math.isfinite(v) and (v > low if strict else v >= low),
        **kw,
    )


def choice(name: str, default: str, choices: Sequence[str], help: str, **kw) -> Option:
    return Option(name, "str", default, help, choices=tuple(choices), **kw)


def switch(name: str, help: str, **kw) -> Option:
    """A boolean flag, off by default (``--name`` turns it on)."""
    return Option(name, "bool", False, help, "true or false", lambda v: isinstance(v, bool), **kw)


def widths(name: str, default: Sequence[int], help: str, example: str, may_be_empty: str = "", **kw) -> Option:
    """Layer widths: one or more integers >= 1 (or none, meaning ``may_be_empty``)."""
    allowed = (
        f"empty ({may_be_empty}) or integers >= 1, e.g. {example}"
        if may_be_empty
        else f"one or more integers >= 1, e.g. {example}"
    )
    return Option(
        name,
        "ints",
        tuple(default),
        help,
        allowed,
        lambda v: (bool(v) or bool(may_be_empty)) and all(is_int(h) and h >= 1 for h in v),
        empty=may_be_empty,
        **kw,
    )


def merge(blocks: dict[str, Sequence[Option]], what: str) -> dict[str, Option]:
    """{name: option} over the blocks; ValueError if two blocks declare different options of one name."""
    merged: dict[str, Option] = {}
    for owner, block in blocks.items():
        for option in _entries(owner, block):
            other = merged.setdefault(option.name, option)
            if other is not option and other != option:
                raise ValueError(
                    f"{what} {owner} declares its own {option.name!r}, unlike another {what}'s: a shared option "
                    "is one Option object that both blocks name"
                )
    return merged


def _entries(owner: str, block: Sequence[Option]):
    for option in block:
        if not isinstance(option, Option):
            raise TypeError(
                f"{owner}'s OPTIONS holds {option!r}, not an options.Option: declare each option it reads "
                "(a shared one is the object of models/base.py, e.g. base.KL_WARMUP_EPOCHS)"
            )
        yield option


def owners(blocks: dict[str, Sequence[Option]]) -> dict[str, tuple[str, ...]]:
    """{option name: the blocks that read it}."""
    found: dict[str, tuple[str, ...]] = {}
    for owner, block in blocks.items():
        for option in _entries(owner, block):
            found[option.name] = (*found.get(option.name, ()), owner)
    return found
