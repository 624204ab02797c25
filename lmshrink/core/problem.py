"""Optimization problems as plain data: numpy arrays and names, no torch.

A problem file is JSON (or ``.npz`` with the same keys for large problems). Its ``format`` key names the problem
class, so :func:`load_problem` reads any problem without being told its kind.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from .errors import LmshrinkError, require

_FORMATS: dict[str, type[Problem]] = {}


_P = TypeVar("_P", bound="Problem")


class Problem:
    """Base class of every problem: a format name and a JSON-compatible dict round trip."""

    FORMAT: ClassVar[str] = ""
    #: further formats :meth:`from_dict` reads (later versions of :attr:`FORMAT`), registered for :func:`load_problem`
    ALSO_READS: ClassVar[tuple[str, ...]] = ()
    metadata: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for fmt in (cls.FORMAT, *cls.ALSO_READS):
            if fmt:
                _FORMATS[fmt] = cls

    @classmethod
    def check_format(cls, data: dict[str, Any]) -> None:
        """Refuse ``data`` whose ``format`` is neither :attr:`FORMAT` nor one of :attr:`ALSO_READS` (absent: read
        as :attr:`FORMAT`)."""
        known = (cls.FORMAT, *cls.ALSO_READS)
        if data.get("format", cls.FORMAT) not in known:
            raise LmshrinkError(f"Expected format {' or '.join(map(repr, known))}, got {data.get('format')!r}.")

    def energies(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Energies of the rows of a state matrix."""
        raise NotImplementedError

    def is_feasible(self, x: Sequence[int] | np.ndarray) -> bool:  # pragma: no cover - abstract
        """Whether one state satisfies every constraint."""
        raise NotImplementedError

    def describe(self, x: Sequence[int]) -> str:
        """A short human-readable rendering of one state."""
        return str(list(x))

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def load(cls: type[_P], path: str | Path) -> _P:
        """Read a problem file written by :meth:`save`; refuses a file that holds another kind of problem."""
        problem = load_problem(path)
        if not isinstance(problem, cls):
            raise LmshrinkError(f"{str(path)!r} holds a {type(problem).__name__}, not a {cls.__name__}.")
        return problem

    def save(self, path: str | Path) -> Path:
        """Write the problem as ``.json`` or, for ``.npz`` paths, as compressed numpy arrays."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if path.suffix == ".npz":
            arrays = {k: np.asarray(v) for k, v in data.items() if isinstance(v, np.ndarray)}
            rest = {k: v for k, v in data.items() if k not in arrays}
            np.savez_compressed(path, __json__=np.array(json.dumps(rest, default=json_default)), **arrays)
        else:
            path.write_text(json.dumps(data, indent=1, default=json_default))
        return path


def json_default(obj: Any) -> Any:
    """``json.dumps``' ``default``: numpy arrays and scalars as lists and numbers, paths as strings."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def load_problem(path: str | Path) -> Problem:
    """Read any problem file written by :meth:`Problem.save`; a file that is not one gets one sentence saying why."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise LmshrinkError(f"No problem file at {name!r}.")
    if path.is_dir():
        raise LmshrinkError(f"{name!r} is a directory, not a problem file (.json or .npz).")
    data = _read_npz(path) if path.suffix == ".npz" else _read_json(path)
    if not isinstance(data, dict):
        raise LmshrinkError(f"{name!r} holds a JSON {_json_kind(data)}, not a problem: an object with 'format', "
                            "'variables' and the problem's arrays.")
    fmt = data.get("format")
    if not isinstance(fmt, str) or fmt not in _FORMATS:
        raise LmshrinkError(f"{name!r} has unknown format {fmt!r}; known formats: {', '.join(sorted(_FORMATS))}.")
    try:
        return _FORMATS[fmt].from_dict(data)
    except LmshrinkError as exc:
        raise LmshrinkError(f"Problem file {name!r}: {_lower_first(str(exc))}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise LmshrinkError(f"{name!r} is not a valid {fmt} problem ({type(exc).__name__}: {exc}).") from None


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LmshrinkError(f"{str(path)!r} is not a text file; a problem file is JSON (.json) or numpy (.npz).") from None
    except OSError as exc:
        raise LmshrinkError(f"Cannot read {str(path)!r}: {exc.strerror or exc}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LmshrinkError(f"{str(path)!r} is not a JSON problem file: {exc}.") from None


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "__json__" not in npz.files:
                raise LmshrinkError(f"{str(path)!r} is a .npz file without lmshrink's '__json__' entry; problem "
                                    "files are written by Problem.save.")
            data = json.loads(str(npz["__json__"]))
            if isinstance(data, dict):
                data.update({k: npz[k] for k in npz.files if k != "__json__"})
            return data
    except LmshrinkError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise LmshrinkError(f"{str(path)!r} is not a readable .npz problem file ({type(exc).__name__}: {exc}).") \
            from None


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text[1:2].isupper() else text


def _integer(value: Any, what: str) -> int:
    """``value`` as an int; a float, string or bool is refused (JSON ``3.0`` or ``"3"`` is no count or index)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise LmshrinkError(f"{what} must be an integer, not {value!r}.")
    return int(value)


