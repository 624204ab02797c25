"""lmshrink's binary solvers as ``dimod.Sampler`` s, for use inside Ocean workflows.

``LmshrinkSampler("milp")`` (or ``"exact"``, ``"anneal"``, any registered binary solver) samples a
``dimod.BinaryQuadraticModel`` of either vartype with :meth:`~LmshrinkSampler.sample` (and so ``sample_ising`` /
``sample_qubo``), and a ``dimod.ConstrainedQuadraticModel`` whose constraints are disjoint cardinalities
(Σ_{i∈c} a·x_i == a·M_c over binary variables) or linear rows (``Σ w_i x_i`` ``<=``, ``>=`` or ``==`` a number:
weighted bands, a ``>=`` and a ``<=`` row over the same weights making one band) with :meth:`~LmshrinkSampler.sample_cqm`. Both return a
``dimod.SampleSet`` whose energies dimod computes from the model itself; a CQM's sample set also carries
``is_satisfied`` and ``is_feasible``. ``num_reads`` is the number of distinct solutions asked for (the solver's
``num_solutions``: its k lowest, proven for ``exact`` and ``milp``).

Importing this module needs dimod (``pip install 'lmshrink[dwave]'``); lmshrink's plugin registry never imports
it, so dimod stays optional.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, Constraint, LmshrinkError
from ..core.errors import require
from ..plugins import registry

dimod = require("dimod", "dwave", "lmshrink's dimod samplers")


def problem_from_bqm(bqm: dimod.BinaryQuadraticModel) -> tuple[BinaryQuadraticProblem, list[Any]]:
    """The unconstrained problem of ``bqm`` (made BINARY) and the dimod labels in variable order."""
    binary = bqm.change_vartype(dimod.BINARY, inplace=False) if bqm.vartype is dimod.SPIN else bqm
    labels = list(binary.variables)
    pos = {v: i for i, v in enumerate(labels)}
    n = len(labels)
    lin = np.array([binary.get_linear(v) for v in labels], dtype=np.float64)
    Q = np.zeros((n, n))
    for (u, v), b in binary.quadratic.items():
        # b x_u x_v = Q_uv x_u x_v + Q_vu x_v x_u with Q symmetric
        Q[pos[u], pos[v]] += b / 2
        Q[pos[v], pos[u]] += b / 2
    problem = BinaryQuadraticProblem([str(v) for v in labels], lin, Q, float(binary.offset))
    return problem, labels


def problem_from_cqm(cqm: dimod.ConstrainedQuadraticModel) -> tuple[BinaryQuadraticProblem, list[Any]]:
    """The problem of a CQM over binary variables whose constraints are disjoint cardinality equalities or linear
    rows (weighted bands)."""
    labels = list(cqm.variables)
    bad = [v for v in labels if cqm.vartype(v) is not dimod.BINARY]
    if bad:
        raise LmshrinkError(f"lmshrink samples binary CQMs only; variable {bad[0]!r} is {cqm.vartype(bad[0]).name}.")
    obj = cqm.objective
    objective = dimod.BinaryQuadraticModel(dict(obj.linear), dict(obj.quadratic), obj.offset, dimod.BINARY)
    objective.add_variables_from((v, 0.0) for v in labels)  # variables only in constraints
    base, order = problem_from_bqm(objective)
    pos = {v: i for i, v in enumerate(order)}
    constraints = []
    bands: dict[tuple, dict[str, Any]] = {}  # a ">=" and a "<=" row over the same weights make one band
    for label, comp in cqm.constraints.items():
        lhs = comp.lhs
        coeffs = {v: lhs.get_linear(v) for v in lhs.variables}
        coeffs = {v: a for v, a in coeffs.items() if a != 0}
        values = set(coeffs.values())
        rhs = comp.rhs - lhs.offset
        if lhs.num_interactions or not coeffs:
            raise LmshrinkError(
                f"CQM constraint {label!r} is not linear in binary variables (Σ a_i·x_i compared with a number); "
                "lmshrink's samplers support disjoint linear constraints only."
            )
        m = rhs / next(iter(values)) if len(values) == 1 else None
        if comp.sense is dimod.sampleset.Sense.Eq and m is not None and abs(m - round(m)) <= 1e-9 and \
                0 <= round(m) <= len(coeffs):
            constraints.append(Constraint(tuple(pos[v] for v in coeffs), int(round(m)), str(label)))
            continue
        key = (tuple(pos[v] for v in coeffs), tuple(float(a) for a in coeffs.values()))
        band = bands.setdefault(key, {"lower": None, "upper": None, "name": str(label).split(":")[0]})
        if comp.sense in (dimod.sampleset.Sense.Ge, dimod.sampleset.Sense.Eq):
            band["lower"] = rhs if band["lower"] is None else max(band["lower"], rhs)
        if comp.sense in (dimod.sampleset.Sense.Le, dimod.sampleset.Sense.Eq):
            band["upper"] = rhs if band["upper"] is None else min(band["upper"], rhs)
    for (indices, weights), band in bands.items():
        constraints.append(Constraint(indices, name=band["name"], weights=weights, lower=band["lower"],
                                      upper=band["upper"]))
    problem = BinaryQuadraticProblem(
        base.variables, base.linear, base.quadratic, base.offset, constraints=constraints
    )
    return problem, order


class LmshrinkSampler(dimod.Sampler):
    """A ``dimod.Sampler`` running the lmshrink binary solver called ``solver`` (e.g. exact, anneal, milp).

    Keyword arguments given here are default solver options; :meth:`sample` takes the same names per call, plus
    ``num_reads`` (distinct solutions), ``seed`` and ``time_limit``.
    """

    def __init__(self, solver: str = "anneal", **options: Any) -> None:
        probe = BinaryQuadraticProblem(["x"], [0.0], [[0.0]])
        self.solver = registry("solver").for_problem(solver, probe)
        self.default_options = dict(options)
        self._parameters = {"num_reads": [], "seed": [], "time_limit": [], **{k: [] for k in self.solver.options}}
        self._properties = {"solver": self.solver.name, "exact": bool(self.solver.capabilities.proves_optimality),
                            "description": self.solver.description,
                            "capabilities": self.solver.capabilities.to_dict()}

    @property
    def parameters(self) -> dict[str, list]:
        return self._parameters

    @property
    def properties(self) -> dict[str, Any]:
        return self._properties

    def _solve(self, problem: BinaryQuadraticProblem, num_reads: int | None, seed: int | None,
               time_limit: float | None, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        opts = {**self.default_options, **options}
        result = self.solver.solve(
            problem, num_solutions=int(num_reads or 10), seed=seed, time_limit=time_limit, **opts
        )
        states = np.array([s.x for s in result], dtype=np.int8)
        info = {"solver": result.solver, "time_s": result.time_s, **{
            k: v for k, v in result.info.items() if k not in ("options",)
        }}
        return states, info

    def sample(self, bqm: dimod.BinaryQuadraticModel, num_reads: int | None = None, seed: int | None = None,
               time_limit: float | None = None, **options: Any) -> dimod.SampleSet:
        """Distinct low-energy samples of ``bqm`` (SPIN or BINARY), lowest energy first."""
        problem, labels = problem_from_bqm(bqm)
        if not labels:
            return dimod.SampleSet.from_samples_bqm((np.zeros((1, 0), dtype=np.int8), []), bqm)
        states, info = self._solve(problem, num_reads, seed, time_limit, options)
        if bqm.vartype is dimod.SPIN:
            states = 2 * states - 1
        sampleset = dimod.SampleSet.from_samples_bqm((states, labels), bqm, info=info)
        return sampleset

    def sample_cqm(self, cqm: dimod.ConstrainedQuadraticModel, num_reads: int | None = None,
                   seed: int | None = None, time_limit: float | None = None, **options: Any) -> dimod.SampleSet:
        """Distinct feasible low-energy samples of a binary CQM with disjoint cardinality constraints."""
        problem, labels = problem_from_cqm(cqm)
        if not labels:
            return dimod.SampleSet.from_samples_cqm((np.zeros((1, 0), dtype=np.int8), []), cqm)
        states, info = self._solve(problem, num_reads, seed, time_limit, options)
        sampleset = dimod.SampleSet.from_samples_cqm((states, labels), cqm)
        sampleset.info.update(info)
        return sampleset


class LmshrinkExactSampler(LmshrinkSampler):
    """``LmshrinkSampler("exact")``: exhaustive enumeration, the k lowest proven."""

    def __init__(self, **options: Any) -> None:
        super().__init__("exact", **options)


class LmshrinkAnnealSampler(LmshrinkSampler):
    """``LmshrinkSampler("anneal")``: simulated annealing that keeps cardinalities by swap moves."""

    def __init__(self, **options: Any) -> None:
        super().__init__("anneal", **options)


class LmshrinkMilpSampler(LmshrinkSampler):
    """``LmshrinkSampler("milp")``: exact MILP (Pyomo + HiGHS), the k lowest proven."""

    def __init__(self, **options: Any) -> None:
        super().__init__("milp", **options)


__all__ = [
    "LmshrinkAnnealSampler",
    "LmshrinkExactSampler",
    "LmshrinkMilpSampler",
    "LmshrinkSampler",
    "problem_from_bqm",
    "problem_from_cqm",
]
