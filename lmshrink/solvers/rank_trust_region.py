"""``trust-region`` for rank allocation: the child's allocation refined on the model itself, by relinearization.

A rank-allocation problem adds per-matrix errors, each estimated alone around one point (the dense model, for the
``fisher-aligned`` table). Truncations interact: an early layer's error changes what later layers see and how the
loss reacts to them, so at strong compression the sum misjudges the allocation the child finds optimal. The
composite then runs a trust-region method on the measured loss L(r), with an :class:`~lmshrink.core.rank.
AllocationProbe` (option ``probe``; ``lmshrink svd`` hands over the objective's):

1. probe the current allocation r⁰: L(r⁰) and, per matrix l and rank r, the estimate Δ_l(r) of the change of L when
   matrix l alone moves from r⁰_l to r (relinearized at r⁰);
2. the child solves the model  min Σ_l Δ_l(r_l)  under the budget, with every rank inside the region
   |r_l − r⁰_l| ≤ ρ·k_l (and the dense state, which is always allowed, priced at Δ_l(k_l));
3. probe the candidate; accept it when L fell, else shrink ρ by ``shrink``. Stop after ``rounds`` candidates, or
   when the child keeps r⁰.

With ``fit_curvature`` the model is Σ_l [F_l(r_l) + c·C_l(r_l)], the probe's first- and second-order parts, with c
refitted after each candidate so that the model predicts the change just measured (c ≥ 1): a relinearized model
that overshoots raises its own curvature and takes shorter steps, without a second backward pass.

The answer is one allocation, the accepted one of lowest measured loss, so it is never worse on the calibration
loss than the child's own. Without a probe (a problem read from a file), the problem's energy is the probe
(Δ_l(r) = e_l(r) − e_l(r⁰_l), exact for an additive energy), and the child's optimum is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ..core import Composite, LmshrinkError, Option, Samples, Solver, SolverCapabilities
from ..core.rank import AllocationProbe, Probe, RankAllocationProblem, check_covers
from .rank_milp import RankMilpSolver


def energy_probe(problem: RankAllocationProblem) -> Callable[[np.ndarray], Probe]:
    """The problem's own energy as a probe: loss E(r⁰), tables e_l(r) − e_l(r⁰_l) (exact for the additive energy)."""

    def probe(ranks: Any) -> Probe:
        ranks = np.asarray(ranks, dtype=np.int64)
        tables = [problem.weight(l) * (problem.tail_table(l) - problem.tail_table(l)[ranks[l]])
                  for l in range(problem.num_matrices)]
        return Probe(loss=problem.energy(ranks), tables=tables)

    probe.names = list(problem.names)  # type: ignore[attr-defined]
    return probe


def region_problem(problem: RankAllocationProblem, at: np.ndarray, probe: Probe,
                   radius: float) -> RankAllocationProblem:
    """The child's problem of one round: the probe's tables (shifted to min 0, which moves no argmin: every matrix
    takes one rank) as errors, and every matrix's allowed ranks within ±max(1, ⌊radius·k⌋) of ``at`` (of its
    break-even rank when ``at`` keeps it dense; the dense state stays allowed)."""
    if len(probe.tables) != problem.num_matrices:
        raise LmshrinkError(f"The probe gave {len(probe.tables)} tables for {problem.num_matrices} matrices.")
    errors, grid = [], []
    for l, table in enumerate(probe.tables):
        table = np.asarray(table, dtype=np.float64).reshape(-1)
        k = problem.max_rank(l)
        if table.size != k + 1 or not np.all(np.isfinite(table)):
            raise LmshrinkError(f"The probe's table of {problem.names[l]} must be {k + 1} finite numbers.")
        errors.append(table - table.min())
        width = max(1, int(radius * k))
        allowed = problem.allowed_ranks(l)
        centre = min(int(at[l]), problem.break_even(l))  # a dense matrix sits next to its largest factored ranks
        grid.append([int(r) for r in allowed[np.abs(allowed - centre) <= width]])
    return replace(problem, errors=errors, grid=grid, weights=None,
                   metadata={**problem.metadata, "trust_region": {"radius": radius}})


