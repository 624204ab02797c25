"""The RemovalMethod contract: a removal procedure that picks blocks itself instead of posing a problem.

Objectives turn a model into a problem that a solver minimises; that covers every baseline whose choice is "the
M blocks with the lowest score" (a linear problem). Iterative and greedy baselines (recompute the scores after
each removal, or measure the loss of every candidate at every step) and structured ones (a window of consecutive
layers) are not a fixed problem; they implement :class:`RemovalMethod` and are registered through the
``lmshrink_register_methods`` hook. ``lmshrink.prune(method=...)`` runs them through the same pipeline (re-ranking,
removal, perplexity, lm-eval, report) as an objective and a solver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..core.errors import LmshrinkError
from ..core.options import Configurable, Option
from ..core.removal import has_budget, model_constraints, parse_remove

if TYPE_CHECKING:  # torch-free at import
    from ..core import ArchitectureAdapter, Block, Constraint


@dataclass
class Selection:
    """What a removal method chose.

    ``candidates`` are index lists, best first (``candidates[0]`` is the method's choice); ``scores`` holds the
    method's own score of each candidate where it has one (lower is better). Greedy methods set ``order``, the
    blocks in the order they were removed: when the removal spec is a single total, the first M of them are the
    method's choice for any smaller total M. ``trace`` holds one dict of facts per step.
    """

    candidates: list[list[int]]
    scores: list[float] | None = None
    order: list[int] | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> list[int]:
        """The method's choice."""
        if not self.candidates:
            raise LmshrinkError("The removal method returned no candidate.")
        return self.candidates[0]

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "scores": self.scores, "order": self.order, "trace": self.trace,
                "info": self.info}


