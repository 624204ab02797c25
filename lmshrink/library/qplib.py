"""The QPLIB text format (Furini et al., Math. Prog. Comp. 11 (2019), appendix B) for binary problems.

QPLIB states ``minimize ½ xᵀQ⁰x + b⁰·x + q⁰`` with the lower triangle of the symmetric Q⁰ listed (1-based ``row
col value``, row ≥ col), subject to ``c_l ≤ A x ≤ c_u``. lmshrink's energy ``offset + l·x + xᵀQx`` is the same
function with Q⁰ = 2Q, b⁰ = l, q⁰ = offset; each cardinality constraint Σ_{i∈c} x_i = M_c is one row of A with
ones and c_l = c_u = M_c; a weighted band L ≤ Σ w_i x_i ≤ U (a parameter budget) is a row of weights w with
c_l = L and c_u = U (± the file's infinity for a missing bound). The problem type is ``QBL`` (quadratic objective, binary variables, linear constraints),
or ``QBN`` without constraints.

A file lists, in order: name, type, sense, n, m (for L), the objective's quadratic entries, the default and the
non-default entries of b⁰, q⁰, the entries of A, the value of infinity, the defaults and non-default entries of
c_l and c_u, the starting point, the constraint and bound duals (all zero here) and the numbers of non-default
variable and constraint names (none: names are in the export's index.json).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import BinaryQuadraticProblem, Constraint, LmshrinkError

INFINITY = 1e30


def _vector(default: float, values: dict[int, float], what: str) -> list[str]:
    """A QPLIB vector: its default, the number of other entries, and those entries (1-based)."""
    lines = [f"{default:.17g} # default {what}", f"{len(values)} # non-default entries in {what}"]
    return lines + [f"{i + 1} {v:.17g}" for i, v in sorted(values.items())]


def qplib_text(problem: BinaryQuadraticProblem, name: str) -> str:
    """The problem as QPLIB text (see the module docstring for the mapping)."""
    n, m = problem.num_variables, len(problem.constraints)
    lower = np.tril(2 * problem.quadratic)
    rows, cols = np.nonzero(lower)
    lines = [name, ("QBL" if m else "QBN") + " # quadratic objective, binary variables, "
             + ("linear constraints" if m else "no constraints"), "minimize # objective sense",
             f"{n} # variables"]
    if m:
        lines.append(f"{m} # constraints")
    lines.append(f"{len(rows)} # quadratic terms in the objective (lower triangle of Q0 = 2Q)")
    lines += [f"{r + 1} {c + 1} {lower[r, c]:.17g}" for r, c in zip(rows, cols)]
    lines += _vector(0.0, {i: float(v) for i, v in enumerate(problem.linear) if v != 0}, "b0")
    lines.append(f"{problem.offset:.17g} # objective constant q0")
    if m:
        entries = [(k, i, w) for k, c in enumerate(problem.constraints) for i, w in zip(c.indices, c.weight_array())]
        lines.append(f"{len(entries)} # linear terms in the constraints")
        lines += [f"{k + 1} {i + 1} {w:.17g}" for k, i, w in entries]
    lines.append(f"{INFINITY:.17g} # infinity")
    if m:
        low = {k: -INFINITY if c.lower is None else float(c.lower) for k, c in enumerate(problem.constraints)}
        high = {k: INFINITY if c.upper is None else float(c.upper) for k, c in enumerate(problem.constraints)}
        lines += _vector(0.0, {k: v for k, v in low.items() if v != 0}, "constraint lower bounds")
        lines += _vector(0.0, {k: v for k, v in high.items() if v != 0}, "constraint upper bounds")
    lines += _vector(0.0, {}, "starting point")
    if m:
        lines += _vector(0.0, {}, "constraint duals")
    lines += _vector(0.0, {}, "bound duals")
    lines += ["0 # non-default variable names", "0 # non-default constraint names"]
    return "\n".join(lines) + "\n"


def write_qplib(problem: BinaryQuadraticProblem, path: str | Path, name: str) -> Path:
    path = Path(path)
    path.write_text(qplib_text(problem, name))
    return path


class _Lines:
    """The data lines of a QPLIB file: comments (from #, ! or %) and blank lines dropped."""

    def __init__(self, text: str, where: str) -> None:
        self.where = where
        self.items = []
        for line in text.splitlines():
            for mark in "#!%":
                line = line.split(mark, 1)[0]
            if line.strip():
                self.items.append(line.split())
        self.k = 0

    def next(self, what: str) -> list[str]:
        if self.k >= len(self.items):
            raise LmshrinkError(f"{self.where} ends before its {what}.")
        self.k += 1
        return self.items[self.k - 1]

    def number(self, what: str, kind: type = float) -> float:
        token = self.next(what)[0]
        try:
            return kind(float(token)) if kind is int else float(token)
        except ValueError:
            raise LmshrinkError(f"{self.where}: {what} should be a number, not {token!r}.") from None

    def entries(self, width: int, what: str) -> list[list[float]]:
        count = int(self.number(f"number of {what}", int))
        out = []
        for _ in range(count):
            fields = self.next(what)
            if len(fields) < width:
                raise LmshrinkError(f"{self.where}: an entry of {what} has {len(fields)} fields, not {width}.")
            try:
                out.append([float(f) for f in fields[:width]])
            except ValueError:
                raise LmshrinkError(f"{self.where}: an entry of {what} is not numeric ({' '.join(fields)}).") \
                    from None
        return out

    def vector(self, size: int, what: str) -> np.ndarray:
        vec = np.full(size, self.number(f"default of {what}"))
        for i, v in self.entries(2, f"non-default entries of {what}"):
            vec[int(i) - 1] = v
        return vec


def read_qplib(path: str | Path) -> BinaryQuadraticProblem:
    """A binary QPLIB problem (QBN, or QBL whose rows, over disjoint groups, are cardinality equalities or weighted
    bands) as a :class:`BinaryQuadraticProblem`; any other file gets one sentence saying why."""
    path = Path(path)
    where = repr(str(path))
    lines = _Lines(path.read_text(encoding="utf-8"), where)
    name = " ".join(lines.next("name"))
    kind = lines.next("problem type")[0].upper()
    if len(kind) != 3 or kind[1] != "B" or kind[2] not in "NBL" or kind[0] not in "LDCQ":
        raise LmshrinkError(f"{where} is a QPLIB {kind!r} problem; lmshrink reads binary problems with linear or "
                            "no constraints (QBL, QBN and their linear-objective forms).")
    sense = lines.next("objective sense")[0].lower()
    n = int(lines.number("number of variables", int))
    m = int(lines.number("number of constraints", int)) if kind[2] == "L" else 0
    Q0 = np.zeros((n, n))
    if kind[0] != "L":
        for r, c, v in lines.entries(3, "objective quadratic terms"):
            Q0[int(r) - 1, int(c) - 1] += v
    b0 = lines.vector(n, "b0")
    q0 = lines.number("objective constant")
    A = np.zeros((m, n))
    if m:
        for k, i, v in lines.entries(3, "constraint terms"):
            A[int(k) - 1, int(i) - 1] = v
    infinity = lines.number("infinity")
    lo, hi = (lines.vector(m, what) for what in ("constraint lower bounds", "constraint upper bounds")) if m \
        else (np.zeros(0), np.zeros(0))
    # Q0 lists the lower triangle of a symmetric matrix; ½ xᵀQ0x = xᵀQx with Q = (Q0 + Q0ᵀ − diag Q0)/2
    full = Q0 + np.tril(Q0, -1).T
    quadratic, linear, offset = full / 2, b0, q0
    if sense.startswith("max"):
        quadratic, linear, offset = -quadratic, -linear, -offset
    constraints = []
    for k in range(m):
        members = np.flatnonzero(A[k])
        low = None if lo[k] <= -infinity else float(lo[k])
        high = None if hi[k] >= infinity else float(hi[k])
        if np.all(A[k, members] == 1) and low is not None and low == high and low == int(low):
            constraints.append(Constraint(tuple(int(i) for i in members), int(low)))
            continue
        if low is None and high is None:
            raise LmshrinkError(f"{where}: constraint {k + 1} has neither a finite lower nor a finite upper bound.")
        constraints.append(Constraint(tuple(int(i) for i in members), weights=tuple(A[k, members].tolist()),
                                      lower=low, upper=high))
    metadata = {"qplib_name": name, "source": str(path)}
    return BinaryQuadraticProblem([f"x{i + 1}" for i in range(n)], linear, quadratic, offset, constraints, metadata)