class TrustRegionComposite(Composite):
    """Refines the child's allocation by trust-region steps on the measured loss (probe → region model → child)."""

    name = "rank-trust-region"
    description = ("Rank allocation refined on the model: the child (milp) re-solves tables relinearized at the "
                   "current allocation inside a trust region; a candidate is kept when the measured loss falls.")
    step = "trust-region"
    # the answer is the lowest *measured* loss found, which no solver proves optimal; deterministic with the exact
    # child and a deterministic probe
    capabilities = SolverCapabilities(problem_types=(RankAllocationProblem,), deterministic=True,
                                      requires=("pyomo.environ", "highspy"), extra="milp")

    def composite_options(self) -> dict[str, Option]:
        return {
            "probe": Option(None, "allocation probe: measured loss and relinearized tables of an allocation (a "
                                  "Python object; lmshrink svd passes the objective's)", AllocationProbe),
            "rounds": Option(4, "candidates probed after the child's allocation", int, nullable=False),
            "radius": Option(0.125, "initial trust region: each rank moves by at most this fraction of its full "
                                    "rank", float, nullable=False),
            "shrink": Option(0.5, "factor on the radius after a rejected candidate", float, nullable=False),
            "fit_curvature": Option(False, "rescale the probe's second-order part after each candidate so that the "
                                           "model predicts the change just measured (c ≥ 1; probes that give "
                                           "their curvature)", bool, nullable=False),
        }

    def transform(self, problem: RankAllocationProblem, run_child: Callable[[Any], Samples], options: dict[str, Any],
                  *, num_solutions: int, seed: int | None, time_limit: float | None) -> Samples:
        rounds, radius, shrink = int(options["rounds"]), float(options["radius"]), float(options["shrink"])
        if rounds < 0 or not 0 < radius <= 1 or not 0 < shrink < 1:
            raise LmshrinkError("trust-region needs rounds ≥ 0, 0 < radius ≤ 1 and 0 < shrink < 1.")
        probe = options["probe"]
        probe = energy_probe(problem) if probe is None else probe
        check_covers(probe, problem, "probe", "one rank per matrix")
        start = time.perf_counter()
        first = run_child(problem)
        at = _first_state(first, problem)
        here = probe(at)
        history: list[dict[str, Any]] = [{"round": 0, "loss": float(here.loss), "accepted": True, **here.info}]
        scale = 1.0  # the factor on the probe's second-order part (fit_curvature)
        for j in range(1, rounds + 1):
            model = scaled_model(here, scale)
            child = run_child(region_problem(problem, at, model, radius))
            cand = _first_state(child, problem)
            if np.array_equal(cand, at):
                history.append({"round": j, "radius": radius, "moved": 0, "stopped": "the child keeps the allocation"})
                break
            predicted = _at(model.tables, cand)
            there = probe(cand)
            accepted = bool(there.loss < here.loss)
            history.append({"round": j, "radius": radius, "moved": int(np.abs(cand - at).sum()),
                            "predicted_change": predicted, "loss": float(there.loss),
                            "change": float(there.loss - here.loss), "accepted": accepted, **there.info})
            if options["fit_curvature"] and here.curvature is not None:
                history[-1]["curvature_scale"] = scale
                scale = fitted_scale(here, cand, float(there.loss - here.loss), scale)
            if accepted:
                at, here = cand, there
            else:
                radius *= shrink
        # milp's facts are those of its first solve; solve_time_s is the whole refinement, probes included
        info = {**first.info, "child_solve_time_s": first.info.get("solve_time_s"),
                "solve_time_s": time.perf_counter() - start, "trust_region": history,
                "probe": repr(options["probe"]) if options["probe"] else "the problem's energy",
                "probes": sum(1 for h in history if "loss" in h), "measured_loss": float(here.loss)}
        return Samples(at[None, :], info, stopped_early=first.stopped_early)


def scaled_model(probe: Probe, scale: float) -> Probe:
    """``probe`` with its second-order part multiplied by ``scale`` (itself when 1 or the probe gives none)."""
    if scale == 1.0 or probe.curvature is None:
        return probe
    tables = [np.asarray(t, dtype=np.float64) + (scale - 1.0) * np.asarray(c, dtype=np.float64)
              for t, c in zip(probe.tables, probe.curvature)]
    return replace(probe, tables=tables)


def fitted_scale(probe: Probe, cand: np.ndarray, measured: float, scale: float, largest: float = 1e3) -> float:
    """The factor c on ``probe``'s second-order part C(cand) for which its first-order part F(cand) plus c·C(cand)
    equals the ``measured`` change, within [1, ``largest``]; ``scale`` where the second-order part is 0.

    (The relinearized model m(r) = F(r) + c·C(r), with C ≥ 0, is the quadratic model of a trust region with an
    adaptive curvature weight: a step that measured less than predicted raises c, which shortens the next one.)"""
    assert probe.curvature is not None
    curv = _at(probe.curvature, cand)
    if curv <= 0:
        return scale
    first = _at(probe.tables, cand) - curv
    return float(np.clip((measured - first) / curv, 1.0, largest))


def _at(tables: list[np.ndarray], ranks: np.ndarray) -> float:
    """Σ_l tables[l][ranks[l]]: the model's predicted change at ``ranks``."""
    return float(sum(np.asarray(t)[int(r)] for t, r in zip(tables, ranks)))


def _first_state(samples: Samples, problem: RankAllocationProblem) -> np.ndarray:
    """The child's best allocation (its first state) as one rank per matrix."""
    return np.asarray(samples.states, dtype=np.int64).reshape(-1, problem.num_matrices)[0]


class RankTrustRegionSolver(TrustRegionComposite):
    """``rank-trust-region``: :class:`TrustRegionComposite` around the exact ``rank-milp``."""

    def __init__(self, child: Solver | None = None) -> None:
        super().__init__(child or RankMilpSolver())


__all__ = ["RankTrustRegionSolver", "TrustRegionComposite", "energy_probe", "fitted_scale", "region_problem",
           "scaled_model"]
