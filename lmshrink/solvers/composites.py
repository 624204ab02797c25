"""Composites: wrappers around any binary solver that transform the states it proposes (dimod's composite pattern).

- :class:`RepairComposite` makes infeasible samples feasible by the greedy rule of :func:`~.repair.repair` and,
  with ``polish``, descends by constraint-preserving swaps (:func:`~.repair.swap_descent`) and adds the one-swap
  neighbours of the best states (:func:`~.anneal.swap_neighbours`) when several solutions are asked for.
- :class:`PenaltyComposite` hands its child the unconstrained penalty form
  ``objective + P Σ_c (Σ_{i∈c} x_i − M_c)²`` for samplers that see constraints only as a penalty, with P chosen
  from the problem by :func:`choose_penalty` unless given.
  A problem with a weighted band ``L ≤ Σ w·x ≤ U`` gets the slack-penalty form instead
  (:mod:`lmshrink.solvers.slack`: slack bits turn the band into a penalised equality); the child's states are
  projected back to the problem's variables (slack dropped), so ``RepairComposite(PenaltyComposite(child))``
  honours bands: the repair brings every state into its band. :data:`SlackPenaltyComposite` names it.
- :class:`FixingComposite` reduces the problem before its child sees it: variables every feasible state shares are
  fixed, and when more than a limit remain, those on which a classical solver's best states agree most
  (:func:`agreement_fixing`); the child solves the rest (:func:`restrict`).

Wrapping is the switch: ``RepairComposite(PenaltyComposite(MySampler()))`` repairs and polishes, ``MySampler()``
alone does not (infeasible states are then dropped). However deep the stack, :attr:`SolutionSet.raw` summarises the
innermost sampler's own states, so raw and transformed results are reported side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from ..core import (BinaryQuadraticProblem, Composite, Constraint, LmshrinkError, Option, RawSummary, Samples, Solver,
                    SolverCapabilities)
from ..core.problem import Problem
from .anneal import AnnealSolver, swap_neighbours
from .repair import repair, swap_descent
from .slack import project, slack_problem


# --- repair and polish ----------------------------------------------------------------------------------------------
class RepairComposite(Composite):
    """Greedy repair to feasibility, then (option ``polish``) a swap descent and the best states' neighbours."""

    def __init__(self, child: Solver, *, polish: bool = True) -> None:
        self._polish_default = bool(polish)
        super().__init__(child)

    def steps(self) -> tuple[str, ...]:
        return ("repair", "polish") if self._polish_default else ("repair",)

    def composite_options(self) -> dict[str, Option]:
        return {
            "repair": Option(True, "make infeasible samples feasible by the greedy rule (false: drop them)", bool,
                             nullable=False),
            "polish": Option(self._polish_default, "descend by constraint-preserving swaps after repair", bool,
                             nullable=False),
        }

    def transform(self, problem: Problem, run_child: Callable[[Problem], Samples], options: dict[str, Any], *,
                  num_solutions: int, seed: int | None, time_limit: float | None) -> Samples:
        samples = run_child(problem)
        raw = samples.raw or RawSummary.of(problem, samples.states)
        states, origin, counts = repair_and_polish(problem, samples.states, polish=options["polish"],
                                                   num_solutions=num_solutions, repair_rows=options["repair"])
        per_state = {k: [v[o] if 0 <= o < len(v) else None for o in origin] for k, v in samples.per_state.items()}
        return Samples(states, {**samples.info, **counts}, per_state, samples.proven_optimal, samples.stopped_early,
                       raw)


class RepairedSolver(RepairComposite):
    """A solver plugin that is one raw sampler under :class:`RepairComposite`: a subclass names the sampler class
    (:attr:`sampler`) and whether to polish (:attr:`polishes`). Its capabilities are the sampler's, read from that
    class (the registry lists classes), with the repair steps added when it is created."""

    sampler: ClassVar[type[Solver]]
    polishes: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "sampler" in cls.__dict__ and "capabilities" not in cls.__dict__:
            cls.capabilities = cls.sampler.capabilities
        super().__init_subclass__(**kwargs)

    def __init__(self) -> None:
        super().__init__(self.sampler(), polish=self.polishes)


