"""Stage 2 of a prune run: candidate removals, each tagged with its source.

A source is an objective + solver (the problem's lowest-energy states) or a removal method (its own ranking).
Every source returns the same :class:`~lmshrink.portfolio.Candidate` records, so candidates from several sources
are pooled in one :class:`~lmshrink.portfolio.Portfolio` and chosen together (:mod:`.select`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..baselines import get_method
from ..core import BinaryQuadraticProblem, SolutionSet
from ..core.removal import with_constraints
from ..plugins import get_objective
from ..report import Timings
from ..portfolio import Candidate, parse_sources
from ..report import log as _log
from ..staging import checkpoint
from .target import Target


@dataclass
class Proposal:
    """What a source produced: the candidates, best first, and the facts behind them for the report."""

    candidates: list[Candidate]
    problem: BinaryQuadraticProblem | None = None
    solutions: SolutionSet | None = None
    #: report entries of this source (``{"solver": {...}}`` or ``{"method": {...}}``)
    facts: dict[str, Any] = field(default_factory=dict)


class CandidateSource(Protocol):
    """Anything that proposes ranked candidate removals for a model."""

    name: str

    def propose(self, inputs: Any, target: Target, *, count: int, seed: int, timings: Timings,
                progress: bool) -> Proposal:
        """Up to ``count`` candidates for ``target``, best first."""


class SolverSource:
    """Candidates from an objective's problem: a solver's ``count`` lowest-energy feasible states."""

    def __init__(self, objective: Any, objective_options: dict[str, Any], solver: Any,
                 solver_options: dict[str, Any], label: str | None = None) -> None:
        self.objective, self.objective_options = objective, objective_options
        self.solver, self.solver_options = solver, solver_options
        self.label = label or objective.name
        self.name = f"{self.label}+{solver.name}"

    def propose(self, inputs: Any, target: Target, *, count: int, seed: int, timings: Timings,
                progress: bool) -> Proposal:
        with timings("objective"):
            _log(progress, f"building the {self.objective.name} problem")
            problem = self.objective.build(inputs.model, inputs.adapter, inputs.calibration, **self.objective_options)
            problem = with_constraints(problem, target.constraints)
            problem.metadata["remove"] = {str(k) if k else "total": v if isinstance(v, int) else str(v)
                                          for k, v in target.spec.items()}
        with timings("solve"):
            _log(progress, f"solving with {self.solver.name}")
            checkpoint("solve")
            solutions = self.solver.solve(problem, num_solutions=count, seed=seed, **self.solver_options)
        candidates = [Candidate(list(s.indices), [target.blocks[i].name for i in s.indices], [self.name], r,
                                energy=s.energy) for r, s in enumerate(solutions, 1)]
        facts = {"solver": {"name": solutions.solver, "time_s": solutions.time_s, "info": solutions.info}}
        return Proposal(candidates, problem, solutions, facts)


class MethodSource:
    """Candidates from a removal method (``sleb``, ``angular``, ...), which chooses blocks itself."""

    def __init__(self, method: Any, options: dict[str, Any]) -> None:
        self.method, self.options = method, options
        self.name = f"method:{method.name}"

    def propose(self, inputs: Any, target: Target, *, count: int, seed: int, timings: Timings,
                progress: bool) -> Proposal:
        with timings("method"):
            _log(progress, f"choosing blocks with the {self.method.name} method")
            selection = self.method.select(inputs.model, inputs.adapter, inputs.calibration, target.spec,
                                           granularity=target.granularity, kinds=target.kinds, progress=progress,
                                           **self.options)
        scores = selection.scores or [None] * len(selection.candidates)
        candidates = [Candidate(list(c), [target.blocks[i].name for i in c], [self.name], r, score=sc)
                      for r, (c, sc) in enumerate(zip(selection.candidates[:count], scores), 1)]
        facts = {"method": {"name": self.method.name, "options": self.options, "selection": selection.to_dict()}}
        return Proposal(candidates, facts=facts)


def portfolio_sources(specs: list[str], config: Any, solver: Any, solver_options: dict[str, Any]) -> list[
        tuple[CandidateSource, int]]:
    """The extra candidate sources of ``--candidates`` with how many candidates each gives: objectives (and presets
    such as ``fisher-fo``) solved by the run's ``solver``, removal methods with their default options."""
    sources: list[tuple[CandidateSource, int]] = []
    for spec in parse_sources(specs):
        if spec.kind == "method":
            sources.append((MethodSource(get_method(spec.name), {}), spec.k))
            continue
        objective = get_objective(spec.name)
        options = dict(spec.options)
        for name, value in (("granularity", config.granularity), ("progress", config.progress)):
            if name in objective.options:
                options.setdefault(name, value)
        objective.validate(options)
        sources.append((SolverSource(objective, options, solver, solver_options, label=spec.label), spec.k))
    return sources
