"""Success and time to solution, as solver studies and sweeps count them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: relative tolerance for "hit the target energy"
HIT_RTOL = 1e-9


def hits(energies: Sequence[float], target: float, rtol: float = HIT_RTOL) -> np.ndarray:
    """Which energies reach ``target`` within ``rtol`` relative (absolute near 0):
    E ≤ target + rtol·max(1, |target|)."""
    e = np.asarray(energies, dtype=float)
    return e <= target + rtol * max(1.0, abs(target))


def tts(time_per_run: float, p: float, confidence: float = 0.99) -> float:
    """Time to solution: t·ln(1 − confidence)/ln(1 − p) runs' worth of time to hit the target with that
    confidence; ∞ when p = 0 and t when p ≥ confidence (one run suffices)."""
    if not 0 <= p <= 1:
        raise ValueError(f"p = {p} is not a probability.")
    if p == 0:
        return math.inf
    if p >= confidence:
        return float(time_per_run)
    return float(time_per_run) * math.log(1 - confidence) / math.log(1 - p)
