"""The Solver contract: implement :meth:`Solver.sample`, get validated, ranked, timed :meth:`Solver.solve`.

A solver knows nothing of models. It receives a problem (plain arrays) and proposes states; the base class checks
them against the problem, recomputes their energies from the problem itself, removes duplicates, sorts and times
the run, so every backend reports comparable numbers.

A solver class declares, once each:

- its **options**, as a frozen dataclass of :func:`~lmshrink.core.options.option` fields (``sample`` then receives
  one instance as ``options=``) or as a mapping ``{name: Option(...)}`` (``sample`` then receives keywords);
- its **capabilities** (:class:`SolverCapabilities`): the problems it solves, what it proves, what it needs, how a
  study should budget it (:attr:`Solver.problem_types` and :attr:`Solver.exact` read them).

A :class:`Composite` wraps any solver and transforms the states its child proposes (repair, polish, variable
fixing, penalty conversion: see :mod:`lmshrink.solvers.composites`); the summary of the child's own, untransformed
states stays in :attr:`SolutionSet.raw`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from .errors import LmshrinkError
from .options import Configurable, Option
from .problem import BinaryQuadraticProblem, Problem
from .solution import RawSummary, Solution, SolutionSet


@dataclass
class Samples:
    """What :meth:`Solver.sample` returns: candidate states (rows) and backend facts.

    ``proven_optimal`` says whether the run proved the lowest of these states optimal (None: read
    ``info["optimal"]``, else False); ``stopped_early`` whether a time limit cut the run short; ``raw`` summarises
    the sampler's own states where a composite transformed them (None: the states are the raw samples).
    """

    states: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    #: optional per-row facts (e.g. ``{"num_occurrences": [...]}``), carried into each Solution's info
    per_state: dict[str, list[Any]] = field(default_factory=dict)
    proven_optimal: bool | None = None
    stopped_early: bool = False
    raw: RawSummary | None = None


@dataclass(frozen=True)
class SolverCapabilities:
    """What a solver can do, declared on its class (as dimod samplers declare ``properties`` and ``parameters``).

    Read by ``lmshrink plugins``, the solver study (``benchmarks/solvers``) and
    :class:`lmshrink.testing.SolverConformance`, so none of them needs a table of solver names.
    """

    #: problem classes it solves (left empty, those of the class the solver derives from: binary problems for a
    #: direct :class:`Solver` subclass); :attr:`Solver.problem_types` reads them
    problem_types: tuple[type[Problem], ...] = ()
    #: a finished run proves its best state optimal (and its k lowest): see :attr:`SolutionSet.proven_optimal`
    proves_optimality: bool = False
    #: the result does not depend on the seed (a study runs it once)
    deterministic: bool = False
    #: the same seed gives the same result
    reproducible: bool = True
    #: ``time_limit`` stops the run, which then returns feasible states and reports ``stopped_early``
    honours_time_limit: bool = True
    #: the largest problem (variables) it accepts; None: no fixed limit
    max_variables: int | None = None
    #: what a run's cost grows exponentially with, if anything: the feasible states it enumerates, or the
    #: variables it simulates as qubits (studies keep such solvers to small problems)
    exponential_in: Literal["feasible_states", "variables"] | None = None
    #: how to configure the credentials its default options need (None: none needed)
    needs_credentials: str | None = None
    #: its default options reach a remote service
    needs_network: bool = False
    #: Python modules it imports (the optional extra below provides them)
    requires: tuple[str, ...] = ()
    #: the pip extra, ``pip install 'lmshrink[extra]'``
    extra: str | None = None
    #: the option each equal-budget quantity maps to, e.g. ``{"reads": "num_reads"}``
    budget_options: Mapping[str, str] = field(default_factory=dict)
    #: options under which it runs offline without credentials (local simulators, mocks)
    offline_options: Mapping[str, Any] = field(default_factory=dict)
    #: options for a small, quick run (conformance tests, quick studies)
    quick_options: Mapping[str, Any] = field(default_factory=dict)
    #: what its states go through after sampling, in order: "fixing", "penalty", "repair", "polish"
    postprocessing: tuple[str, ...] = ()
    #: the constraint kinds it honours (:data:`~lmshrink.core.problem.CONSTRAINT_KINDS`): every solver honours
    #: cardinalities; one that also keeps weighted bands (``L ≤ Σ w·x ≤ U``) lists ``"weighted"``, and the
    #: slack-penalty composite brings them to any other
    constraint_kinds: tuple[str, ...] = ("cardinality",)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: problem types by class name."""
        out = dataclasses.asdict(self)
        out["problem_types"] = [t.__name__ for t in self.problem_types]
        for key in ("budget_options", "offline_options", "quick_options"):
            out[key] = dict(out[key])
        out["requires"], out["postprocessing"] = list(self.requires), list(self.postprocessing)
        out["constraint_kinds"] = list(self.constraint_kinds)
        return out


