"""Candidate removals and the portfolio they are chosen from.

A :class:`Candidate` is one proposed removal set with everything known of it: the sources that proposed it (an
objective + solver's k-th lowest state, a removal method's pick, a search's measured state), its energy under each
objective that was built, and its loss on validation windows. A :class:`Portfolio` pools candidates from several
sources (one entry per removal set, every source kept), measures them on validation windows disjoint from the text
the objectives were built on (:class:`~lmshrink.evaluate.measured.RemovalLoss`), so the choice is not biased by an
objective's own noise, and keeps the lowest. The report gives each candidate's loss ± standard error and its paired
difference to the chosen one (:meth:`~lmshrink.evaluate.measured.LossEstimate.minus`).

Sources are named on the command line by spec strings ``SOURCE[:K]`` (:func:`parse_sources`): an objective (or a
preset of one: ``fisher-fo`` is fisher with the first-order term) gives its K lowest states from the run's solver;
a removal method its K best sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .core.errors import LmshrinkError, did_you_mean
from .plugins import registry

#: source name → (objective, objective options) for objectives used with non-default options
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {"fisher-fo": ("fisher", {"first_order": True})}
#: how many standard errors of the paired difference make two candidates "separated"
SEPARATION = 2.0


def source_label(objective: str, options: dict[str, Any]) -> str:
    """The preset name when ``objective`` with ``options`` is one (``fisher`` + first_order → ``fisher-fo``)."""
    for label, (name, preset) in PRESETS.items():
        if name == objective and all(options.get(k) == v for k, v in preset.items()):
            return label
    return objective


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
            known = sorted(set(objectives.names()) | set(methods.names()) | set(PRESETS))
            raise LmshrinkError(f"Unknown candidate source {label!r}.{did_you_mean(label, known)} Sources: "
                                f"{', '.join(known)}.")
    return out


@dataclass
class Candidate:
    """One proposed removal: the block indices and names, who proposed it, and what is known of it."""

    indices: list[int]
    blocks: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: the first source's k for this set (its k-th lowest state), that state's energy, or a method's own score
    rank: int = 1
    energy: float | None = None
    score: float | None = None
    #: the energy under every objective that scored the portfolio
    energies: dict[str, float] = field(default_factory=dict)
    #: the measured loss (a LossEstimate) once validated, and the one measured before healing when the comparison
    #: is made after it
    validation: Any = None
    unhealed: Any = None
    #: why the architecture cannot run it
    error: str | None = None

    @property
    def source(self) -> str:
        return self.sources[0] if self.sources else ""

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(sorted(self.indices))

    @property
    def loss(self) -> float | None:
        return None if self.validation is None else self.validation.mean

    def to_dict(self) -> dict[str, Any]:
        out = {"rank": self.rank, "source": self.source, "sources": self.sources, "indices": self.indices,
               "blocks": self.blocks, "energy": self.energy, "score": self.score, "energies": self.energies,
               "loss": self.loss, "loss_se": None, "error": self.error}
        if self.validation is not None:
            out["loss_se"] = self.validation.se
        if self.unhealed is not None:
            out["loss_unhealed"], out["loss_unhealed_se"] = self.unhealed.mean, self.unhealed.se
        return out


class Portfolio:
    """Candidates pooled from several sources: one per removal set, in the order first proposed."""

    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        self._by_set: dict[tuple[int, ...], Candidate] = {}
        for c in candidates:
            self.add(c)

    @property
    def candidates(self) -> list[Candidate]:
        return list(self._by_set.values())

    def __len__(self) -> int:
        return len(self._by_set)

    def add(self, candidate: Candidate | Iterable[int], source: str | None = None) -> Candidate:
        """Add a candidate (or a bare index set proposed by ``source``); a set already in gains the sources."""
        if not isinstance(candidate, Candidate):
            candidate = Candidate(sorted(int(i) for i in candidate), sources=[source] if source else [])
        held = self._by_set.setdefault(candidate.key, candidate)
        if held is not candidate:
            held.sources += [s for s in candidate.sources if s not in held.sources]
            held.energies.update({k: v for k, v in candidate.energies.items() if k not in held.energies})
        return held

    def score(self, label: str, problem: Any) -> None:
        """Record every candidate's energy under ``problem`` (a BinaryQuadraticProblem) as ``label``."""
        if not self._by_set:
            return
        X = np.zeros((len(self._by_set), problem.num_variables), dtype=np.int8)
        for row, key in enumerate(self._by_set):
            X[row, list(key)] = 1
        for cand, e in zip(self._by_set.values(), problem.energies(X)):
            cand.energies[label] = float(e)

    def runnable(self) -> list[Candidate]:
        return [c for c in self._by_set.values() if c.error is None]

    def validate(self, measure: Any, *, progress: bool = False) -> None:
        """Measure every runnable candidate: ``measure`` is a RemovalLoss (its ``many`` shows progress) or any
        callable from an index list to a LossEstimate."""
        runnable = self.runnable()
        if not runnable:
            raise LmshrinkError("No candidate leaves a model the architecture can run.")
        if hasattr(measure, "many"):
            estimates = measure.many([c.indices for c in runnable], desc="validating candidates")
        else:
            estimates = [measure(c.indices) for c in tqdm(runnable, desc="validating candidates",
                                                          disable=not progress, leave=False)]
        for cand, est in zip(runnable, estimates):
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
            rows.append({"indices": c.indices, "delta": d, "se": se, "best": c is best,
                         "separated": c is best or d > SEPARATION * se})
        return rows

    def separation_note(self) -> str | None:
        """A sentence when the validation windows cannot tell the best candidate from the runner-up, else None."""
        close = sorted((r for r in self.comparison() if not r["separated"]), key=lambda r: r["delta"])
        if not close:
            return None
        r = close[0]
        return (f"The validation windows cannot separate the chosen removal from {r['indices']} (loss difference "
                f"{r['delta']:.5f} ± {r['se']:.5f}, under {SEPARATION:g} standard errors): more validation windows "
                "would make the choice surer.")
