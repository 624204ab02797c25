"""Racing: measure many candidates on few windows, and only the ones still in contention on more.

Candidates c = 1..C are measured on the same windows w = 1..N (per-window losses ℓ_w(c), lower is better: a CE, a
KL). Stage s measures every candidate still in the race on windows [n_{s−1}, n_s), with n_0 = ``first`` and
n_s = min(⌈``growth``·n_{s−1}⌉, N). After each stage the *reference* r is the ``keep``-th lowest mean among the
candidates still in (the leader when ``keep`` = 1), and every other candidate c is tested on the n_s windows both
have, paired as in :mod:`lmshrink.evaluate.measured`:

    D̂_c = (1/n) Σ_w (ℓ_w(c) − ℓ_w(r)),     se_c = sd_w(ℓ_w(c) − ℓ_w(r)) / √n,     z_c = D̂_c / se_c         (1)

and dropped once z_c > t_n(``z``), the threshold at which a Student t with n − 1 degrees of freedom has the tail a
normal has beyond ``z`` (se_c is estimated from n windows, so on few windows z_c has heavy tails; by the
Cornish–Fisher expansion, with ν = n − 1,

    t_n(z) = z + (z³ + z)/(4ν) + (5z⁵ + 16z³ + 3z)/(96ν²),                                                  (2)

e.g. 4.9 on 4 windows, 3.3 on 8, 2.6 on 64 for z = 2.5). se_c = 0 with D̂_c > 0 counts as infinitely significant.
A first stage of fewer than about 8 windows is not advised: the sample deviation of a handful of differences is
sometimes far too small, and the leader, the lowest of many noisy means, is biased low (on planted races of 24–64
candidates, 4 or 6 first windows dropped the true best in about 0.5 % of races, 8 in 0.2 % of 1000 races of 64).
A candidate at least as good as the reference is never dropped, so ``keep`` remain at least. The race ends when
``keep`` candidates are left or all N windows are used. The ranking lists the candidates still in by their mean over
the windows they have (all of them share those), then the dropped ones, those dropped later first and, within a
stage, by z. The survivors of a race that ended early have only the windows measured so far: for their estimate on
all windows call the measure on [0, N) (a measure that keeps what it measured, as RemovalKL does, runs only the
windows missing).

The test is per stage and per candidate, without a correction for the many looks, so ``z`` is set higher than a
single test's (2.5 by default: a candidate whose true mean is the reference's is dropped by chance with probability
about 0.6 % per look). Nothing here imports torch: a measure is any ``evaluate(candidate, a, b) -> array`` of the
per-window losses of windows [a, b), e.g. :meth:`lmshrink.evaluate.kl.RemovalKL.windows`, and a measure that keeps
what it measured (as RemovalKL does) makes the ranking free to extend afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Stage:
    """One stage of a race: the windows all candidates in it have after it, who was in, the reference, the
    dropped candidates (positions in the candidate list) with their z of (1)."""

    windows: int
    entered: list[int]
    reference: int
    dropped: dict[int, float] = field(default_factory=dict)
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"windows": self.windows, "entered": list(self.entered), "reference": self.reference,
                "dropped": {str(c): z for c, z in self.dropped.items()}, "tokens": self.tokens}


@dataclass
class RaceResult:
    """What a race did. Candidates are named by their position in the list raced."""

    #: every candidate, best first (:mod:`racing`'s docstring)
    ranking: list[int]
    #: the candidates still in at the end
    survivors: list[int]
    #: windows measured per candidate
    windows: np.ndarray
    #: per candidate, its per-window losses on windows [0, windows[c])
    values: list[np.ndarray]
    #: tokens measured in all, and what measuring every candidate on all windows would cost
    tokens: int
    full_tokens: int
    stages: list[Stage]
    #: per dropped candidate, the stage it was dropped in
    dropped_at: dict[int, int]

    def mean(self, c: int) -> float:
        """Candidate ``c``'s mean over the windows it was measured on."""
        return float(self.values[c].mean())

    @property
    def best(self) -> int:
        return self.ranking[0]

    @property
    def saving(self) -> float:
        """The fraction of the full cost the race did not spend."""
        return 1.0 - self.tokens / self.full_tokens if self.full_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"ranking": list(self.ranking), "survivors": list(self.survivors),
                "windows": [int(w) for w in self.windows], "means": [self.mean(c) for c in range(len(self.values))],
                "tokens": self.tokens, "full_tokens": self.full_tokens,
                "stages": [s.to_dict() for s in self.stages]}


