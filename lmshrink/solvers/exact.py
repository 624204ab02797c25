"""``exact``: the proven k lowest feasible states, by branch and bound or by enumeration.

Two methods, the faster one by default (``method="auto"``):

- **branch and bound** (:func:`lmshrink.solvers.kernels.topk.topk_bnb`, compiled with numba): depth-first search
  with a Lagrangian-shifted Gilmore–Lawler bound, a convex-relaxation bound (Frank–Wolfe) where it is the
  stronger one, and reduced-cost fixing; the k best complete states are kept and a
  subtree is pruned when its bound reaches the k-th energy. Chosen when the problem has more than
  :data:`ENUMERATE_UP_TO` feasible states (below that its fixed cost, a short anneal for incumbents and the
  bound's Lagrangian multipliers, about 0.2 s, is more than enumerating) and numba is installed. Its certificate
  is in ``info["certificate"]``: nodes, the smallest bound of a pruned subtree (≥ the k-th energy − tolerance when
  proven), the root bound and the k-th energy.
- **enumeration** of every feasible state, vectorized, keeping the k lowest; refuses problems with more than
  ``max_states`` feasible states.

Weighted bands (``L ≤ Σ w·x ≤ U``, e.g. a parameter budget) are honoured: enumeration lists each band group's
feasible patterns (:func:`lmshrink.solvers.bands.group_patterns`); branch and bound splits the feasible set into
cardinality problems, one per feasible count of ones in each weight class (:func:`lmshrink.solvers.bands.
cardinality_splits`; a SmolLM2 sub-layer budget has about 20), searches each, most promising first by its convex
bound, with the k-th energy found so far as a cutoff (skipping a split whose convex bound reaches it), and merges
them. The proof covers the union; ``info["lower_bound"]`` of an unfinished run is the smallest
of the pieces' bounds.

A run that finishes proves the k lowest states; a ``time_limit`` stops either method and returns the k lowest seen
so far, unproven (branch and bound then reports its root bound as ``lower_bound`` and the relative ``gap``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..core import BinaryQuadraticProblem, Samples, Solver, SolverCapabilities, option
from ..core.errors import LmshrinkError, MissingDependencyError, ProblemTooLargeError, require
from .bands import cardinality_splits, group_patterns, product_states
from .kernels.layout import problem_layout

CHUNK = 1 << 15
#: ``method="auto"`` enumerates problems with at most this many feasible states (measured: below it enumeration,
#: about 5·10^5 states per CPU second, beats branch and bound's fixed cost)
ENUMERATE_UP_TO = 100_000


def count_feasible(problem: BinaryQuadraticProblem) -> int:
    """Number of states that satisfy every constraint (:meth:`BinaryQuadraticProblem.num_feasible_states`; for
    bands whose weights are not small integers, the product of the groups' enumerated pattern counts)."""
    try:
        return problem.num_feasible_states()
    except LmshrinkError:
        total = 2 ** len(problem.free_indices)
        for c in problem.constraints:
            total *= len(group_patterns(c))
        return total


def feasible_states(problem: BinaryQuadraticProblem, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Yield every feasible state, as (≤ chunk, N) int8 matrices."""
    n = problem.num_variables
    groups = [(np.array(c.indices), itertools.combinations(range(len(c.indices)), c.equals)) for c in problem.constraints]
    per_group = [[np.array(comb, dtype=np.int64) for comb in combs] for _, combs in groups]
    free = np.array(problem.free_indices, dtype=np.int64)
    free_patterns = itertools.product((0, 1), repeat=len(free))
    block: list[np.ndarray] = []
    for pattern in free_patterns:
        for combo in itertools.product(*per_group) if per_group else [()]:
            x = np.zeros(n, dtype=np.int8)
            for (idx, _), pick in zip(groups, combo):
                x[idx[pick]] = 1
            if len(free):
                x[free] = pattern
            block.append(x)
            if len(block) == chunk:
                yield np.stack(block)
                block = []
    if block:
        yield np.stack(block)


def _single_group_chunks(problem: BinaryQuadraticProblem, chunk: int) -> Iterator[np.ndarray]:
    """Fast path for one constraint over all variables: combinations straight into index arrays."""
    (c,) = problem.constraints
    n, m = problem.num_variables, c.equals
    combos = itertools.combinations(c.indices, m)
    while True:
        flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, chunk)), dtype=np.int64)
        if flat.size == 0 and m > 0:
            return
        rows = flat.reshape(-1, m) if m else np.zeros((1, 0), dtype=np.int64)
        X = np.zeros((len(rows), n), dtype=np.int8)
        np.put_along_axis(X, rows, 1, axis=1)
        yield X
        if m == 0:
            return


@dataclass(frozen=True)
class ExactOptions:
    method: Literal["auto", "branch-and-bound", "enumerate"] = option(
        "auto", "branch-and-bound (needs numba), enumerate, or auto: enumerate up to 100,000 feasible states")
    max_states: int = option(200_000_000, "enumeration refuses problems with more feasible states than this",
                             minimum=1)


def _topk_kernel() -> Any:
    """The compiled branch and bound (:mod:`lmshrink.solvers.kernels.topk`), or None without numba."""
    try:
        from .kernels import topk
    except MissingDependencyError:
        return None
    return topk


class ExactSolver(Solver):
    """The proven k lowest states: branch and bound, or enumeration on small problems."""

    name = "exact"
    description = "Proven k lowest states: branch and bound (numba), or enumeration of small problems."
    options = ExactOptions
    capabilities = SolverCapabilities(proves_optimality=True, deterministic=True,
                                      constraint_kinds=("cardinality", "weighted"))

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: ExactOptions) -> Samples:
        if problem.has_weighted_constraints:
            return self._banded(problem, num_solutions, time_limit, options)
        total = count_feasible(problem)
        method = options.method
        kernel = None if method == "enumerate" else _topk_kernel()
        if method == "branch-and-bound" and kernel is None:
            require("numba", "fast", "exact's branch and bound")  # raises the one-sentence error
        if method == "auto":
            method = "enumerate" if kernel is None or total <= ENUMERATE_UP_TO else "branch-and-bound"
        if method == "branch-and-bound":
            return self._branch_and_bound(kernel, problem, num_solutions, time_limit)
        if total > options.max_states:
            hint = "" if kernel is not None else " or install numba (pip install 'lmshrink[fast]') for branch and bound"
            raise ProblemTooLargeError(
                f"exact would enumerate {total:,} feasible states (max_states={options.max_states:,}); use "
                f"method=branch-and-bound{hint}, or a heuristic solver such as 'anneal'."
            )
        return self._enumerate(problem, total, num_solutions, time_limit)

    def _banded(self, problem: BinaryQuadraticProblem, k: int, time_limit: float | None,
                options: ExactOptions) -> Samples:
        """A problem with weighted bands: enumeration of its feasible patterns, or branch and bound over its
        cardinality splits (module docstring)."""
        method = options.method
        kernel = None if method == "enumerate" else _topk_kernel()
        if method == "branch-and-bound" and kernel is None:
            require("numba", "fast", "exact's branch and bound")
        splits = None if method == "enumerate" or kernel is None else cardinality_splits(problem)
        try:
            total: int | None = count_feasible(problem)
        except LmshrinkError:
            total = None
        enumerate_it = (method == "enumerate" or splits is None
                        or (method == "auto" and total is not None and total <= ENUMERATE_UP_TO))
        if enumerate_it:
            if total is None or total > options.max_states:
                raise ProblemTooLargeError(
                    f"exact cannot split this problem's weighted bands into cardinality problems (too many distinct "
                    f"weights) and would enumerate {'too many' if total is None else f'{total:,}'} feasible states "
                    f"(max_states={options.max_states:,}); use 'milp', which proves it too, or 'anneal'.")
            return self._enumerate(problem, total, k, time_limit)
        return self._split_branch_and_bound(kernel, problem, splits, k, time_limit)

    @staticmethod
    def _split_branch_and_bound(kernel: Any, problem: BinaryQuadraticProblem, splits: list[BinaryQuadraticProblem],
                                k: int, time_limit: float | None) -> Samples:
        """Branch and bound on each cardinality split, the k-th energy so far as each one's cutoff; merged.

        The splits go in order of their convex-relaxation bound (the most promising first, so the cutoff drops
        early), and a split whose bound already reaches the cutoff is skipped: it holds no better state."""
        start = time.perf_counter()
        best_x = np.zeros((0, problem.num_variables), dtype=np.int8)
        best_e = np.zeros(0)
        proven, searched, skipped, nodes, bounds = True, 0, 0, 0, []
        dshift = kernel.convex_shift(problem.quadratic)  # the same objective in every split
        first = np.array([_split_lower_bound(kernel, sub, dshift) for sub in splits])
        for t in np.argsort(first, kind="stable"):
            sub = splits[t]
            cutoff = float(best_e[-1]) if len(best_e) == k else None
            if cutoff is not None and first[t] >= cutoff - 1e-9 * max(1.0, abs(cutoff)):
                skipped += 1
                continue
            left = None if time_limit is None else time_limit - (time.perf_counter() - start)
            if left is not None and left <= 0:
                proven = False
                if len(best_e):
                    bounds.append(float(first[t]))
                    continue
                left = 1e-3  # out of time with no state yet: the most promising split's incumbents
            res = kernel.topk_problem(sub, k=k, time_limit=left, cutoff=cutoff)
            searched += 1
            nodes += int(res.info["nodes"])
            if res.info["proven"]:
                bounds.append(float(res.energies[0]) if len(res.energies) else (cutoff or np.inf))
            else:
                proven = False
                bounds.append(float(res.info["root_bound"]))
            X = np.concatenate([best_x, res.states])
            E = np.concatenate([best_e, res.energies])
            order = np.argsort(E, kind="stable")[:k]
            best_x, best_e = X[order], E[order]
        info: dict[str, Any] = {"method": "branch-and-bound", "num_splits": len(splits), "splits_searched": searched,
                                "splits_skipped_by_bound": skipped,
                                "certificate": {"nodes": nodes, "splits": len(splits)}}
        try:
            info["num_feasible_states"] = count_feasible(problem)
        except LmshrinkError:
            pass
        if not proven and len(best_e):
            lb = min(bounds) if bounds else -np.inf
            info["lower_bound"] = lb
            info["gap"] = (float(best_e[0]) - lb) / max(abs(float(best_e[0])), 1e-12)
        return Samples(best_x, info, proven_optimal=proven, stopped_early=not proven)

    @staticmethod
    def _branch_and_bound(kernel: Any, problem: BinaryQuadraticProblem, k: int, time_limit: float | None) -> Samples:
        res = kernel.topk_problem(problem, k=k, time_limit=time_limit)
        cert = {key: res.info[key] for key in ("nodes", "leaves", "pruned", "fixed_by_bound", "min_pruned_bound",
                                               "root_bound", "root_bound_unshifted", "kth_energy", "tolerance")}
        info: dict[str, Any] = {"method": "branch-and-bound", "num_feasible_states": count_feasible(problem),
                                "certificate": cert}
        proven = bool(res.info["proven"])
        if not proven and len(res.energies):
            best = float(res.energies[0])
            info["lower_bound"] = cert["root_bound"]
            info["gap"] = (best - cert["root_bound"]) / max(abs(best), 1e-12)
        return Samples(res.states, info, proven_optimal=proven, stopped_early=not proven)

    @staticmethod
    def _enumerate(problem: BinaryQuadraticProblem, total: int, num_solutions: int,
                   time_limit: float | None) -> Samples:
        single = len(problem.constraints) == 1 and not problem.free_indices and not problem.has_weighted_constraints
        if single:
            chunks = _single_group_chunks(problem, CHUNK)
        elif problem.has_weighted_constraints:
            chunks = product_states(problem, [group_patterns(c) for c in problem.constraints], CHUNK)
        else:
            chunks = feasible_states(problem)
        best_x = np.zeros((0, problem.num_variables), dtype=np.int8)
        best_e = np.zeros(0)
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        seen = 0
        for X in chunks:
            if deadline is not None and seen and time.perf_counter() > deadline:
                break
            seen += len(X)
            E = problem.energies(X)
            X = np.concatenate([best_x, X])
            E = np.concatenate([best_e, E])
            if len(E) > num_solutions:
                keep = np.argpartition(E, num_solutions - 1)[:num_solutions]
                X, E = X[keep], E[keep]
            best_x, best_e = X, E
        done = seen >= total
        info = {"method": "enumerate", "num_feasible_states": total, "num_enumerated": seen}
        return Samples(best_x, info, proven_optimal=done, stopped_early=not done)


def _split_lower_bound(kernel: Any, problem: BinaryQuadraticProblem, dshift: np.ndarray) -> float:
    """A quick lower bound of a cardinality split (to order and skip splits, and for those a time limit left
    unsearched): its convex relaxation (``dshift`` from :func:`~lmshrink.solvers.kernels.topk.convex_shift` of the shared objective)."""
    lay = problem_layout(problem)
    return float(kernel.convex_root_bound(problem.linear, problem.quadratic, lay, dshift, iters=200)
                 + problem.offset)
