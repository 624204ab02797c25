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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .adapter import ArchitectureAdapter, Block
from .errors import LmshrinkError
from .options import Configurable, Option
from .problem import Constraint
from .removal import has_budget, model_constraints, parse_remove


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


__all__ = ["RemovalMethod", "Selection"]
