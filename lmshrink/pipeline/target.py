"""Stage 1 of a prune run, once the model is loaded: what to remove. The model's blocks at the requested
granularity and the cardinality constraints of the removal spec, checked before any slow step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core import Constraint, LmshrinkError
from ..core.removal import removal_constraints


@dataclass
class Target:
    """What the candidates are for: the model's blocks and the removal constraints."""

    blocks: list[Any]
    constraints: list[Constraint]
    spec: dict[str | None, int]
    granularity: str
    kinds: list[str] | None

    @property
    def spec_text(self) -> str:
        return ",".join(str(v) if k is None else f"{k}={v}" for k, v in self.spec.items())


def removal_target(adapter: Any, model: Any, spec: dict[str | None, int], granularity: str,
                   kinds: list[str] | None) -> Target:
    """The blocks and constraints of ``spec`` on ``model``; an unsatisfiable request is refused."""
    blocks = adapter.blocks(model, granularity)
    target = Target(blocks, removal_constraints(blocks, spec, kinds), spec, granularity, kinds)
    check_target(adapter, model, target)
    return target


def check_target(adapter: Any, model: Any, target: Target) -> None:
    """Refuse, before any slow step, a request no choice of blocks can satisfy: removing every block, or e.g.
    every attention block of a hybrid model. Within a group every choice has the same kinds, so the first blocks
    stand for all."""
    total = sum(c.equals for c in target.constraints)
    if total >= len(target.blocks) > 0:
        raise LmshrinkError(f"--remove {target.spec_text} would remove all {len(target.blocks)} blocks of the "
                            f"model ({target.granularity}); remove at most {len(target.blocks) - 1}.")
    kinds_by_group = [{target.blocks[i].kind for i in c.indices} for c in target.constraints if c.equals > 0]
    if any(len(k) > 1 for k in kinds_by_group):
        return  # a total over several kinds: some choices may be runnable; candidates are checked one by one
    representative = [i for c in target.constraints if c.equals > 0 for i in c.indices[: c.equals]]
    reason = adapter.removal_error(model, representative, target.granularity) if representative else None
    if reason:
        raise LmshrinkError(reason)
