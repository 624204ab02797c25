"""Measured loss of removal sets, with standard errors: what a removal choice is finally judged by.

The loss of the model with the blocks S removed is estimated on n fixed token windows w = 1..n: ℓ_w(S) is the mean
next-token NLL over window w, and

    L̂(S) = (1/n) Σ_w ℓ_w(S),     se(S) = sd_w(ℓ_w(S)) / √n                                          (1)

with the windows, not the tokens, as the independent units (tokens inside a window are correlated). Two removal
sets measured on the same windows differ by

    D̂ = L̂(S) − L̂(S'),           se(D̂) = sd_w(ℓ_w(S) − ℓ_w(S')) / √n                                (2)

which is far smaller than either error alone: how hard a window is cancels in the difference.

Forward passes start mid-stack: the input of every decoder layer of the unmodified model is computed once and
kept, and a removal whose first touched layer is l runs layers l, l+1, ... only, from the kept input of layer l
(adapters opt in through :meth:`~lmshrink.core.ArchitectureAdapter.layer_list`; others run whole passes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..torch_utils import frozen
from .loss import per_sample_loss
from .midstack import LayerInputs, RemovalPass, loss_from_hidden, removed_in


@dataclass(frozen=True)
class LossEstimate:
    """Per-window losses of one removal set, with the mean and standard error of (1)."""

    per_window: np.ndarray

    @property
    def windows(self) -> int:
        return int(self.per_window.size)

    @property
    def mean(self) -> float:
        return float(self.per_window.mean())

    @property
    def se(self) -> float:
        n = self.windows
        return float(self.per_window.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf

    def minus(self, other: LossEstimate) -> tuple[float, float]:
        """``(D̂, se(D̂))`` of (2): this loss minus ``other``, paired over the same windows."""
        if other.windows != self.windows:
            raise ValueError(f"paired difference needs the same windows ({self.windows} vs {other.windows})")
        d = self.per_window - other.per_window
        se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.inf
        return float(d.mean()), se

    def to_dict(self) -> dict[str, float]:
        return {"loss": self.mean, "se": self.se, "windows": self.windows}


class RemovalLoss:
    """Measured LM loss of ``model`` with sets of blocks gated off, on the fixed windows ``input_ids``.

    ``input_ids`` is a (windows, seq_len) LongTensor. Call the object with the removed block indices to get a
    :class:`LossEstimate`; results are memoised by set, and :attr:`evaluations` counts the distinct sets measured
    (the budget unit of searches). The unmodified model's per-layer inputs are kept in memory
    (layers × windows × seq_len × hidden floats) so that every measurement starts at its first removed layer.
    """

    def __init__(self, model: Any, adapter: Any, input_ids: Any, *, granularity: str = "layer",
                 batch_size: int = 8, progress: bool = False) -> None:
        self.model, self.adapter, self.granularity = model, adapter, granularity
        self.input_ids = input_ids
        self.batch_size = max(int(batch_size), 1)
        self.progress = progress
        self.blocks = adapter.blocks(model, granularity)
        self.evaluations = 0
        self._memo: dict[tuple[Any, ...], LossEstimate] = {}
        #: the healings measured, kept referenced so that the identities in their memo keys stay theirs
        self._healings: dict[tuple[Any, ...], list[Any]] = {}
        #: the unmodified model's layer inputs on the windows (:class:`~.midstack.LayerInputs`); None for an
        #: adapter without a layer list, whose measurements run whole passes
        self.streams: Any = None
        self.base = self._measure_base()

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def tokens(self) -> int:
        """Tokens per measurement (windows × seq_len)."""
        return int(self.input_ids.numel())

    def __call__(self, removed: Iterable[int]) -> LossEstimate:
        return self._lookup("plain", removed, None)

    def healed(self, removed: Iterable[int], runs: Sequence[Any]) -> LossEstimate:
        """The loss with ``removed`` gated off and the linear-healing maps of ``runs`` applied
        (:class:`lmshrink.heal.linear.HealedRun`, fitted for this set). Memoised per set and healing: the same
        ``runs`` objects measure once, another fit of the same set (other calibration samples) measures again."""
        return self._lookup("healed", removed, list(runs))

    def _lookup(self, kind: str, removed: Iterable[int], runs: list[Any] | None) -> LossEstimate:
        s = frozenset(int(i) for i in removed)
        if not s:
            return self.base
        key: tuple[Any, ...] = (kind, s) if runs is None else (kind, s, tuple(id(r) for r in runs))
        if runs is not None:
            self._healings.setdefault(key, runs)
        if key not in self._memo:
            bad = [i for i in s if not 0 <= i < self.num_blocks]
            if bad:
                raise IndexError(f"block index {bad[0]} is out of range for {self.num_blocks} blocks")
            self._memo[key] = LossEstimate(self._measure(sorted(s), runs))
            self.evaluations += 1
        return self._memo[key]

    def measured(self, removed: Iterable[int]) -> bool:
        """Whether the set was measured already, unhealed (a call costs nothing then)."""
        s = frozenset(int(i) for i in removed)
        return not s or ("plain", s) in self._memo

    def remember(self, removed: Iterable[int], estimate: LossEstimate) -> None:
        """Take ``estimate`` as the unhealed measurement of ``removed`` on these windows (one made before, e.g. kept
        in a saved run), so it is not measured again; it does not count as an evaluation."""
        if estimate.windows != self.input_ids.shape[0]:
            raise ValueError(f"a remembered measurement needs one loss per window ({estimate.windows} given for "
                             f"{self.input_ids.shape[0]} windows)")
        s = frozenset(int(i) for i in removed)
        if s:
            self._memo[("plain", s)] = estimate

    def many(self, sets: Sequence[Sequence[int]], desc: str = "measuring removals") -> list[LossEstimate]:
        """Measure several sets, with a progress bar over the ones not measured yet."""
        todo = [s for s in sets if not self.measured(s)]
        for s in tqdm(todo, desc=desc, disable=not self.progress or not todo, leave=False):
            self(s)
        return [self(s) for s in sets]

    # --- measurement ----------------------------------------------------------------------------------------
    def _batches(self) -> list[slice]:
        """Slices of ``batch_size`` windows: those of the kept layer inputs when there are some."""
        if self.streams is not None:
            return self.streams.batches
        n = self.input_ids.shape[0]
        return [slice(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]

    def _measure_base(self) -> LossEstimate:
        with frozen(self.model), torch.no_grad():
            if self.adapter.layer_list(self.model) is None:
                out = [per_sample_loss(self.model, self.input_ids[batch]) for batch in self._batches()]
            else:  # one pass keeps every layer's input; the loss is the head on the last layer's output
                self.streams = LayerInputs(self.model, self.adapter, self.input_ids, self.batch_size)
                last = self.streams.num_layers
                out = [loss_from_hidden(self.model, self.adapter, last, hidden, self.streams.ids(k))
                       for k, hidden in enumerate(self.streams.at(last))]
        return LossEstimate(torch.cat(out).double().cpu().numpy())

    def _measure(self, removed: Sequence[int], runs: list[Any] | None = None) -> np.ndarray:
        plan = RemovalPass.of(self.blocks, removed, runs, self.granularity)
        out = []
        with frozen(self.model), torch.no_grad(), \
                removed_in(self.model, self.adapter, self.blocks, removed, self.granularity, runs):
            for k, batch in enumerate(self._batches()):
                ids = self.input_ids[batch]
                if self.streams is not None:
                    out.append(loss_from_hidden(self.model, self.adapter, plan.start, plan.hidden(self.streams, k),
                                                ids, plan.skip))
                else:
                    out.append(per_sample_loss(self.model, ids))
        return torch.cat(out).double().cpu().numpy()
