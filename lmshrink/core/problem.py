"""Optimization problems as plain data: numpy arrays and names, no torch.

A problem file is JSON (or ``.npz`` with the same keys for large problems). Its ``format`` key names the problem
class, so :func:`load_problem` reads any problem without being told its kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from .errors import LmshrinkError

_FORMATS: dict[str, type[Problem]] = {}


_P = TypeVar("_P", bound="Problem")


class Problem:
    """Base class of every problem: a format name and a JSON-compatible dict round trip."""

    FORMAT: ClassVar[str] = ""
    metadata: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.FORMAT:
            _FORMATS[cls.FORMAT] = cls

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
            np.savez_compressed(path, __json__=np.array(json.dumps(rest, default=_json_default)), **arrays)
        else:
            path.write_text(json.dumps(data, indent=1, default=_json_default))
        return path


def _json_default(obj: Any) -> Any:
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
    import zipfile

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


@dataclass(frozen=True)
class Constraint:
    """Exactly ``equals`` of the variables at ``indices`` are 1 (a cardinality, i.e. fixed magnetization)."""

    indices: tuple[int, ...]
    equals: int
    name: str = ""

    def __post_init__(self) -> None:
        label = f"Constraint {self.name!r}" if self.name else "A constraint"
        if isinstance(self.indices, (str, bytes)) or not hasattr(self.indices, "__iter__"):
            raise LmshrinkError(f"{label} needs a list of variable indices, not {self.indices!r}.")
        object.__setattr__(self, "indices", tuple(_integer(i, f"{label}: an index") for i in self.indices))
        object.__setattr__(self, "equals", _integer(self.equals, f"{label}: equals"))
        if len(set(self.indices)) != len(self.indices):
            raise LmshrinkError(f"{label} lists a variable twice.")
        if not 0 <= self.equals <= len(self.indices):
            raise LmshrinkError(
                f"{label} asks for {self.equals} of {len(self.indices)} variables."
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"indices": list(self.indices), "equals": self.equals}
        if self.name:
            out["name"] = self.name
        return out


@dataclass
class BinaryQuadraticProblem(Problem):
    """Minimise ``offset + linear·x + xᵀ Q x`` over x ∈ {0,1}^N subject to cardinality constraints.

    ``quadratic`` is the symmetric matrix Q: an off-diagonal pair counts twice and the diagonal acts as a linear
    term (x_i² = x_i). The constraints cover disjoint groups of variables; variables in no constraint are free.
    """

    FORMAT: ClassVar[str] = "lmshrink.binary_quadratic/1"

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

    def num_feasible_states(self) -> int:
        """Number of states that satisfy every constraint: Π_c C(|c|, M_c) · 2^(free variables)."""
        import math

        count = 2 ** len(self.free_indices)
        for c in self.constraints:
            count *= math.comb(len(c.indices), c.equals)
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

    def violations(self, x: Sequence[int] | np.ndarray) -> list[int]:
        """For each constraint, (number of ones) − equals."""
        x = np.asarray(x)
        return [int(x[list(c.indices)].sum()) - c.equals for c in self.constraints]

    def is_feasible(self, x: Sequence[int] | np.ndarray) -> bool:
        x = np.asarray(x)
        if x.shape != (self.num_variables,) or not np.isin(x, (0, 1)).all():
            return False
        return not any(self.violations(x))

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
        """(linear, symmetric quadratic, offset) of the objective plus ``penalty · Σ_c (Σ_{i∈c} x_i − M_c)²``."""
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
        from .errors import require

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
        from .errors import require

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
            cqm.add_constraint_from_iterable(
                [(i, 1) for i in c.indices], "==", rhs=c.equals, label=c.name or f"cardinality_{k}"
            )
        return cqm

    # --- files ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "variables": list(self.variables),
            "linear": self.linear,
            "quadratic": self.quadratic,
            "offset": self.offset,
            "constraints": [c.to_dict() for c in self.constraints],
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinaryQuadraticProblem:
        if data.get("format", cls.FORMAT) != cls.FORMAT:
            raise LmshrinkError(f"Expected format {cls.FORMAT!r}, got {data.get('format')!r}.")
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
        cons = ", ".join(f"{c.name or 'Σ'}={c.equals}/{len(c.indices)}" for c in self.constraints)
        return f"BinaryQuadraticProblem(N={self.num_variables}, constraints=[{cons}])"


_CONSTRAINT_KEYS = ("indices", "equals", "name")


def _constraint(k: int, data: Any) -> Constraint:
    """Constraint ``k`` of a problem file, with one sentence for a wrong shape or an unknown key."""
    if not isinstance(data, dict):
        raise LmshrinkError(f"Constraint {k} must be an object with 'indices' and 'equals', not {_json_kind(data)}.")
    unknown = [key for key in data if key not in _CONSTRAINT_KEYS]
    if unknown:
        raise LmshrinkError(f"Constraint {k} has the unknown key {unknown[0]!r}; a constraint has 'indices', 'equals' "
                            "and optionally 'name'.")
    missing = [key for key in ("indices", "equals") if key not in data]
    if missing:
        raise LmshrinkError(f"Constraint {k} lacks {missing[0]!r}; a constraint has 'indices', 'equals' and "
                            "optionally 'name'.")
    try:
        return Constraint(data["indices"], data["equals"], str(data.get("name", "")))
    except LmshrinkError as exc:  # name the constraint by its position when it has no name
        raise LmshrinkError(str(exc).replace("A constraint", f"Constraint {k}", 1)) from None
