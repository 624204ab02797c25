"""``tabu``: dwave-samplers' multistart tabu search on the penalty BQM, repaired to feasibility.

The stack is ``RepairComposite(PenaltyComposite(TabuSearch()))`` (:mod:`lmshrink.solvers.composites`): the
constraints enter as the penalty ``P Σ_c (Σ_{i∈c} x_i − M_c)²`` with P chosen from the problem
(:func:`~lmshrink.solvers.composites.choose_penalty`, reported as ``penalty`` and ``penalty_rule``) unless the
``penalty`` option is set; a read that still breaks a constraint is fixed by the greedy repair and counted in
``info["num_repaired"]``; with ``polish`` (the default) every state then descends by constraint-preserving swaps.
The reads' own feasibility and best energy are in the result's ``raw`` summary.

A weighted band ``L ≤ Σ w·x ≤ U`` (a parameter budget) enters in the slack-penalty form
(:mod:`lmshrink.solvers.slack`: slack bits, projected away afterwards), and the repair brings every read into the
band.

The search stops after ``num_restarts`` restarts per read rather than on a wall-clock timeout, so a seed
reproduces the result exactly; ``time_limit`` still caps each read (dwave-samplers' ``timeout``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, Samples, Solver, SolverCapabilities, option
from ..core.errors import require
from .composites import PenaltyComposite, RepairComposite


def bqm_samples(sampleset: Any, n: int) -> np.ndarray:
    """The (k, n) 0/1 matrix of a dimod SampleSet over variables 0..n−1, columns in variable order."""
    labels = list(sampleset.variables)
    X = np.zeros((len(sampleset), n), dtype=np.int8)
    if labels:
        raw = np.asarray(sampleset.record.sample)
        if sampleset.vartype.name == "SPIN":
            raw = (raw + 1) // 2
        X[:, np.asarray(labels, dtype=np.int64)] = raw
    return X


@dataclass(frozen=True)
class TabuOptions:
    num_reads: int = option(16, "independent tabu searches", minimum=1)
    num_restarts: int = option(5, "restarts per read (stopping rule; keeps results reproducible)", minimum=0)
    tenure: int | None = option(None, "tabu tenure (default: dwave-samplers' min(20, N/4))", minimum=1)


class TabuSearch(Solver):
    """dwave-samplers' ``TabuSampler`` on a problem's BQM, raw reads only (no repair)."""

    name = "tabu-search"
    description = "Multistart tabu search (dwave-samplers) on the problem's BQM; raw reads."
    options = TabuOptions
    capabilities = SolverCapabilities(requires=("dimod", "dwave.samplers"), extra="dwave",
                                      budget_options={"reads": "num_reads"})

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: TabuOptions) -> Samples:
        samplers = require("dwave.samplers", "dwave", "The 'tabu' solver")
        bqm = problem.to_bqm()
        num_reads = max(options.num_reads, num_solutions)
        kwargs: dict[str, Any] = {
            "num_reads": num_reads,
            "num_restarts": options.num_restarts,
            "seed": int(seed or 0) % (2**32),
            # ms per read; the restart count, not this, normally ends the search
            "timeout": max(int(1000 * time_limit / max(options.num_reads, 1)), 1) if time_limit else 10**9,
        }
        if options.tenure is not None:
            kwargs["tenure"] = options.tenure
        start = time.perf_counter()
        sampleset = samplers.TabuSampler().sample(bqm, **kwargs)
        elapsed = time.perf_counter() - start
        info = {"num_reads": num_reads}
        # the reads run one after the other: together they used the whole limit only if a timeout stopped them
        stopped = time_limit is not None and elapsed >= 0.9 * time_limit
        return Samples(bqm_samples(sampleset, problem.num_variables), info, stopped_early=stopped)


class TabuSolver(RepairComposite):
    """Tabu search (dwave-samplers ``TabuSampler``) on the penalty form, then greedy repair and polish."""

    name = "tabu"
    description = "Multistart tabu search on the penalty BQM (dwave-samplers), repaired to feasibility."
    capabilities = SolverCapabilities(requires=("dimod", "dwave.samplers"), extra="dwave",
                                      budget_options={"reads": "num_reads"},
                                      constraint_kinds=("cardinality", "weighted"))

    def __init__(self) -> None:
        super().__init__(PenaltyComposite(TabuSearch()), polish=True)