class _FromCapabilities:
    """A solver attribute that is one field of its :class:`SolverCapabilities`, so that it is declared once, there.

    It reads on the class (the registry lists classes) and on an instance (a composite's capabilities are those of
    its stack); assigning to an instance updates the instance's capabilities.
    """

    def __init__(self, field: str, convert: Callable[[Any], Any]) -> None:
        self.field, self.convert = field, convert

    def __get__(self, obj: Any, owner: type) -> Any:
        return getattr((owner if obj is None else obj).capabilities, self.field)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.capabilities = replace(obj.capabilities, **{self.field: self.convert(value)})


#: the class attributes that are fields of the capabilities, and how a class body's value of each is read
_CAPABILITY_ATTRIBUTES = {"problem_types": ("problem_types", tuple), "exact": ("proves_optimality", bool)}


class Solver(Configurable, ABC):
    """Base class of every solver plugin.

    Subclasses set :attr:`name`, :attr:`options`, :attr:`capabilities` and implement :meth:`sample`.
    :attr:`aliases` are further names the registry finds the solver by, for its problem types (e.g. the
    rank-allocation ``rank-milp`` is also ``milp`` for rank problems).
    """

    plugin_kind: ClassVar[str] = "Solver"
    name: ClassVar[str] = ""
    #: one-line description shown by ``lmshrink plugins``
    description: ClassVar[str] = ""
    #: further names, looked up together with the problem type
    aliases: ClassVar[tuple[str, ...]] = ()
    #: keyword options accepted by :meth:`solve`: an options dataclass (read into this ``{name: Option}`` mapping
    #: when the class is created; the dataclass itself is then :attr:`Options`, and :meth:`sample` gets
    #: ``options=Options(...)``), or, the older form, such a mapping (:meth:`sample` then gets keywords)
    options: ClassVar[Mapping[str, Option]] = {}
    #: what the solver can do; its problem types default to the base class's (binary problems)
    capabilities: ClassVar[SolverCapabilities] = SolverCapabilities(problem_types=(BinaryQuadraticProblem,))
    #: the problem classes it solves: ``capabilities.problem_types``
    problem_types = _FromCapabilities("problem_types", tuple)
    #: whether a finished run proves its best state optimal: ``capabilities.proves_optimality`` (what a run proved
    #: is :attr:`SolutionSet.proven_optimal`)
    exact = _FromCapabilities("proves_optimality", bool)
    #: the capabilities the class body itself declares (None: inherited), and whether it names its problem types
    _declared_capabilities: ClassVar[SolverCapabilities | None] = None
    _declares_problem_types: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        caps = cls.__dict__.get("capabilities")
        cls._declared_capabilities = caps
        inherited = super(cls, cls).capabilities
        if caps is None:
            caps = inherited
        elif not caps.problem_types:
            caps = replace(caps, problem_types=inherited.problem_types)
        # ``problem_types = ...`` and ``exact = ...`` in a class body (the older spelling) go into the capabilities
        legacy = {}
        for attr, (field_name, convert) in _CAPABILITY_ATTRIBUTES.items():
            value = cls.__dict__.get(attr)
            if value is not None and not isinstance(value, _FromCapabilities):
                legacy[field_name] = convert(value)
                delattr(cls, attr)
        cls._declares_problem_types = "problem_types" in legacy or bool(
            cls._declared_capabilities and cls._declared_capabilities.problem_types)
        cls.capabilities = replace(caps, **legacy)

    def supports(self, problem: Problem) -> bool:
        """Whether this solver can solve ``problem``: its type, and the kinds of its constraints."""
        return isinstance(problem, self.problem_types) and not self.unhonoured_constraints(problem)

    def unhonoured_constraints(self, problem: Problem) -> list[str]:
        """The constraint kinds of ``problem`` this solver does not honour (see ``capabilities.constraint_kinds``)."""
        kinds = getattr(problem, "constraint_kinds", frozenset())
        return sorted(set(kinds) - set(self.capabilities.constraint_kinds))

    @abstractmethod
    def sample(self, problem: Problem, *, num_solutions: int, seed: int | None, time_limit: float | None,
               **options: Any) -> Samples:
        """Propose candidate states for ``problem`` (any number, duplicates allowed, feasible ones kept).

        Options arrive validated and complete: as keywords, or as ``options=`` (one instance of :attr:`Options`)
        when the solver declares an options dataclass.
        """

    def preflight(self, problem: Problem, options: Mapping[str, Any]) -> None:
        """Checks that must fail at once, before any slow work or heavy import (e.g. missing credentials);
        ``options`` are validated and complete. Default: none."""

    def sample_with(self, problem: Problem, values: Mapping[str, Any], *, num_solutions: int, seed: int | None,
                    time_limit: float | None) -> Samples:
        """Call :meth:`sample` with validated option ``values``, in the form this solver declares them."""
        if self.Options is not None:
            return self.sample(problem, num_solutions=num_solutions, seed=seed, time_limit=time_limit,
                               options=self.Options(**values))
        return self.sample(problem, num_solutions=num_solutions, seed=seed, time_limit=time_limit, **values)

    def solve(
        self,
        problem: Problem,
        *,
        num_solutions: int = 1,
        seed: int | None = None,
        time_limit: float | None = None,
        **options: Any,
    ) -> SolutionSet:
        """Solve ``problem`` and return up to ``num_solutions`` distinct feasible solutions, lowest energy first."""
        missing = self.unhonoured_constraints(problem) if isinstance(problem, self.problem_types) else []
        if missing:
            raise LmshrinkError(
                f"Solver {self.name!r} does not honour {' or '.join(missing)} constraints, which this problem has "
                f"(e.g. a parameter budget L ≤ Σ w·x ≤ U); use a solver that does (see `lmshrink plugins`), or wrap "
                f"{self.name!r} in the slack-penalty composite."
            )
        if not self.supports(problem):
            kinds = ", ".join(t.__name__ for t in self.problem_types)
            raise LmshrinkError(
                f"Solver {self.name!r} solves {kinds}, not {type(problem).__name__}; "
                f"lmshrink.plugins.get_solver(name, problem) picks the solver of that name for this problem."
            )
        check_run_arguments(num_solutions, seed, time_limit)
        opts = self.validate(options)
        self.preflight(problem, opts)
        start = time.perf_counter()
        raw = self.sample_with(problem, opts, num_solutions=int(num_solutions), seed=seed, time_limit=time_limit)
        elapsed = time.perf_counter() - start
        result = rank_states(problem, raw, solver=self.name, num_solutions=int(num_solutions))
        result.time_s = elapsed
        result.info.setdefault("options", opts)
        result.info.setdefault("seed", seed)
        return result

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def check_run_arguments(num_solutions: Any, seed: Any, time_limit: Any) -> None:
    """One sentence for a ``num_solutions``, ``seed`` or ``time_limit`` a run cannot use."""
    if isinstance(num_solutions, bool) or not isinstance(num_solutions, numbers.Integral) or num_solutions < 1:
        raise LmshrinkError(f"num_solutions (--top-k) must be an integer ≥ 1, not {num_solutions!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise LmshrinkError(f"seed must be an integer or None, not {seed!r}.")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, numbers.Real)
                                   or not math.isfinite(time_limit) or time_limit <= 0):
        raise LmshrinkError(f"time_limit must be a positive number of seconds or None, not {time_limit!r}.")


