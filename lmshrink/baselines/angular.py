"""Angular distance over windows of layers (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper
Layers"): d(l, n) = arccos(cos(h_l, h_{l+n})) / π, averaged over calibration tokens, where h_l is the input of
layer l. To remove n = M layers, remove the window l, ..., l + n − 1 starting at the l with the smallest
distance: the layers whose combined effect on the representation is smallest.

The paper measures the last token only; here the distance is averaged over every token, like the other
hidden-state baselines. The other windows, by increasing distance, are the further candidates (for re-ranking).
Only a total count over all blocks makes sense for a window, so per-kind counts and ``--kinds`` are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import option
from ..core.errors import LmshrinkError
from ..core.method import RemovalMethod, Selection
from .hidden_states import cached_residual_statistics


def window_distances(angular: np.ndarray, n: int) -> np.ndarray:
    """d(l, n) for l = 0 .. N − n, from the boundary-state matrix of :func:`residual_statistics`."""
    size = angular.shape[0] - 1
    if not 0 < n <= size:
        raise LmshrinkError(f"A window of {n} layers does not fit in {size} layers.")
    return np.array([angular[l, l + n] for l in range(size - n + 1)])


@dataclass(frozen=True)
class AngularDistanceOptions:
    batch_size: int = option(8, "samples per forward pass")


class AngularDistance(RemovalMethod):
    """Remove the window of M consecutive layers whose input and output are closest in angle."""

    name = "angular"
    description = "Gromov et al. baseline: remove the M consecutive layers with the smallest angular distance."
    granularities = ("layer",)
    per_kind = False
    options = AngularDistanceOptions

    def run(self, model, adapter, calibration, blocks, constraints, *, granularity, progress, batch_size):
        total = sum(c.equals for c in constraints)
        if total == 0:
            return Selection([[]], [0.0], info={"window": None})
        stats, cached = cached_residual_statistics(model, adapter, calibration, granularity=granularity,
                                                   batch_size=batch_size, progress=progress)
        d = window_distances(stats["angular"], total)
        starts = np.argsort(d, kind="stable")
        candidates = [list(range(int(l), int(l) + total)) for l in starts]
        return Selection(candidates, [float(d[l]) for l in starts],
                         info={"window_start": int(starts[0]), "distances": d.tolist(), "cached_measurement": cached})
