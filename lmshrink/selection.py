"""A candidate portfolio: removal sets from several sources, compared on a validation slice, the lowest loss kept.

Sources are named by spec strings, ``SOURCE[:K]``:

- an objective (``fisher``, ``pairs``, ``block-influence``, ...) or a preset of one (``fisher-fo``: fisher with the
  first-order term): its K lowest-energy states under the removal constraints, from the run's solver;
- a removal method (``sleb``, ``angular``, ``block-influence-iterative``, ``surrogate``, ...): its K best sets.

Every candidate keeps the sources that proposed it and its energy under each objective that was built, and is
measured on validation windows disjoint from the text the objectives were built on (:class:`RemovalLoss`), so the
choice is not biased by an objective's own noise. The report gives each candidate's loss ± standard error and its
paired difference to the chosen one (:meth:`LossEstimate.minus`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .core.errors import LmshrinkError

#: source name → (objective, objective options) for objectives used with non-default options
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {"fisher-fo": ("fisher", {"first_order": True})}
#: how many standard errors of the paired difference make two candidates "separated"
SEPARATION = 2.0


@dataclass(frozen=True)
class SourceSpec:
    """One parsed ``SOURCE[:K]``: ``kind`` is "objective" or "method"."""

    label: str
    kind: str
    name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    k: int = 1


def parse_sources(specs: Iterable[str], default_k: int = 1) -> list[SourceSpec]:
    """Read source specs (``"fisher-fo:10"``, ``"sleb"``), checking every name against the registries."""
    from .plugins import registry

    objectives, methods = registry("objective"), registry("method")
    out: list[SourceSpec] = []
    for spec in specs:
        spec = str(spec).strip()
        if not spec:
            continue
        label, _, k_text = spec.partition(":")
        try:
            k = int(k_text) if k_text else default_k
        except ValueError:
            raise LmshrinkError(f"Candidate source {spec!r}: after ':' comes a count, e.g. fisher-fo:10.") from None
        if k < 1:
            raise LmshrinkError(f"Candidate source {spec!r}: the count must be at least 1.")
        if label in PRESETS:
            name, options = PRESETS[label]
            out.append(SourceSpec(label, "objective", name, dict(options), k))
        elif label in objectives:
            out.append(SourceSpec(label, "objective", label, {}, k))
        elif label in methods:
            out.append(SourceSpec(label, "method", label, {}, k))
        else:
            from .core.errors import did_you_mean

            known = sorted(set(objectives.names()) | set(methods.names()) | set(PRESETS))
            raise LmshrinkError(f"Unknown candidate source {label!r}.{did_you_mean(label, known)} Sources: "
                                f"{', '.join(known)}.")
    return out


@dataclass
class Candidate:
    """One removal set, who proposed it, its energies and its validation loss."""

    indices: tuple[int, ...]
    sources: list[str] = field(default_factory=list)
    energies: dict[str, float] = field(default_factory=dict)
    validation: Any = None  # LossEstimate
    error: str | None = None

    def to_dict(self, blocks: Sequence[Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"indices": list(self.indices), "sources": self.sources, "energies": self.energies,
                               "validation_loss": None, "validation_se": None, "error": self.error}
        if blocks is not None:
            out["blocks"] = [blocks[i].name for i in self.indices]
        if self.validation is not None:
            out["validation_loss"], out["validation_se"] = self.validation.mean, self.validation.se
        return out


class Portfolio:
    """Candidates from several sources, deduplicated by removal set, in the order they were first proposed."""

    def __init__(self) -> None:
        self._by_set: dict[tuple[int, ...], Candidate] = {}

    @property
    def candidates(self) -> list[Candidate]:
        return list(self._by_set.values())

    def __len__(self) -> int:
        return len(self._by_set)

    def add(self, indices: Iterable[int], source: str) -> Candidate:
        """Add a removal set proposed by ``source`` (or note the extra source of a set already in)."""
        key = tuple(sorted(int(i) for i in indices))
        cand = self._by_set.setdefault(key, Candidate(key))
        if source not in cand.sources:
            cand.sources.append(source)
        return cand

    def score(self, label: str, problem: Any) -> None:
        """Record every candidate's energy under ``problem`` (a BinaryQuadraticProblem) as ``label``."""
        import numpy as np

        if not self._by_set:
            return
        X = np.zeros((len(self._by_set), problem.num_variables), dtype=np.int8)
        for row, key in enumerate(self._by_set):
            X[row, list(key)] = 1
        for cand, e in zip(self._by_set.values(), problem.energies(X)):
            cand.energies[label] = float(e)

    def runnable(self) -> list[Candidate]:
        return [c for c in self._by_set.values() if c.error is None]

    def validate(self, meter: Any, *, progress: bool = False) -> None:
        """Measure every runnable candidate on the validation windows of ``meter`` (a RemovalLoss)."""
        runnable = self.runnable()
        if not runnable:
            raise LmshrinkError("No candidate leaves a model the architecture can run.")
        for cand, est in zip(runnable, meter.many([c.indices for c in runnable], desc="validating candidates")):
            cand.validation = est

    def best(self) -> Candidate:
        """The runnable candidate with the lowest validation loss (the first proposed among equals)."""
        measured = [c for c in self.runnable() if c.validation is not None]
        if not measured:
            raise LmshrinkError("No candidate was measured on the validation windows.")
        return min(measured, key=lambda c: c.validation.mean)

    def comparison(self) -> list[dict[str, Any]]:
        """Each measured candidate's paired difference to the best: ``delta`` ± ``se``, and ``separated``."""
        best = self.best()
        rows = []
        for c in self.runnable():
            if c.validation is None:
                continue
            d, se = c.validation.minus(best.validation)
            rows.append({"indices": list(c.indices), "delta": d, "se": se,
                         "separated": c is best or d > SEPARATION * se})
        return rows

    def separation_note(self) -> str | None:
        """A sentence when the validation slice cannot tell the best candidate from the runner-up, else None."""
        rows = sorted((r for r in self.comparison() if r["delta"] > 0 or r["indices"] != list(self.best().indices)),
                      key=lambda r: r["delta"])
        close = [r for r in rows if not r["separated"]]
        if not close:
            return None
        r = close[0]
        return (f"The validation windows cannot separate the chosen removal from {r['indices']} (loss difference "
                f"{r['delta']:.5f} ± {r['se']:.5f}, under {SEPARATION:g} standard errors): more validation tokens "
                "would make the choice surer.")
