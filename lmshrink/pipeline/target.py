"""Stage 1 of a prune run, once the model is loaded: what to remove. The model's blocks at the requested
granularity and the constraints of the removal spec (cardinalities for counts, weighted bands for budgets in
parameters), checked before any slow step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core import Constraint, LmshrinkError
from ..core.removal import model_constraints, spec_text


@dataclass
class Target:
    """What the candidates are for: the model's blocks and the removal constraints."""

    blocks: list[Any]
    constraints: list[Constraint]
    spec: dict[str | None, Any]
    granularity: str
    kinds: list[str] | None
    #: each block's parameter count, when the spec is a budget in parameters
    parameters: list[int] | None = None
    #: the decoder layers' parameters, what a share such as ``--remove 25%`` refers to (with a budget)
    decoder_parameters: int | None = None

    @property
    def spec_text(self) -> str:
        return spec_text(self.spec)


def removal_target(adapter: Any, model: Any, spec: dict[str | None, Any], granularity: str,
                   kinds: list[str] | None) -> Target:
    """The blocks and constraints of ``spec`` on ``model``; an unsatisfiable request is refused."""
    blocks = adapter.blocks(model, granularity)
    constraints, parameters, decoder = model_constraints(adapter, model, blocks, spec, kinds)
    target = Target(blocks, constraints, spec, granularity, kinds, parameters, decoder)
    check_target(adapter, model, target)
    return target


def check_target(adapter: Any, model: Any, target: Target) -> None:
    """Refuse, before any slow step, a request no choice of blocks can satisfy: removing every block, or e.g.
    every attention block of a hybrid model. Within a group every choice has the same kinds, so the first blocks
    stand for all."""
    if any(not c.is_cardinality for c in target.constraints):
        return  # a budget: refused in removal_constraints when it needs every block; candidates checked one by one
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


def budget_facts(target: Target, indices: list[int]) -> dict[str, Any] | None:
    """What a budget in parameters asked for and what the removal ``indices`` give: the parameters removed, their
    share of the decoder layers, and each band ``lower ≤ Σ w·x ≤ upper`` with its own sum. None without a budget."""
    if target.parameters is None:
        return None
    removed = int(sum(target.parameters[i] for i in indices))
    chosen = set(indices)
    bands = [{"name": c.name, "lower": c.lower, "upper": c.upper,
              "removed": int(sum(target.parameters[i] for i in c.indices if i in chosen))}
             for c in target.constraints if not c.is_cardinality]
    decoder = target.decoder_parameters or 0
    return {"remove": target.spec_text, "parameters_removed": removed, "decoder_parameters": decoder,
            "share_of_decoder": removed / decoder if decoder else None, "bands": bands}