class Composite(Solver):
    """A solver wrapping another solver (its ``child``), as dimod's composites wrap samplers.

    It accepts its own options (:meth:`composite_options`) and every option of the child, passes the child's on,
    and transforms what the child proposes in :meth:`transform`. Name and description are the child's unless the
    composite class sets its own; so are its capabilities (:meth:`stack_capabilities`), and with them
    :attr:`problem_types` and :attr:`exact`, which read them.
    """

    #: what the composite does to the child's states, as listed in ``capabilities.postprocessing``
    step: ClassVar[str] = ""

    def __init__(self, child: Solver) -> None:
        self.child = child
        own = self.composite_options()
        clash = sorted(set(own) & set(child.options))
        if clash:
            raise LmshrinkError(f"{type(self).__name__} and {child.name!r} both have the option {clash[0]!r}.")
        self._own = own
        self.options = {**child.options, **own}
        self.Options = None  # the composite takes keywords and hands the child its own form
        cls = type(self)
        self.name = cls.name or child.name
        self.description = cls.description or child.description
        self.capabilities = self.stack_capabilities()

    def stack_capabilities(self) -> SolverCapabilities:
        """The capabilities of the whole stack: the composite class's own where it declares them, else the child's;
        the problem types the class declares, else the child's; in ``postprocessing`` the child's steps, then
        :meth:`steps` (unless the class declares its own)."""
        cls, child = type(self), self.child
        declared = cls._declared_capabilities
        base = declared or child.capabilities
        problem_types = cls.capabilities.problem_types if cls._declares_problem_types else child.problem_types
        steps = declared.postprocessing if declared and declared.postprocessing else \
            child.capabilities.postprocessing + self.steps()
        return replace(base, problem_types=tuple(problem_types), postprocessing=steps)

    def composite_options(self) -> dict[str, Option]:
        """The composite's own options (default: none)."""
        return {}

    def steps(self) -> tuple[str, ...]:
        """What it adds to ``capabilities.postprocessing`` (default: :attr:`step`)."""
        return (self.step,) if self.step else ()

    def preflight(self, problem: Problem, options: Mapping[str, Any]) -> None:
        self.child.preflight(problem, {k: v for k, v in options.items() if k not in self._own})

    def sample(self, problem: Problem, *, num_solutions: int, seed: int | None, time_limit: float | None,
               **values: Any) -> Samples:
        own = {k: values.pop(k) for k in list(values) if k in self._own}
        start = time.perf_counter()

        def run_child(child_problem: Problem) -> Samples:
            left = None if time_limit is None else max(time_limit - (time.perf_counter() - start), 1e-3)
            return self.child.sample_with(child_problem, values, num_solutions=num_solutions, seed=seed,
                                          time_limit=left)

        return self.transform(problem, run_child, own, num_solutions=num_solutions, seed=seed,
                              time_limit=time_limit)

    @abstractmethod
    def transform(self, problem: Problem, run_child: Callable[[Problem], Samples], options: dict[str, Any], *,
                  num_solutions: int, seed: int | None, time_limit: float | None) -> Samples:
        """Run the child through ``run_child(problem_for_the_child)`` and return the transformed samples."""