def paired_z(a: np.ndarray, b: np.ndarray) -> float:
    """z of (1): the mean of ``a − b`` over its standard error (paired windows); ±inf when the error is 0 and the
    mean is not, 0 when both are, NaN with fewer than two windows."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        return math.nan
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
    if se > 0:
        return mean / se
    return 0.0 if mean == 0 else math.copysign(math.inf, mean)


def threshold(z: float, windows: int) -> float:
    """t_n(z) of (2): the drop threshold on ``windows`` paired windows (inf below two)."""
    if windows < 2:
        return math.inf
    nu = windows - 1
    return z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)


def schedule(num_windows: int, first: int, growth: float) -> list[int]:
    """The window counts n_0 < n_1 < … ≤ N after each stage."""
    if num_windows < 1:
        raise ValueError("a race needs at least one window")
    if first < 1 or growth <= 1:
        raise ValueError(f"first must be ≥ 1 and growth > 1 (got {first}, {growth})")
    out = [min(int(first), num_windows)]
    while out[-1] < num_windows:
        out.append(min(max(math.ceil(out[-1] * growth), out[-1] + 1), num_windows))
    return out


def race(candidates: Sequence[Any], evaluate: Callable[[Any, int, int], Any], num_windows: int, *,
         first: int = 8, growth: float = 2.0, z: float = 2.5, keep: int = 1,
         tokens_per_window: int = 1) -> RaceResult:
    """Race ``candidates`` on ``num_windows`` windows (module docstring): ``evaluate(candidate, a, b)`` returns
    the per-window losses of windows [a, b) (lower is better); stages double the windows (``growth``) from
    ``first``; a candidate whose paired difference to the ``keep``-th best is above t_n(``z``) of (2) standard
    errors is dropped. ``tokens_per_window`` prices a window (e.g. the sequence length) for
    :attr:`RaceResult.tokens`."""
    n_cand = len(candidates)
    if n_cand == 0:
        raise ValueError("nothing to race")
    if keep < 1:
        raise ValueError(f"keep must be ≥ 1, not {keep}")
    if not z > 0:
        raise ValueError(f"z must be positive, not {z}")
    values: list[np.ndarray] = [np.empty(0) for _ in range(n_cand)]
    alive = list(range(n_cand))
    stages: list[Stage] = []
    dropped_at: dict[int, int] = {}
    drop_z: dict[int, float] = {}
    done = 0
    for n in schedule(num_windows, first, growth):
        stage = Stage(n, list(alive), -1)
        for c in alive:
            got = np.asarray(evaluate(candidates[c], done, n), dtype=np.float64).reshape(-1)
            if got.size != n - done:
                raise ValueError(f"evaluate returned {got.size} values for windows [{done}, {n})")
            values[c] = np.concatenate([values[c], got])
        stage.tokens = len(alive) * (n - done) * tokens_per_window
        done = n
        order = sorted(alive, key=lambda c: (values[c].mean(), c))
        ref = order[min(keep, len(order)) - 1]
        stage.reference = ref
        if len(alive) > keep and n >= 2:
            limit = threshold(z, n)
            for c in order[keep:]:
                zc = paired_z(values[c], values[ref])
                if zc > limit:
                    stage.dropped[c] = zc
            for c in stage.dropped:
                dropped_at[c] = len(stages)
                drop_z[c] = stage.dropped[c]
            alive = [c for c in alive if c not in stage.dropped]
        stages.append(stage)
        if len(alive) <= keep:
            break
    survivors = sorted(alive, key=lambda c: (values[c].mean(), c))
    gone = sorted(dropped_at, key=lambda c: (-dropped_at[c], drop_z[c], c))
    windows = np.array([v.size for v in values])
    tokens = int(windows.sum()) * tokens_per_window
    return RaceResult(survivors + gone, survivors, windows, values, tokens, n_cand * num_windows * tokens_per_window,
                      stages, dropped_at)