def _finite_array(value: Any, what: str, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a float64 array of ``shape`` whose entries are all finite, or one sentence saying what is wrong."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise LmshrinkError(f"{what} must be an array of numbers of shape {shape}.") from None
    if arr.size == int(np.prod(shape)) and arr.shape != shape and len(shape) == 1:
        arr = arr.reshape(shape)
    if arr.shape != shape:
        raise LmshrinkError(f"{what} has shape {arr.shape}, expected {shape}.")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        where = ", ".join(str(int(i)) for i in bad[0])
        raise LmshrinkError(f"{what} has a non-finite entry ({arr[tuple(bad[0])]}) at [{where}].")
    return arr


#: the constraint kinds a problem may hold: a cardinality (exactly ``equals`` of the listed variables are 1) and a
#: weighted band (``lower ≤ Σ w_i x_i ≤ upper``); solvers declare which they honour natively
#: (:attr:`~lmshrink.core.SolverCapabilities.constraint_kinds`)
CONSTRAINT_KINDS = ("cardinality", "weighted")


@dataclass(frozen=True)
class Constraint:
    """A linear constraint on a group of binary variables.

    Two kinds, one class:

    - a **cardinality** ``Constraint(indices, equals)``: exactly ``equals`` of the variables at ``indices`` are 1
      (fixed magnetization); ``weights`` is None and ``lower == upper == equals``;
    - a **weighted band** ``Constraint(indices, weights=w, lower=L, upper=U)``: ``L ≤ Σ_i w_i x_i ≤ U``, e.g. a
      budget over units of unequal size (w_i the parameters removing unit i saves). Either bound may be None
      (unbounded); ``equals`` is None. ``Constraint(indices, equals=E, weights=w)`` is the band ``L = U = E``.

    A band that no 0/1 assignment can satisfy is refused (by interval arithmetic, and exactly by subset sums when
    the weights are integers of modest size after dividing by their greatest common divisor).
    """

    indices: tuple[int, ...]
    equals: int | None = None
    name: str = ""
    weights: tuple[float, ...] | None = None
    lower: float | None = None
    upper: float | None = None

    def __post_init__(self) -> None:
        label = f"Constraint {self.name!r}" if self.name else "A constraint"
        if isinstance(self.indices, (str, bytes)) or not hasattr(self.indices, "__iter__"):
            raise LmshrinkError(f"{label} needs a list of variable indices, not {self.indices!r}.")
        object.__setattr__(self, "indices", tuple(_integer(i, f"{label}: an index") for i in self.indices))
        if len(set(self.indices)) != len(self.indices):
            raise LmshrinkError(f"{label} lists a variable twice.")
        if self.weights is None and self.lower is None and self.upper is None:
            if self.equals is None:
                raise LmshrinkError(f"{label} needs 'equals' (a cardinality) or 'weights' with 'lower'/'upper' (a "
                                    "weighted band).")
            equals = _integer(self.equals, f"{label}: equals")
            if not 0 <= equals <= len(self.indices):
                raise LmshrinkError(f"{label} asks for {equals} of {len(self.indices)} variables.")
            object.__setattr__(self, "equals", equals)
            object.__setattr__(self, "lower", float(equals))
            object.__setattr__(self, "upper", float(equals))
            return
        self._init_band(label)

    def _init_band(self, label: str) -> None:
        n = len(self.indices)
        if self.weights is None:
            weights = np.ones(n)
        else:
            if isinstance(self.weights, (str, bytes)) or not hasattr(self.weights, "__len__"):
                raise LmshrinkError(f"{label} needs a list of weights, not {self.weights!r}.")
            if len(self.weights) != n:
                raise LmshrinkError(f"{label} has {len(self.weights)} weights for {n} indices; give one weight per "
                                    "index.")
            weights = _finite_array(list(self.weights), f"{label}: weights", (n,))
        lower, upper = self.lower, self.upper
        if self.equals is not None:
            if lower is not None or upper is not None:
                raise LmshrinkError(f"{label} gives 'equals' and a bound; give one or the other.")
            lower = upper = self.equals
        lower = None if lower is None else float(_finite_array(lower, f"{label}: lower", ()))
        upper = None if upper is None else float(_finite_array(upper, f"{label}: upper", ()))
        if lower is None and upper is None:
            raise LmshrinkError(f"{label} has weights but neither 'lower' nor 'upper'.")
        if lower is not None and upper is not None and lower > upper:
            raise LmshrinkError(f"{label} has lower {lower:g} above upper {upper:g}.")
        unit = self.weights is None and lower is not None and lower == upper and float(lower).is_integer()
        object.__setattr__(self, "weights", None if self.weights is None else tuple(float(w) for w in weights))
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        # unit weights with L = U integral: a cardinality, whichever way it was written
        object.__setattr__(self, "equals", None)
        if unit:
            object.__setattr__(self, "equals", _integer(int(lower), f"{label}: equals"))
            if not 0 <= self.equals <= n:
                raise LmshrinkError(f"{label} asks for {self.equals} of {n} variables.")
            return
        if not band_reachable(weights, lower, upper):
            lo = "-inf" if lower is None else f"{lower:g}"
            hi = "inf" if upper is None else f"{upper:g}"
            raise LmshrinkError(f"{label}: no choice of its {n} variables gives a weighted sum in [{lo}, {hi}] "
                                f"(weights from {weights.min():g} to {weights.max():g}, sum {weights.sum():g}).")

    # --- what kind of constraint -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"cardinality"`` or ``"weighted"`` (see :data:`CONSTRAINT_KINDS`)."""
        return "cardinality" if self.equals is not None else "weighted"

    @property
    def is_cardinality(self) -> bool:
        return self.equals is not None

    def weight_array(self) -> np.ndarray:
        """The weights as a float64 array (ones for a cardinality or a unit-weight band)."""
        return np.ones(len(self.indices)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)

    def tolerance(self) -> float:
        """Slack allowed on each bound when checking a state: rounding of the weighted sum, 1e-9 of its scale."""
        return 1e-9 * max(1.0, float(np.abs(self.weight_array()).sum()))

    def activity(self, X: np.ndarray) -> np.ndarray:
        """``Σ_i w_i x_i`` over the constraint's variables, for each row of a (k, N) state matrix."""
        X = np.asarray(X, dtype=np.float64)
        return X[:, list(self.indices)] @ self.weight_array()

    def violation(self, X: np.ndarray) -> np.ndarray:
        """Signed distance of each row's weighted sum from the band: 0 inside, (sum − upper) above, (sum − lower)
        below. For a cardinality this is (number of ones) − equals."""
        a = self.activity(X)
        out = np.zeros_like(a)
        if self.upper is not None:
            out = np.where(a > self.upper, a - self.upper, out)
        if self.lower is not None:
            out = np.where(a < self.lower, a - self.lower, out)
        return out

    def satisfied(self, X: np.ndarray) -> np.ndarray:
        """Whether each row of a (k, N) state matrix satisfies the constraint (within :meth:`tolerance`)."""
        return np.abs(self.violation(X)) <= self.tolerance()

    def short_text(self) -> str:
        """``name=M/size`` for a cardinality (``Σ`` when unnamed), ``L≤name≤U/size`` for a band (``Σw`` unnamed)."""
        if self.is_cardinality:
            return f"{self.name or 'Σ'}={self.equals}/{len(self.indices)}"
        lo = "" if self.lower is None else f"{self.lower:g}≤"
        hi = "" if self.upper is None else f"≤{self.upper:g}"
        return f"{lo}{self.name or 'Σw'}{hi}/{len(self.indices)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"indices": list(self.indices)}
        if self.is_cardinality and self.weights is None:
            out["equals"] = self.equals
        else:
            out["weights"] = [float(w) for w in self.weight_array()]
            out["lower"], out["upper"] = self.lower, self.upper
        if self.name:
            out["name"] = self.name
        return out


#: subset-sum reachability is checked exactly when the weights, divided by their gcd, sum to at most this
_EXACT_REACH_UP_TO = 1 << 22


def band_reachable(weights: Sequence[float] | np.ndarray, lower: float | None, upper: float | None) -> bool:
    """Whether some 0/1 choice ``x`` gives ``lower ≤ w·x ≤ upper``.

    Interval check first (the sums lie in [Σ negative weights, Σ positive weights]); for integer weights whose
    gcd-reduced total is at most 2^22 the subset sums are enumerated exactly (a bitset shifted by each weight), else
    the interval check decides.
    """
    w = np.asarray(weights, dtype=np.float64)
    lo = -math.inf if lower is None else float(lower)
    hi = math.inf if upper is None else float(upper)
    tol = 1e-9 * max(1.0, float(np.abs(w).sum()))
    if w[w < 0].sum() > hi + tol or w[w > 0].sum() < lo - tol:
        return False
    if not np.all(w == np.rint(w)) or (w < 0).any() or not (w > 0).any():
        return True
    ints = [int(v) for v in w if v > 0]
    g = 0
    for v in ints:
        g = math.gcd(g, v)
    scaled = [v // g for v in ints]
    if sum(scaled) > _EXACT_REACH_UP_TO:
        return True
    reach = 1  # bit s set: some subset sums to s·g
    for v in scaled:
        reach |= reach << v
    first = 0 if lo == -math.inf else max(0, math.ceil((lo - tol) / g))
    last = sum(scaled) if hi == math.inf else min(sum(scaled), math.floor((hi + tol) / g))
    if first > last:
        return False
    window = (reach >> first) & ((1 << (last - first + 1)) - 1)
    return window != 0


def subset_counts(weights: Sequence[float] | np.ndarray, lower: float | None, upper: float | None) -> int | None:
    """How many 0/1 choices give ``lower ≤ w·x ≤ upper``: exact for non-negative integer weights whose gcd-reduced
    total is at most 2^22 (a counting pass over the subset sums); None where that does not apply."""
    w = np.asarray(weights, dtype=np.float64)
    if not len(w) or not np.all(w == np.rint(w)) or (w < 0).any():
        return None
    ints = [int(v) for v in w]
    g = 0
    for v in ints:
        g = math.gcd(g, v)
    if g == 0:  # all weights zero: every choice has sum 0
        inside = (lower is None or lower <= 0) and (upper is None or upper >= 0)
        return 2 ** len(ints) if inside else 0
    scaled = [v // g for v in ints]
    total = sum(scaled)
    if total > _EXACT_REACH_UP_TO:
        return None
    counts = [0] * (total + 1)  # Python ints: exact for any number of variables
    counts[0] = 1
    top = 0
    for v in scaled:
        for s in range(top, -1, -1):
            if counts[s]:
                counts[s + v] += counts[s]
        top += v
    tol = 1e-9 * max(1.0, float(np.abs(w).sum()))
    first = 0 if lower is None else max(0, math.ceil((lower - tol) / g))
    last = total if upper is None else min(total, math.floor((upper + tol) / g))
    return sum(counts[first:last + 1]) if first <= last else 0


@dataclass
class BinaryQuadraticProblem(Problem):
    """Minimise ``offset + linear·x + xᵀ Q x`` over x ∈ {0,1}^N subject to linear constraints.

    ``quadratic`` is the symmetric matrix Q: an off-diagonal pair counts twice and the diagonal acts as a linear
    term (x_i² = x_i). The constraints (:class:`Constraint`: cardinalities, or weighted bands such as a parameter
    budget) cover disjoint groups of variables; variables in no constraint are free.

    Files: a problem whose constraints are all cardinalities is written as ``lmshrink.binary_quadratic/1`` (as
    before weighted constraints existed); one with a weighted band as ``lmshrink.binary_quadratic/2``. Both read.
    """

    FORMAT: ClassVar[str] = "lmshrink.binary_quadratic/1"
    #: the format written when a constraint is a weighted band
    FORMAT_WEIGHTED: ClassVar[str] = "lmshrink.binary_quadratic/2"
    ALSO_READS: ClassVar[tuple[str, ...]] = (FORMAT_WEIGHTED,)

    variables: list[str]
    linear: np.ndarray
    quadratic: np.ndarray
    offset: float = 0.0
    constraints: list[Constraint] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.variables, (str, bytes)) or not hasattr(self.variables, "__len__"):
            raise LmshrinkError(f"variables must be a list of names, not {self.variables!r}.")
        n = len(self.variables)
        if n == 0:
            raise LmshrinkError("A problem needs at least one variable; this one has none.")
        self.variables = [str(v) for v in self.variables]
        self.linear = _finite_array(self.linear, "linear", (n,))
        self.quadratic = _finite_array(self.quadratic, "quadratic", (n, n))
        self.offset = float(_finite_array(self.offset, "offset", ()))
        if not np.allclose(self.quadratic, self.quadratic.T, rtol=1e-10, atol=1e-12 * (1 + np.abs(self.quadratic).max(initial=0))):
            raise LmshrinkError("quadratic must be symmetric.")
        self.quadratic = (self.quadratic + self.quadratic.T) / 2
        self.constraints = [c if isinstance(c, Constraint) else Constraint(**c) for c in self.constraints]
        seen: set[int] = set()
        for c in self.constraints:
            bad = [i for i in c.indices if not 0 <= i < n]
            if bad:
                raise LmshrinkError(f"Constraint refers to variable {bad[0]} of a {n}-variable problem.")
            if seen & set(c.indices):
                raise LmshrinkError("Constraints must cover disjoint groups of variables.")
            seen |= set(c.indices)

    # --- sizes and groups -------------------------------------------------------------------------------------
    @property
    def num_variables(self) -> int:
        return len(self.variables)

    @property
    def free_indices(self) -> tuple[int, ...]:
        """Variables that appear in no constraint."""
        bound = {i for c in self.constraints for i in c.indices}
        return tuple(i for i in range(self.num_variables) if i not in bound)

    @property
    def constraint_kinds(self) -> frozenset[str]:
        """The kinds of its constraints (``"cardinality"``, ``"weighted"``; see :data:`CONSTRAINT_KINDS`)."""
        return frozenset(c.kind for c in self.constraints)

    @property
    def has_weighted_constraints(self) -> bool:
        return any(not c.is_cardinality for c in self.constraints)

    def num_feasible_states(self) -> int:
        """Number of states that satisfy every constraint: Π_c (choices of group c) · 2^(free variables), with
        C(|c|, M_c) choices for a cardinality and the subset-sum count for a weighted band. A band whose count
        cannot be computed exactly (non-integer weights, or huge ones) is refused with one sentence."""
        count = 2 ** len(self.free_indices)
        for c in self.constraints:
            if c.is_cardinality:
                count *= math.comb(len(c.indices), c.equals)
                continue
            n = subset_counts(c.weight_array(), c.lower, c.upper)
            if n is None:
                raise LmshrinkError(f"Cannot count the states of the weighted constraint {c.name or '(unnamed)'!r}: "
                                    "its weights are not small non-negative integers.")
            count *= n
        return count

    # --- evaluation ---------------------------------------------------------------------------------------------
    def energy(self, x: Sequence[int] | np.ndarray) -> float:
        """Energy of one 0/1 vector."""
        return float(self.energies(np.asarray(x)[None, :])[0])

    def energies(self, X: np.ndarray) -> np.ndarray:
        """Energies of the rows of a (k, N) 0/1 matrix."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.num_variables:
            raise LmshrinkError(f"Expected states of length {self.num_variables}, got shape {X.shape}.")
        return self.offset + X @ self.linear + np.einsum("ki,ki->k", X @ self.quadratic, X)

    def violations(self, x: Sequence[int] | np.ndarray) -> list[float]:
        """For each constraint, how far ``x`` is outside it: (number of ones) − equals for a cardinality (an int),
        the signed distance of the weighted sum from its band for a weighted one (0 inside)."""
        X = np.asarray(x)[None, :]
        out: list[float] = []
        for c in self.constraints:
            v = float(c.violation(X)[0])
            out.append(int(round(v)) if c.is_cardinality else (0.0 if abs(v) <= c.tolerance() else v))
        return out

    def is_feasible(self, x: Sequence[int] | np.ndarray) -> bool:
        x = np.asarray(x)
        if x.shape != (self.num_variables,) or not np.isin(x, (0, 1)).all():
            return False
        return not any(self.violations(x))

    def feasible_rows(self, X: np.ndarray) -> np.ndarray:
        """Whether each row of a (k, N) 0/1 matrix satisfies every constraint (vectorised :meth:`is_feasible`)."""
        X = np.asarray(X)
        ok = np.ones(len(X), dtype=bool)
        for c in self.constraints:
            ok &= c.satisfied(X)
        return ok

    def state(self, ones: Iterable[int]) -> np.ndarray:
        """The 0/1 vector with ones at ``ones``."""
        x = np.zeros(self.num_variables, dtype=np.int8)
        x[list(ones)] = 1
        return x

    def describe(self, x: Sequence[int]) -> str:
        """The ones of ``x`` as ``index:name`` pairs."""
        return "[" + ", ".join(f"{i}:{self.variables[i]}" for i, v in enumerate(x) if v) + "]"

    # --- penalty form -----------------------------------------------------------------------------------------
    def default_penalty(self) -> float:
        """A penalty weight that makes every minimiser of the penalty form feasible.

        One flip changes the objective by at most ``max_i |l_i + Q_ii| + 2 Σ_{j≠i} |Q_ij|``; a flip toward feasibility
        lowers the penalty P(Σx − M)² by at least P. A P above the largest flip change therefore leaves no
        infeasible local (hence global) minimum of single flips.
        """
        Q = self.quadratic
        off = np.abs(Q).sum(axis=1) - np.abs(np.diag(Q))
        flip = np.abs(self.linear + np.diag(Q)) + 2 * off
        return float(flip.max(initial=0.0)) * 1.01 + 1e-9

    def penalty_qubo(self, penalty: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(linear, symmetric quadratic, offset) of the objective plus ``penalty · Σ_c (Σ_{i∈c} x_i − M_c)²``.

        Cardinality constraints only: a weighted band needs slack variables, which change the variables; the
        slack-penalty composite (:mod:`lmshrink.solvers.composites`) adds them."""
        self.require_cardinality("The penalty form")
        P = self.default_penalty() if penalty is None else float(penalty)
        lin = self.linear.copy()
        quad = self.quadratic.copy()
        off = self.offset
        for c in self.constraints:
            idx = np.array(c.indices, dtype=int)
            # (Σx − M)² = xᵀ 1 1ᵀ x − 2M Σ_i x_i + M²
            quad[np.ix_(idx, idx)] += P
            lin[idx] -= 2 * P * c.equals
            off += P * c.equals**2
        return lin, quad, off

    def to_bqm(self, penalty: float | None = None):
        """A ``dimod.BinaryQuadraticModel`` of the penalty form (needs dimod)."""
        dimod = require("dimod", "dwave", "Conversion to a dimod BQM")
        lin, quad, off = self.penalty_qubo(penalty)
        n = self.num_variables
        bqm = dimod.BinaryQuadraticModel("BINARY")
        bqm.add_linear_from((i, lin[i] + quad[i, i]) for i in range(n))
        iu, ju = np.triu_indices(n, 1)
        vals = 2 * quad[iu, ju]
        keep = vals != 0
        bqm.add_quadratic_from(zip(iu[keep].tolist(), ju[keep].tolist(), vals[keep].tolist()))
        bqm.offset = off
        return bqm

    def to_cqm(self):
        """A ``dimod.ConstrainedQuadraticModel`` with the constraints kept as constraints (needs dimod)."""
        dimod = require("dimod", "dwave", "Conversion to a dimod CQM")
        cqm = dimod.ConstrainedQuadraticModel()
        n = self.num_variables
        obj = dimod.BinaryQuadraticModel("BINARY")
        obj.add_linear_from((i, self.linear[i] + self.quadratic[i, i]) for i in range(n))
        iu, ju = np.triu_indices(n, 1)
        vals = 2 * self.quadratic[iu, ju]
        keep = vals != 0
        obj.add_quadratic_from(zip(iu[keep].tolist(), ju[keep].tolist(), vals[keep].tolist()))
        obj.offset = self.offset
        cqm.set_objective(obj)
        for k, c in enumerate(self.constraints):
            if c.is_cardinality:
                cqm.add_constraint_from_iterable(
                    [(i, 1) for i in c.indices], "==", rhs=c.equals, label=c.name or f"cardinality_{k}"
                )
                continue
            terms = [(i, float(w)) for i, w in zip(c.indices, c.weight_array())]
            label = c.name or f"weighted_{k}"
            if c.lower is not None and c.lower == c.upper:
                cqm.add_constraint_from_iterable(terms, "==", rhs=c.lower, label=label)
                continue
            if c.lower is not None:
                cqm.add_constraint_from_iterable(terms, ">=", rhs=c.lower, label=label + ":lower")
            if c.upper is not None:
                cqm.add_constraint_from_iterable(terms, "<=", rhs=c.upper, label=label + ":upper")
        return cqm

    def require_cardinality(self, what: str) -> None:
        """Refuse, in one sentence naming ``what``, a problem with a weighted constraint."""
        weighted = [c for c in self.constraints if not c.is_cardinality]
        if weighted:
            name = weighted[0].name or f"constraint {self.constraints.index(weighted[0])}"
            raise LmshrinkError(f"{what} handles cardinality constraints only, and {name!r} is a weighted band "
                                "(L ≤ Σ w·x ≤ U); use a solver that honours weighted constraints (exact, milp, "
                                "anneal) or wrap one in the slack-penalty composite.")

    # --- files ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT_WEIGHTED if self.has_weighted_constraints else self.FORMAT,
            "variables": list(self.variables),
            "linear": self.linear,
            "quadratic": self.quadratic,
            "offset": self.offset,
            "constraints": [c.to_dict() for c in self.constraints],
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinaryQuadraticProblem:
        cls.check_format(data)
        missing = [k for k in ("variables", "linear", "quadratic") if k not in data]
        if missing:
            raise LmshrinkError(f"The problem lacks the key{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(map(repr, missing))}; a binary problem has 'variables', 'linear', "
                                "'quadratic', and optionally 'offset', 'constraints' and 'metadata'.")
        constraints = data.get("constraints", [])
        if not isinstance(constraints, (list, tuple)):
            raise LmshrinkError(f"constraints must be a list of objects, not {_json_kind(constraints)}.")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise LmshrinkError(f"metadata must be an object, not a {_json_kind(metadata)}.")
        return cls(
            variables=data["variables"],
            linear=data["linear"],
            quadratic=data["quadratic"],
            offset=data.get("offset", 0.0),
            constraints=[_constraint(k, c) for k, c in enumerate(constraints)],
            metadata=dict(metadata),
        )

    def __repr__(self) -> str:
        cons = ", ".join(c.short_text() for c in self.constraints)
        return f"BinaryQuadraticProblem(N={self.num_variables}, constraints=[{cons}])"


_CONSTRAINT_KEYS = ("indices", "equals", "name", "weights", "lower", "upper")
_CONSTRAINT_HELP = ("a constraint has 'indices' and either 'equals' (a cardinality) or 'weights' with 'lower' and/or "
                    "'upper' (a weighted band), and optionally 'name'")


def _constraint(k: int, data: Any) -> Constraint:
    """Constraint ``k`` of a problem file, with one sentence for a wrong shape or an unknown key."""
    if not isinstance(data, dict):
        raise LmshrinkError(f"Constraint {k} must be an object, not {_json_kind(data)}; {_CONSTRAINT_HELP}.")
    unknown = [key for key in data if key not in _CONSTRAINT_KEYS]
    if unknown:
        raise LmshrinkError(f"Constraint {k} has the unknown key {unknown[0]!r}; {_CONSTRAINT_HELP}.")
    banded = any(key in data for key in ("weights", "lower", "upper"))
    missing = [key for key in ("indices",) + (() if banded else ("equals",)) if key not in data]
    if missing:
        raise LmshrinkError(f"Constraint {k} lacks {missing[0]!r}; {_CONSTRAINT_HELP}.")
    try:
        return Constraint(data["indices"], data.get("equals"), str(data.get("name", "")), weights=data.get("weights"),
                          lower=data.get("lower"), upper=data.get("upper"))
    except LmshrinkError as exc:  # name the constraint by its position when it has no name
        raise LmshrinkError(str(exc).replace("A constraint", f"Constraint {k}", 1)) from None