def rank_states(problem: Problem, raw: Samples, *, solver: str, num_solutions: int) -> SolutionSet:
    """Keep the feasible, distinct rows of ``raw.states``, recompute their energies and sort them."""
    states = np.asarray(raw.states)
    if states.ndim == 1:
        states = states[None, :]
    info = dict(raw.info)
    if states.size == 0:
        raise LmshrinkError(f"Solver {solver!r} returned no state.")
    states = np.rint(states).astype(np.int64)
    feasible = np.array([problem.is_feasible(s) for s in states])
    info["num_samples"] = int(len(states))
    info["num_infeasible"] = int((~feasible).sum())
    if not feasible.any():
        raise LmshrinkError(f"Solver {solver!r} found no feasible state ({len(states)} proposed).")
    keep = np.flatnonzero(feasible)
    _, first = np.unique(states[keep], axis=0, return_index=True)
    keep = keep[np.sort(first)]
    energies = problem.energies(states[keep])
    order = np.argsort(energies, kind="stable")[:num_solutions]
    solutions = []
    for k in order:
        row = keep[k]
        extra = {key: values[row] for key, values in raw.per_state.items() if row < len(values)}
        solutions.append(Solution(tuple(int(v) for v in states[row]), float(energies[k]), extra))
    proven = bool(info.get("optimal", False)) if raw.proven_optimal is None else bool(raw.proven_optimal)
    if "optimal" in info or proven:
        info["optimal"] = proven
    summary = raw.raw
    if summary is None:
        summary = RawSummary(int(len(states)), int(feasible.sum()), float(energies.min()))
    return SolutionSet(solutions, solver=solver, info=info, proven_optimal=proven,
                       stopped_early=bool(raw.stopped_early), raw=summary)
