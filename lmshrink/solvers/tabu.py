"""``tabu``: dwave-samplers' multistart tabu search on the penalty BQM, repaired to feasibility.

The constraints enter as the penalty ``P Σ_c (Σ_{i∈c} x_i − M_c)²`` (:meth:`BinaryQuadraticProblem.to_bqm`), with
P = :meth:`BinaryQuadraticProblem.default_penalty` unless the ``penalty`` option is set: large enough that every
single-flip local minimum of the penalty form is feasible. A read that still breaks a constraint (a small
``penalty``, a stopped search) is fixed by the greedy repair of :mod:`lmshrink.solvers.repair` and counted in
``info["num_repaired"]``; with ``polish`` (the default) every state then descends by constraint-preserving swaps.

The search stops after ``num_restarts`` restarts per read rather than on a wall-clock timeout, so a seed
reproduces the result exactly; ``time_limit`` still caps each read (dwave-samplers' ``timeout``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, Option, Samples, Solver
from ..core.errors import require
from ..plugins import hookimpl
from .repair import best_feasible_energy, repair_and_polish


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


class TabuSolver(Solver):
    """Tabu search (dwave-samplers ``TabuSampler``) on the penalty form, then greedy repair."""

    name = "tabu"
    description = "Multistart tabu search on the penalty BQM (dwave-samplers), repaired to feasibility."
    problem_types = (BinaryQuadraticProblem,)
    options = {
        "num_reads": Option(16, "independent tabu searches", int),
        "num_restarts": Option(5, "restarts per read (stopping rule; keeps results reproducible)", int),
        "tenure": Option(None, "tabu tenure (default: dwave-samplers' min(20, N/4))", int),
        "penalty": Option(None, "weight P of the cardinality penalty; default problem.default_penalty()", float),
        "polish": Option(True, "descend by constraint-preserving swaps after repair", bool),
    }

    def sample(
        self,
        problem: BinaryQuadraticProblem,
        *,
        num_solutions: int,
        seed: int | None,
        time_limit: float | None,
        num_reads: int,
        num_restarts: int,
        tenure: int | None,
        penalty: float | None,
        polish: bool,
    ) -> Samples:
        samplers = require("dwave.samplers", "dwave", "The 'tabu' solver")
        bqm = problem.to_bqm(penalty)
        kwargs: dict[str, Any] = {
            "num_reads": max(int(num_reads), num_solutions),
            "num_restarts": int(num_restarts),
            "seed": int(seed or 0) % (2**32),
            # ms per read; the restart count, not this, normally ends the search
            "timeout": int(1000 * time_limit / max(num_reads, 1)) if time_limit else 10**9,
        }
        if tenure is not None:
            kwargs["tenure"] = int(tenure)
        sampleset = samplers.TabuSampler().sample(bqm, **kwargs)
        raw = bqm_samples(sampleset, problem.num_variables)
        states, counts = repair_and_polish(problem, raw, polish, num_solutions)
        info: dict[str, Any] = {
            "penalty": problem.default_penalty() if penalty is None else float(penalty),
            "num_reads": kwargs["num_reads"],
            "best_raw_feasible_energy": best_feasible_energy(problem, raw),
            **counts,
        }
        return Samples(states, info)


@hookimpl
def lmshrink_register_solvers(register: Any) -> None:
    register(TabuSolver)
