"""Plans: the decisions a solver's solution stands for, in model terms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .adapter import Block


@dataclass
class RemovalPlan:
    """Which blocks to remove, with the energy (and measured loss, where re-ranked) that chose them."""

    blocks: list[Block]
    granularity: str = "layer"
    energy: float | None = None
    loss: float | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def indices(self) -> list[int]:
        return [b.index for b in self.blocks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "indices": self.indices,
            "blocks": [b.to_dict() for b in self.blocks],
            "granularity": self.granularity,
            "energy": self.energy,
            "loss": self.loss,
            **self.source,
        }
