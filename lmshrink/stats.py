"""Small statistics shared by the searches, reports and benchmarks (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values``, ties getting the mean of the ranks they span (like ``scipy.stats.rankdata``)."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (tie-averaged) ranks; NaN when either side
    is constant or has fewer than 2 values."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"spearman: {x.shape} and {y.shape} differ.")
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


def r_squared(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """1 − SS_res/SS_tot of predictions against measurements; NaN when the measurements are constant."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    ss = float(((m - m.mean()) ** 2).sum()) if len(m) else 0.0
    return 1.0 - float(((m - p) ** 2).sum()) / ss if ss > 0 else float("nan")
