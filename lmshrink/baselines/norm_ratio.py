"""Norm ratio: how much a block changes the residual stream relative to its size, ‖h_out − h_in‖ / ‖h_in‖.

Measured as mean_t ‖h_out[t] − h_in[t]‖ / mean_t ‖h_in[t]‖ over calibration tokens t; the blocks with the
smallest ratio are removed. Registered as the objective
``norm-ratio``: the linear problem minimise Σ_i r_i x_i under the removal constraints, whose minimiser removes
the M smallest-ratio blocks (per kind, with per-kind counts).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .hidden_states import ResidualScoreObjective


class NormRatioObjective(ResidualScoreObjective):
    """Linear problem of the relative update norm ‖h_out − h_in‖/‖h_in‖ of each block."""

    name = "norm-ratio"
    description = "Baseline: linear problem Σ r_i x_i, r_i = mean ‖block output − input‖ / mean ‖input‖."
    score_name = "norm_ratio"

    def score(self, stats: dict[str, Any]) -> np.ndarray:
        return stats["norm_ratio"]