class RemovalMethod(Configurable, ABC):
    """Base class of every removal-method plugin.

    Subclasses set :attr:`name`, :attr:`options`, :attr:`granularities` and :attr:`per_kind` and implement
    :meth:`run`; callers use :meth:`select`, which parses the removal spec, checks it against what the method
    supports and validates the options first.
    """

    plugin_kind: ClassVar[str] = "Method"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Option]] = {}
    #: granularities the method supports
    granularities: ClassVar[tuple[str, ...]] = ("layer", "sublayer")
    #: whether the method honours per-kind counts (``--remove moe=2,attention=1``) and ``--kinds``
    per_kind: ClassVar[bool] = True
    #: whether the choice for a total M is the first M entries of :attr:`Selection.order` for a larger total
    nested: ClassVar[bool] = False
    #: whether the method honours budgets in parameters (``--remove 25%``: weighted bands in ``constraints``)
    budgets: ClassVar[bool] = False

    def select(
        self,
        model: Any,
        adapter: ArchitectureAdapter,
        calibration: Any,
        remove: str | int | Mapping[str | None, int],
        *,
        granularity: str = "layer",
        kinds: Sequence[str] | None = None,
        progress: bool = False,
        **options: Any,
    ) -> Selection:
        """Choose the blocks to remove from ``model`` for the removal spec ``remove`` (``6``, ``"moe=2"``, ...).

        ``calibration`` is a :class:`lmshrink.data.Calibration`.
        """
        opts = self.validate(options)
        spec = dict(remove) if isinstance(remove, Mapping) else parse_remove(remove)
        if granularity not in self.granularities:
            raise LmshrinkError(
                f"Method {self.name!r} works at granularity {' or '.join(self.granularities)}, not {granularity!r}."
            )
        if has_budget(spec) and not self.budgets:
            raise LmshrinkError(f"Method {self.name!r} removes a number of blocks, not a budget in parameters "
                                f"(--remove {', '.join(map(str, spec.values()))}); give a count (e.g. --remove 6), or "
                                "use a method that honours budgets (sleb, block-influence-iterative) or an objective.")
        blocks = adapter.blocks(model, granularity)
        constraints, _, _ = model_constraints(adapter, model, blocks, spec, kinds)
        if not self.per_kind:
            present = {b.kind for b in blocks}
            if None not in spec or (kinds is not None and not present <= set(kinds)):
                raise LmshrinkError(
                    f"Method {self.name!r} takes only a total count over all blocks (e.g. --remove 6), not per-kind "
                    "counts or --kinds; use an objective (e.g. fisher) or the sleb method for those."
                )
        return self.run(model, adapter, calibration, blocks, constraints, granularity=granularity, progress=progress,
                        **opts)

    @abstractmethod
    def run(
        self,
        model: Any,
        adapter: ArchitectureAdapter,
        calibration: Any,
        blocks: list[Block],
        constraints: list[Constraint],
        *,
        granularity: str,
        progress: bool,
        **options: Any,
    ) -> Selection:
        """Choose blocks; ``constraints`` are the constraints of the spec: cardinalities for counts (a "kept" group
        has 0), weighted bands for budgets in parameters (see :mod:`lmshrink.core.removal`)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def greedy_order(
    constraints: Sequence[Constraint],
    score: Callable[[list[int], list[int]], Mapping[int, float]],
    *,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Remove blocks one at a time: each step removes the lowest-scored block among those still allowed.

    A block is allowed while the constraint group it belongs to has room for it: a cardinality group while it has
    removals left, a weighted band (a parameter budget) while adding the block's weight stays at or below the
    band's upper bound; the run ends when every group is satisfied (each cardinality met, each band's lower bound
    reached). So per-kind counts and budgets are honoured. ``score(removed, allowed)`` returns a score per allowed
    block given the blocks removed so far; it may leave out blocks it knows cannot be the pick (the step picks
    among those it scored). Ties go to the lower index. Returns the removal order and one dict of facts per step.
    """
    group = {i: k for k, c in enumerate(constraints) for i in c.indices}
    weight = {i: float(w) for c in constraints for i, w in zip(c.indices, c.weight_array())}
    used = {k: 0.0 for k in range(len(constraints))}

    def room(i: int) -> bool:
        c = constraints[group[i]]
        return c.upper is None or used[group[i]] + weight[i] <= c.upper + c.tolerance()

    def unmet() -> bool:
        return any(c.lower is not None and used[k] < c.lower - c.tolerance() for k, c in enumerate(constraints))

    removed: list[int] = []
    trace: list[dict[str, Any]] = []
    step = 0
    while unmet():
        allowed = sorted(i for i in group if i not in removed and room(i))
        if not allowed:
            raise LmshrinkError(f"The greedy step {step + 1} has no block left that fits the removal constraints.")
        scores = {i: v for i, v in score(list(removed), allowed).items() if i in allowed}
        if not scores:
            raise LmshrinkError(f"The greedy step {step + 1} scored none of the allowed blocks {allowed}.")
        pick = min(scores, key=lambda i: (scores[i], i))
        removed.append(pick)
        used[group[pick]] += weight[pick]
        step += 1
        fact = {"step": step, "removed": pick, "score": float(scores[pick]),
                "scores": {int(i): float(v) for i, v in sorted(scores.items())}}
        trace.append(fact)
        if on_step is not None:
            on_step(fact)
    return removed, trace


def step_logger(progress: bool, name: str) -> Callable[[dict[str, Any]], None] | None:
    """An ``on_step`` callback for :func:`greedy_order` that prints each step to stderr (None when quiet)."""
    from ..report import log

    if not progress:
        return None
    return lambda fact: log(True, f"{name}: step {fact['step']} removes block {fact['removed']} "
                                  f"(score {fact['score']:.6g})")


def get_method(name: str) -> RemovalMethod:
    """A new instance of the removal method called ``name``; naming an objective says to use ``objective=``."""
    from ..plugins import registry

    methods = registry("method")
    if name not in methods and name in registry("objective"):
        raise LmshrinkError(
            f"{name!r} is an objective, not a method: use --objective {name} (objective={name!r}); methods: "
            f"{', '.join(methods.names()) or '(none)'}."
        )
    return methods.create(name)
