"""Block Influence (ShortGPT, Men et al. 2024): BI_i = 1 − mean over tokens of cos(block input, block output).

A block that barely turns the hidden state (BI near 0) matters little. Two forms:

- objective ``block-influence`` (one-shot): the linear problem minimise Σ_i BI_i x_i under the removal
  constraints, whose minimiser removes the M lowest-BI blocks (per kind, with per-kind counts); it runs through
  ``prune(objective="block-influence")`` with any solver, and its energies rank other removals by summed BI.
- method ``block-influence-iterative``: remove the lowest-BI block, recompute BI on the model without it (the
  block gated to 0), repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import option
from .base import RemovalMethod, Selection, greedy_order, step_logger
from .hidden_states import ResidualScoreObjective, check_granularity, residual_statistics


class BlockInfluenceObjective(ResidualScoreObjective):
    """Linear problem of ShortGPT's Block Influence: the minimiser removes the M lowest-BI blocks."""

    name = "block-influence"
    description = "ShortGPT baseline: linear problem Σ BI_i x_i, BI_i = 1 − mean cos(block input, output)."
    score_name = "block_influence"

    def score(self, stats: dict[str, Any]) -> np.ndarray:
        return 1.0 - stats["cosine"]


@dataclass(frozen=True)
class IterativeBlockInfluenceOptions:
    samples: int | None = option(None, "calibration samples used (default: all)")
    batch_size: int = option(8, "samples per forward pass")


class IterativeBlockInfluence(RemovalMethod):
    """ShortGPT's Block Influence, recomputed on the pruned model after each removal."""

    name = "block-influence-iterative"
    description = "ShortGPT baseline, iterative: remove the lowest-BI block, recompute BI, repeat."
    granularities = ("layer",)
    nested = True
    budgets = True
    options = IterativeBlockInfluenceOptions

    def run(self, model, adapter, calibration, blocks, constraints, *, granularity, progress, samples, batch_size):
        check_granularity(f"Method {self.name!r}", granularity)
        ids = calibration.input_ids if samples is None else calibration.input_ids[:samples]

        def score(removed: list[int], allowed: list[int]) -> dict[int, float]:
            stats = residual_statistics(model, adapter, ids, granularity=granularity, removed=removed,
                                        batch_size=batch_size, angular=False)
            return {i: 1.0 - float(stats["cosine"][i]) for i in allowed}

        order, trace = greedy_order(constraints, score, on_step=step_logger(progress, self.name))
        return Selection([sorted(order)], None, order, trace,
                         {"samples": int(ids.shape[0]), "step_score": "block influence on the model pruned so far"})
