"""The records a run writes as ``report.json``, as dataclasses: :class:`PruneReport` (``lmshrink prune``, with its
:class:`HealingSummary`), :class:`SvdReport` (``lmshrink svd``), :class:`CompressReport` (``lmshrink compress``)
and :class:`HealReport` (``lmshrink heal``).

Each is built once by its flow, rendered by this package (report.md) and printed by the command line from its
fields. :meth:`Report.to_json` is the file's content: ``schema_version`` first, then one key per field, in field
order. A report also reads as a mapping of those keys (``report["perplexity_after"]``), for code written against
the plain dictionaries reports used to be. :func:`load_report` reads a report.json back, with or without a
``schema_version`` (files written before it existed have none).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..core.errors import LmshrinkError
from . import read_json

#: the version of the report.json layout; raised when a key changes meaning or goes away (adding one keeps it)
SCHEMA_VERSION = 1

R = TypeVar("R", bound="Report")
#: held-out perplexity on texts of other domains (``--eval-data``): text → stage ("before", "unhealed", "after") →
#: perplexity record (perplexity, nll, tokens)
OtherTextScores = dict[str, dict[str, dict[str, float]]]


@dataclass(eq=False)
class Report(Mapping[str, Any]):
    """Base of every run record: JSON conversion both ways and a read-only mapping view of :meth:`to_json`."""

    #: fields left out of the JSON while they are None (keys a run writes only when it has them)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        """What report.json holds: ``schema_version``, then every field (nested records as dictionaries)."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a report.json dictionary; keys it does not know (``schema_version`` among them) are left
        out and missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_json() == (other.to_json() if isinstance(other, Report) else dict(other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass
class HealingSummary:
    """What healing did to a pruned model: the ``steps`` run, the linear maps (one row per run of removed units),
    the distillation's record, the held-out perplexity before healing (None without evaluation) and why a step
    was skipped or a run left unhealed."""

    steps: list[str] = field(default_factory=list)
    linear: list[dict[str, Any]] | None = None
    kd: dict[str, Any] | None = None
    perplexity_unhealed: dict[str, float] | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "linear": self.linear, "kd": self.kd,
                "perplexity_unhealed": self.perplexity_unhealed, "reasons": self.reasons}


def as_healing_summary(value: HealingSummary | Mapping[str, Any] | None) -> HealingSummary | None:
    """``value`` as a :class:`HealingSummary` (a report.json dictionary is read as one)."""
    return HealingSummary(**value) if isinstance(value, Mapping) else value


@dataclass(eq=False)
class PruneReport(Report):
    """The record of ``lmshrink prune``. ``status`` is "evaluating" while the saved model is evaluated, "complete"
    after, "interrupted" when the evaluation was cut short (:meth:`record_evaluation`); ``errors`` lists the steps
    that failed (``{"stage", "error"}``)."""

    command: str = "prune"
    status: str = "evaluating"
    errors: list[dict[str, str]] = field(default_factory=list)
    model: str | None = None
    model_source: str | None = None
    architecture: str | None = None
    adapter: str | None = None
    granularity: str = "layer"
    num_blocks: int = 0
    removed: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    reranked: bool = False
    selection: dict[str, Any] = field(default_factory=dict)
    healing: HealingSummary | None = None
    perplexity_before: dict[str, float] | None = None
    perplexity_after: dict[str, float] | None = None
    parameters_before: int | None = None
    parameters_after: int | None = None
    budget: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    saved_format: str | None = None
    saved_format_reason: str | None = None
    problem: dict[str, Any] | None = None
    solver: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    lm_eval: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    other_texts: OtherTextScores | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("other_texts",)

    def __post_init__(self) -> None:
        self.healing = as_healing_summary(self.healing)

    def record_evaluation(self, evaluation: Any, timings_s: Mapping[str, float]) -> None:
        """Take the pruned model's ``evaluation`` (perplexity, lm-eval, errors, whether it finished) and the
        stage timings so far."""
        self.status = "complete" if evaluation.finished else "interrupted"
        self.errors = evaluation.errors
        self.perplexity_after = evaluation.perplexity
        self.lm_eval = evaluation.lm_eval
        self.timings_s = dict(timings_s)

    @property
    def removed_indices(self) -> list[int]:
        """The block indices removed, in order."""
        return [b["index"] for b in self.removed]


@dataclass(eq=False)
class SvdReport(Report):
    """The record of ``lmshrink svd``: the allocation's parameters (``params``), the perplexities, the whitening
    statistics, the reload check (``verify``) and one row per decomposed matrix (``per_matrix``); ``healing`` only
    when the compressed model was healed (``perplexity_after`` is then the healed model's, and
    ``healing.perplexity_unhealed`` the compressed model's before healing)."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("healing", "model_source", "other_texts")

    command: str = "svd"
    model: str | None = None
    #: the model as given (name or path; the embedded default's name): what ``lmshrink heal`` distils towards
    model_source: str | None = None
    architecture: str | None = None
    adapter: str | None = None
    ratio: float | None = None
    solver: dict[str, Any] = field(default_factory=dict)
    pivga: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    perplexity_before: dict[str, float] | None = None
    perplexity_after: dict[str, float] | None = None
    energy: float | None = None
    whitening: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] | None = None
    problem: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    per_matrix: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    healing: HealingSummary | None = None
    other_texts: OtherTextScores | None = None

    def __post_init__(self) -> None:
        self.healing = as_healing_summary(self.healing)


@dataclass(eq=False)
class CompressReport(Report):
    """The record of ``lmshrink compress``: the choice (removed branches, factored matrices), the budget
    (``params``), the measurements and the perplexities; ``verify`` only when the saved model was reloaded."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("verify", "other_texts")

    command: str = "compress"
    settings: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    removed_branches: list[str] = field(default_factory=list)
    factored: dict[str, int] = field(default_factory=dict)
    dense_matrices: list[str] = field(default_factory=list)
    estimated_loss_increase: float | None = None
    solver: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    perplexity_before: dict[str, float] | None = None
    perplexity_after: dict[str, float] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    verify: dict[str, Any] | None = None
    other_texts: OtherTextScores | None = None


@dataclass(eq=False)
class HealReport(Report):
    """The record of ``lmshrink heal``: the distillation (``kd``) and the held-out perplexity before and after."""

    command: str = "heal"
    model: str | None = None
    teacher: str | None = None
    steps: list[str] = field(default_factory=lambda: ["kd"])
    perplexity_before: dict[str, float] | None = None
    perplexity_after: dict[str, float] | None = None
    kd: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    other_texts: OtherTextScores | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("other_texts",)


#: the record class of each command
REPORTS: dict[str, type[Report]] = {"prune": PruneReport, "svd": SvdReport, "compress": CompressReport,
                                    "heal": HealReport}


def report_from_json(data: Mapping[str, Any]) -> Report:
    """The record of a report.json dictionary, by its ``command``; a newer ``schema_version`` than this version
    writes, or an unknown command, is refused."""
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise LmshrinkError(f"The report has schema version {version!r}; this lmshrink reads up to "
                            f"{SCHEMA_VERSION}.")
    kind = REPORTS.get(data.get("command"))  # type: ignore[arg-type]
    if kind is None:
        raise LmshrinkError(f"The report's command {data.get('command')!r} is none of {', '.join(REPORTS)}.")
    return kind.from_json(data)


def load_report(path: str | Path) -> Report:
    """The record in the report.json file ``path`` (written with or without ``schema_version``)."""
    data = read_json(path, "report.json")
    if not isinstance(data, Mapping):
        raise LmshrinkError(f"{str(path)!r} is not a report (a JSON object).")
    return report_from_json(data)