def repair_and_polish(problem: BinaryQuadraticProblem, states: np.ndarray, *, polish: bool, num_solutions: int = 1,
                      repair_rows: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """:func:`repair` every row (or, without ``repair_rows``, keep the feasible ones), then
    :func:`swap_descent` when ``polish``; returns the states, the input row each came from (−1: a neighbour) and
    the counts ``num_repaired`` and ``num_polished``.

    With ``polish`` the repaired rows are kept next to the polished ones (both are valid candidates) and, when
    more than one solution is asked for, the one-swap neighbours of the ``num_solutions`` best states are added:
    reads tend to descend into the same few minima, and their neighbours are the low-lying alternatives a ranked
    list needs. Without ``polish`` the neighbours are added only when the reads give fewer than ``num_solutions``
    distinct states, so a top-k list is always filled.
    """
    states = np.atleast_2d(np.asarray(states))
    if repair_rows:
        fixed, changed = repair(problem, states)
        rows = np.arange(len(fixed))
        info = {"num_repaired": int(changed.sum())}
    else:
        ok = np.array([problem.is_feasible(x) for x in np.rint(states).astype(np.int64)])
        if not ok.any():
            raise LmshrinkError(f"None of the {len(states)} samples is feasible and repair=false keeps only feasible "
                                "ones; set repair=true.")
        rows = np.flatnonzero(ok)
        fixed = np.rint(states[rows]).astype(np.int8)
        info = {"num_repaired": 0, "num_dropped": int((~ok).sum())}
    out, origin = fixed, rows
    if polish:
        before = problem.energies(fixed)
        polished = swap_descent(problem, fixed)
        info["num_polished"] = int((problem.energies(polished) < before - 1e-12 * (1 + np.abs(before))).sum())
        out, origin = np.concatenate([polished, fixed]), np.concatenate([rows, rows])
    if num_solutions > 1 and (polish or len(np.unique(out, axis=0)) < num_solutions):
        extra = swap_neighbours(problem, out, num_solutions).astype(out.dtype)
        out, origin = np.concatenate([out, extra]), np.concatenate([origin, np.full(len(extra), -1)])
    return out, origin, info


# --- penalty form ---------------------------------------------------------------------------------------------------
def choose_penalty(problem: BinaryQuadraticProblem) -> tuple[float, str]:
    """A penalty weight P that makes the penalty form's minimum feasible, and the rule that gave it.

    Two bounds each suffice; the smaller is taken (a smaller P leaves more of a sampler's precision to the
    objective):

    - the largest energy change one flip can make, ``max_i |l_i + Q_ii| + 2 Σ_{j≠i} |Q_ij|``
      (:meth:`BinaryQuadraticProblem.default_penalty`): above it every single-flip minimum is feasible;
    - ``E(x_g) − E_lb``, with x_g a feasible greedy state (greedy completion of the empty state, then a swap
      descent) and ``E_lb = offset + Σ_i min(0, l_i + Q_ii) + Σ_{i<j} min(0, 2Q_ij)`` a lower bound of the objective:
      every infeasible state then costs at least ``E_lb + P > E(x_g)``, so the global minimum is feasible.

    Both get a 1% margin.
    """
    flip = problem.default_penalty()
    if not problem.constraints:
        return flip, "largest single-flip energy change"
    greedy = swap_descent(problem, repair(problem, np.zeros((1, problem.num_variables), dtype=np.int8))[0])
    Q = problem.quadratic
    iu, ju = np.triu_indices(problem.num_variables, 1)
    lower = (problem.offset + np.minimum(0.0, problem.linear + np.diag(Q)).sum()
             + np.minimum(0.0, 2 * Q[iu, ju]).sum())
    gap = max(problem.energy(greedy[0]) - lower, 0.0) * 1.01 + 1e-9
    if gap < flip:
        return float(gap), "greedy feasible energy minus a lower bound of the objective"
    return float(flip), "largest single-flip energy change"


def penalty_problem(problem: BinaryQuadraticProblem, penalty: float) -> BinaryQuadraticProblem:
    """The unconstrained problem ``objective + penalty · Σ_c (Σ_{i∈c} x_i − M_c)²`` over the same variables."""
    lin, quad, off = problem.penalty_qubo(penalty)
    return BinaryQuadraticProblem(problem.variables, lin, quad, off, [], dict(problem.metadata))


class PenaltyComposite(Composite):
    """Hands the child the unconstrained penalty form (the slack-penalty form for weighted bands); its states may
    break a constraint (wrap in a repair)."""

    step = "penalty"

    def stack_capabilities(self) -> SolverCapabilities:
        caps = super().stack_capabilities()
        if type(self)._declared_capabilities:
            return caps
        # the slack form brings weighted bands to any penalty sampler
        kinds = tuple(dict.fromkeys((*caps.constraint_kinds, "cardinality", "weighted")))
        return replace(caps, constraint_kinds=kinds)

    def composite_options(self) -> dict[str, Option]:
        return {"penalty": Option(None, "weight P of the cardinality penalty; default chosen from the problem "
                                        "(reported as penalty_rule)", float, minimum=0.0)}

    def transform(self, problem: Problem, run_child: Callable[[Problem], Samples], options: dict[str, Any], *,
                  num_solutions: int, seed: int | None, time_limit: float | None) -> Samples:
        if not problem.constraints:
            return run_child(problem)
        if options["penalty"] is None:
            weight, rule = choose_penalty(problem)
        else:
            weight, rule = float(options["penalty"]), "given"
        if problem.has_weighted_constraints:
            form = slack_problem(problem, weight)
            samples = run_child(form)
            samples.states = project(samples.states, problem.num_variables)
            samples.info["slack_bits"] = form.num_variables - problem.num_variables
        else:
            samples = run_child(penalty_problem(problem, weight))
        samples.info.update(penalty=weight, penalty_rule=rule)
        samples.raw = None  # the child's summary speaks of the penalty form; the caller judges the constraints
        return samples


#: the slack-penalty composite: :class:`PenaltyComposite`, which adds slack bits for every weighted band
SlackPenaltyComposite = PenaltyComposite


# --- variable fixing ------------------------------------------------------------------------------------------------
def restrict(problem: BinaryQuadraticProblem, fixed: dict[int, int]) -> tuple[BinaryQuadraticProblem, np.ndarray]:
    """The problem over the variables not in ``fixed`` (index → 0/1), and the kept indices in order.

    With x = (x_K, x_F) the energy is offset + l_F·x_F + x_Fᵀ Q_FF x_F + (l_K + 2 Q_KF x_F)·x_K + x_Kᵀ Q_KK x_K,
    so the fixed part moves into the offset and the linear term; each constraint keeps its free members and
    M − (fixed ones among them), a band its bounds less the fixed ones' weight.
    """
    n = problem.num_variables
    keep = np.array([i for i in range(n) if i not in fixed], dtype=np.int64)
    fidx = np.array(sorted(fixed), dtype=np.int64)
    xf = np.array([fixed[i] for i in fidx], dtype=np.float64)
    Q, lin = problem.quadratic, problem.linear
    offset = problem.offset + float(lin[fidx] @ xf + xf @ Q[np.ix_(fidx, fidx)] @ xf) if len(fidx) else problem.offset
    new_lin = lin[keep] + (2 * Q[np.ix_(keep, fidx)] @ xf if len(fidx) else 0.0)
    pos = {int(i): k for k, i in enumerate(keep)}
    constraints = []
    for c in problem.constraints:
        members = [pos[i] for i in c.indices if i in pos]
        if not members:
            continue
        if c.is_cardinality:
            ones = sum(fixed[i] for i in c.indices if i in fixed)
            constraints.append(Constraint(tuple(members), c.equals - ones, c.name))
            continue
        # a band keeps its free members; the fixed ones' weight moves both bounds
        weight = dict(zip(c.indices, c.weight_array()))
        done = sum(weight[i] * fixed[i] for i in c.indices if i in fixed)
        constraints.append(Constraint(tuple(members), name=c.name,
                                      weights=tuple(weight[i] for i in c.indices if i in pos),
                                      lower=None if c.lower is None else c.lower - done,
                                      upper=None if c.upper is None else c.upper - done))
    sub = BinaryQuadraticProblem(
        variables=[problem.variables[i] for i in keep],
        linear=new_lin,
        quadratic=Q[np.ix_(keep, keep)],
        offset=offset,
        constraints=constraints,
    )
    return sub, keep


def forced_variables(problem: BinaryQuadraticProblem) -> dict[int, int]:
    """Variables whose value every feasible state shares: groups with M = 0 (all 0) or M = size (all 1)."""
    out: dict[int, int] = {}
    for c in problem.constraints:
        if c.equals in (0, len(c.indices)):
            out.update({i: int(c.equals > 0) for i in c.indices})
    return out


def agreement_fixing(
    problem: BinaryQuadraticProblem, states: np.ndarray, budget: int, already: dict[int, int]
) -> tuple[dict[int, int], np.ndarray]:
    """Fix all but ``budget`` of the open variables to the best state's values, most agreed-on first.

    ``states`` are the classical samples, best first. A variable's agreement is the fraction of samples in which it
    has the best sample's value; ties keep the lower index. Returns the new fixings and the agreement per variable.
    """
    best = states[0]
    agree = (states == best).mean(axis=0)
    open_vars = [i for i in range(problem.num_variables) if i not in already]
    excess = len(open_vars) - budget
    fixed = dict(already)
    if excess > 0:
        order = sorted(open_vars, key=lambda i: (-agree[i], i))
        fixed.update({i: int(best[i]) for i in order[:excess]})
    return fixed, agree


class FixingComposite(Composite):
    """Fixes forced variables, and classically agreed-on ones past a limit, then solves the rest with the child.

    The limit option is called ``limit_option`` (e.g. ``max_qubits`` for a quantum child); ``reduce_top`` distinct
    states of ``classical`` (default: the ``anneal`` solver) decide which variables are agreed on.
    ``info["fixed_variables"]`` lists the fixings, ``info["reduction"]`` what the classical solver found.
    """

    step = "fixing"

    def __init__(self, child: Solver, *, limit: int | None = None, limit_option: str = "max_variables",
                 reduce_top: int = 8, classical: Solver | None = None) -> None:
        self._limit, self._limit_option, self._top = limit, limit_option, reduce_top
        self.classical = classical
        super().__init__(child)

    def composite_options(self) -> dict[str, Option]:
        return {
            self._limit_option: Option(self._limit, "larger problems are reduced by fixing the variables the best "
                                                    "classical states agree on", int, minimum=1),
            "reduce_top": Option(self._top, "distinct classical states whose agreement decides the fixed variables",
                                 int, minimum=1, nullable=False),
        }

    def transform(self, problem: Problem, run_child: Callable[[Problem], Samples], options: dict[str, Any], *,
                  num_solutions: int, seed: int | None, time_limit: float | None) -> Samples:
        limit = options[self._limit_option]
        fixed = forced_variables(problem)
        info: dict[str, Any] = {}
        agreed = False
        if limit is not None and problem.num_variables - len(fixed) > limit:
            classical = self.classical
            if classical is None:
                classical = AnnealSolver()
            found = classical.solve(problem, num_solutions=options["reduce_top"], seed=seed)
            states = np.array([s.x for s in found], dtype=np.int8)
            fixed, agree = agreement_fixing(problem, states, int(limit), fixed)
            agreed = True
            info["reduction"] = {
                "classical_solver": found.solver,
                "classical_best_energy": found.best.energy,
                "num_classical_states": len(states),
                "agreement": {problem.variables[i]: float(agree[i]) for i in sorted(fixed)},
            }
        info["fixed_variables"] = {problem.variables[i]: v for i, v in sorted(fixed.items())}
        info["num_fixed"] = len(fixed)
        full = np.zeros(problem.num_variables, dtype=np.int8)
        for i, v in fixed.items():
            full[i] = v
        sub, keep = restrict(problem, fixed) if fixed else (problem, np.arange(problem.num_variables))
        if sub.num_variables == 0:  # everything is decided
            return Samples(full[None, :], info, proven_optimal=not agreed)
        samples = run_child(sub)
        X = np.atleast_2d(np.asarray(samples.states))
        X_full = np.repeat(full[None, :], len(X), axis=0)
        X_full[:, keep] = X
        # restrict() keeps every energy and every constraint, so the child's raw summary holds for the full problem
        return Samples(X_full, {**samples.info, **info}, samples.per_state,
                       bool(samples.proven_optimal) and not agreed, samples.stopped_early, samples.raw)
