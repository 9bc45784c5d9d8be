"""What a data set declares, in one typed place: the contract that training and evaluation read.

Every data set module of ``mvae_jax.data`` defines one ``DatasetSpec`` named
``SPEC``; ``mvae_jax.data.DATASETS`` maps names to them. Everything that
evaluates (coherence, latent accuracy, FID, tSNE colours, figures, the report
tables) asks the spec, never a modality's likelihood or a hard-coded name:

- ``modalities(config)``: the modalities of a run (they may depend on its settings);
- ``labels``: where the class of an example comes from: a modality (the argmax
  of a one-hot ``"w"``), the files (``FROM_FILES``: PolyMNIST's digit, kept
  beside the modalities in ``Dataset.class_labels``), or nowhere (None);
- ``scorers``: {modality: ``Scorer``}, the classifier that tells the class of
  that modality's generated values, and how it is obtained (it may name
  modalities that a run lacks: PolyMNIST declares m0..m9, a run has M of them),
  or (``Scorer.targets``) the attributes it carries (CelebA's faces);
- ``splits``: ``"held_out"`` (validation = ``--validation=N`` training pairs held
  out by ``hold_out``) or ``"official"`` (the data set's own partition);
- ``query_modality`` and ``query_vocabulary``: what ``eval.py --query`` names;
- ``class_names``: by class, for figures;
- ``options``: the settings (``mvae_jax.options.Option``) that only this data set reads;
  one several data sets read is one object, which a spec may name (``"validation"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

from mvae_jax import options as opt

FROM_FILES = "files"
"""``DatasetSpec.labels`` of a data set whose classes come with its files, not as a modality."""

OWN_SPLIT = "own"
"""``Scorer.source`` of a CNN trained on the data set's own training split (and cached)."""

SPLIT_POLICIES = ("held_out", "official")

VALIDATION = opt.integer(
    "validation",
    0,
    "training pairs held out as the validation split (the last N of a fixed permutation, the same for every run), "
    "scored after every epoch (validation_<term> in metrics.jsonl) and the best epoch kept in best_checkpoint/ "
    "(eval.py --step=best); eval.py --split=validation scores them; 0 = none",
)
"""The option of every data set whose ``splits`` is ``"held_out"``."""

SHARED_OPTIONS = {VALIDATION.name: VALIDATION}
"""Options a data set may name instead of declaring (``options=("validation",)``)."""


@dataclasses.dataclass(frozen=True)
class Scorer:
    """How the class of one modality's values is told.

    ``source``: the name of an image classification set (``"mnist"``,
    ``"fashion_mnist"``): its CNN, shipped in ``mvae_jax/weights`` or trained on
    that set once and cached; or ``OWN_SPLIT``: a CNN trained on this data set's
    own training split of the modality against its class labels, shipped where
    ``mvae_jax/weights`` has one for the same data (by checksum), else trained
    once and cached.

    ``targets``: an attribute scorer instead (``mvae_jax.attributes``): a
    multi-label CNN trained on the data set's own training split of this image
    modality against the binary entries of the vector modality ``targets``
    (CelebA: ``image`` for its ``attributes``), trained once and cached; it
    scores ``--query`` (how often generated images carry the queried
    attributes) and gives FID its features where no class scorer does. It must
    be ``OWN_SPLIT`` and its targets the data set's query modality.
    """

    source: str
    targets: str | None = None

    @property
    def own(self) -> bool:
        return self.source == OWN_SPLIT


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetSpec:
    """A data set's contract (module docstring); ``load(config) -> Dataset``."""

    name: str
    modalities: Callable[[Any], tuple]
    load: Callable[[Any], Any]
    labels: str | None = None
    scorers: Mapping[str, Scorer] = dataclasses.field(default_factory=dict)
    splits: str = "held_out"
    query_modality: str | None = None
    query_vocabulary: Callable[[Any], tuple] | None = None
    class_names: tuple[str, ...] | None = None
    options: tuple[opt.Option, ...] = ()
    check: Callable[[Any], None] | None = None

    def __post_init__(self):
        for option in self.options:
            if isinstance(option, str) and option not in SHARED_OPTIONS:
                raise ValueError(
                    f"{self.name}: options names {option!r}, not a shared option ({', '.join(SHARED_OPTIONS)}); "
                    "declare its own as a mvae_jax.options.Option"
                )
        resolved = tuple(SHARED_OPTIONS[o] if isinstance(o, str) else o for o in self.options)
        object.__setattr__(self, "options", resolved)
        if self.splits not in SPLIT_POLICIES:
            raise ValueError(f"{self.name}: splits={self.splits!r} is invalid; allowed: {', '.join(SPLIT_POLICIES)}")
        if self.query_modality is not None and self.query_vocabulary is None:
            raise ValueError(f"{self.name}: a query_modality needs its query_vocabulary(config)")
        for modality, scorer in self.scorers.items():
            if scorer.targets is not None and (not scorer.own or scorer.targets != self.query_modality):
                raise ValueError(
                    f"{self.name}: the scorer of {modality} predicts {scorer.targets!r}; an attribute scorer must "
                    f"be Scorer(OWN_SPLIT, targets=<the query modality, {self.query_modality!r}>)"
                )

    @property
    def labelled(self) -> bool:
        """Whether its examples have classes (coherence, latent accuracy, tSNE colours need them)."""
        return self.labels is not None

    @property
    def label_modality(self) -> str | None:
        """The modality whose argmax is the class, or None (labels from files, or none)."""
        return self.labels if self.labels not in (None, FROM_FILES) else None

    def scorers_of(self, names) -> dict[str, Scorer]:
        """{modality: Scorer} of the class scorers of the modalities ``names`` of a run, in their order."""
        return {n: self.scorers[n] for n in names if n in self.scorers and self.scorers[n].targets is None}

    def attribute_scorers_of(self, names) -> dict[str, Scorer]:
        """{image modality: Scorer} of the attribute scorers (``Scorer.targets``) among the modalities ``names``."""
        return {n: self.scorers[n] for n in names if n in self.scorers and self.scorers[n].targets is not None}

    def validate(self, config) -> None:
        """ValueError if the contract contradicts the modalities of ``config``, then the data set's own checks."""
        if self.check is not None:
            self.check(config)
        names = {m.name for m in self.modalities(config)}
        wrong = []
        if self.label_modality is not None and self.label_modality not in names:
            wrong.append(self.label_modality)
        if self.query_modality is not None and self.query_modality not in names:
            wrong.append(self.query_modality)
        if wrong:
            raise ValueError(
                f"data set {self.name}: its contract names {wrong}, not modalities of it ({sorted(names)})"
            )
