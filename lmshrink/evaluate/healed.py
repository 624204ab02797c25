"""Fitness after healing: every candidate scored with its own linear-healing maps, fitted on the spot.

A search that compares removals *healed* (:mod:`lmshrink.heal.linear`) must fit each candidate's maps before it
measures it. :class:`HealedFitness` makes that cheap enough to do for every candidate, not two finalists:

- the dense model's layer inputs on the fitting samples are kept once
  (:class:`~lmshrink.evaluate.midstack.LayerInputs`): the targets z of the least-squares problems are read from
  them, and the captures run mid-stack from the layer before the candidate's first removed unit, each run resuming
  where the previous one stopped (:meth:`lmshrink.heal.linear.LinearHeal.fit`);
- the healed measurement runs the same mid-stack pass as the plain one, with the maps applied by forward hooks (no
  model copy) from the meter's own kept layer inputs on the validation windows.

So a healed evaluation costs the plain one plus about one partial pass over the fitting samples (from the first
removed unit to the last) and a d × d solve per run of removed units: on a 12-layer tiny Llama, with as many
fitting samples as validation windows, about 2.7× a plain KL evaluation (4.1–4.4× with twice as many fitting
samples; docs/guide/fitness.md). It wraps either meter: :class:`~lmshrink.evaluate.kl.RemovalKL` (KL and CE, window ranges for
racing) or :class:`~lmshrink.evaluate.measured.RemovalLoss` (CE). The fitting samples must be disjoint from the
meter's windows, or the healed score is fitted on what it is judged on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .measured import LossEstimate
from .midstack import LayerInputs


class HealedFitness:
    """``meter``'s measure of removal sets after linear healing, each set with maps fitted on ``fit_ids``.

    ``fit_ids`` (samples × seq_len) are the fitting samples (the first ``samples`` of them: the sample budget);
    ``ridge`` is linear healing's ridge. ``fitness(removed)`` is the healed estimate (KL for a RemovalKL, CE for a
    RemovalLoss), ``fitness.runs(removed)`` the fitted :class:`~lmshrink.heal.linear.HealedRun` list (memoised per
    set), ``fitness.windows(removed, a, b)`` the healed per-window values of windows [a, b) (a RemovalKL meter
    only), ``fitness.cross_entropy(removed)`` the healed CE. :attr:`fits` counts the sets fitted.
    """

    def __init__(self, meter: Any, fit_ids: Any, *, ridge: float = 1e-3, samples: int | None = None,
                 batch_size: int = 8, streams: Any = None) -> None:
        from ..heal.linear import LinearHeal

        self.meter = meter
        self.fit_ids = fit_ids[:samples] if samples else fit_ids
        self.healer = LinearHeal(ridge=ridge, batch_size=batch_size)
        if streams is None and meter.adapter.layer_list(meter.model) is not None:
            streams = LayerInputs(meter.model, meter.adapter, self.fit_ids, self.healer.batch_size)
        #: the dense model's layer inputs on the fitting samples (None for an adapter without a layer list)
        self.streams = streams
        self.fits = 0
        self._runs: dict[frozenset[int], list[Any]] = {}

    @property
    def granularity(self) -> str:
        return self.meter.granularity

    def runs(self, removed: Iterable[int]) -> list[Any]:
        """The linear maps of ``removed``, fitted once per set."""
        s = frozenset(int(i) for i in removed)
        if s not in self._runs:
            self._runs[s] = self.healer.fit(self.meter.model, self.meter.adapter, sorted(s), self.fit_ids,
                                            self.granularity, streams=self.streams)
            self.fits += 1
        return self._runs[s]

    def __call__(self, removed: Iterable[int]) -> LossEstimate:
        """The meter's estimate of ``removed`` healed (the dense model's, unchanged, for an empty set)."""
        removed = list(removed)
        if not removed:
            return self.meter(removed)
        return self.meter.healed(removed, self.runs(removed))

    def cross_entropy(self, removed: Iterable[int]) -> LossEstimate:
        """The healed CE (a RemovalKL meter: from the same passes as the healed KL)."""
        removed = list(removed)
        if not hasattr(self.meter, "cross_entropy"):
            return self(removed)
        return self.meter.cross_entropy(removed, self.runs(removed) if removed else None)

    def windows(self, removed: Iterable[int], a: int, b: int, *, measure: str = "kl") -> np.ndarray:
        """Healed per-window values of windows [a, b) (what :func:`lmshrink.evaluate.racing.race` calls)."""
        removed = list(removed)
        return self.meter.windows(removed, a, b, runs=self.runs(removed) if removed else None, measure=measure)


def healed_fitness(meter: Any, removed: Iterable[int], fit_ids: Any, *, ridge: float = 1e-3,
                   samples: int | None = None, streams: Any = None) -> tuple[LossEstimate, list[Any]]:
    """One candidate: fit its linear maps on the first ``samples`` of ``fit_ids`` and return ``meter``'s healed
    estimate with the maps. For many candidates build one :class:`HealedFitness` (it keeps the fitting samples'
    layer inputs) instead."""
    fitness = HealedFitness(meter, fit_ids, ridge=ridge, samples=samples, streams=streams)
    removed = list(removed)
    return fitness(removed), fitness.runs(removed)
