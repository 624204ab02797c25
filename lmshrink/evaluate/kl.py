"""KL fitness of removal sets: how far the pruned model's next-token distributions move from the dense model's.

For a removal set S, window w = 1..n and predicted position t of that window, let P = p(· | t) be the dense
model's next-token distribution over the vocabulary V and Q = q_S(· | t) the pruned model's. The fitness is

    ℓ_w(S) = (1/T) Σ_t KL(P_t ‖ Q_t),      KL(P ‖ Q) = Σ_v p_v (log p_v − log q_v)                          (1)

per window, with the same estimate, standard error and paired difference as the measured CE loss
(:class:`~lmshrink.evaluate.measured.LossEstimate`, equations (1) and (2) of :mod:`lmshrink.evaluate.measured`).
Unlike CE, (1) is 0 for the dense model and measures only what the removal changed, not how hard the text is.

**The dense summary (top-k, exact on the top k).** Keeping P whole costs windows × T × |V| numbers; instead, per
token, the dense reference keeps the k most probable tokens K (their ids and log p_v) and the log of the rest's mass,
log p_R = logsumexp_{v∉K} log p_v. The KL is then computed on the k + 1 buckets K ∪ {R}:

    KL_k(P ‖ Q) = Σ_{v∈K} p_v (log p_v − log q_v) + p_R (log p_R − log q_R),     q_R = Σ_{v∉K} q_v          (2)

(q_R from the pruned model's full logits, computed as a log-sum-exp; the last term is 0 when p_R = 0). (2) is the
KL of the two distributions coarsened to k + 1 outcomes, so by the log-sum inequality

    0 ≤ KL(P ‖ Q) − KL_k(P ‖ Q) = p_R · KL(P_R/p_R ‖ Q_R/q_R) ≤ p_R · log(q_R / min_{v∉K} q_v)              (3)

(P_R, Q_R the two distributions restricted to the rest): a lower bound, exact when k = |V| (then p_R = 0), never
larger for larger k (a finer partition), and off by at most the rest's dense mass p_R times a log-ratio. The
reference also records the mean of p_R (:attr:`DenseReference.rest_mass`) so a report can say how much mass the
top k leave out.

**Passes.** The dense model's input to every decoder layer on the windows is kept once
(:class:`~lmshrink.evaluate.midstack.LayerInputs`, shared with the reference); a candidate's pass starts at its first
removed unit (layer or sub-layer) from that kept input (:class:`~lmshrink.evaluate.midstack.RemovalPass`), with the
blocks gated off (no model copy), and gives the KL (2) and the CE of the same logits. A measure can run on a range of
windows [a, b) (:meth:`RemovalKL.windows`), so a race (:mod:`lmshrink.evaluate.racing`) can give candidates more
windows in stages; every window measured for a set is kept, and a later call measures only the windows missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import LmshrinkError
from ..data import TokenWindows
from ..torch_utils import frozen
from .loss import model_inputs, token_nll
from .measured import LossEstimate
from .midstack import LayerInputs, RemovalPass, logits_from_hidden, removed_in

#: what :meth:`RemovalKL.windows` can return per window
MEASURES = ("kl", "ce")


def _scored(logits: Any) -> Any:
    """Logits in the precision the KL is computed in: float64 for float32/float64 models, float32 for half."""
    return logits.double() if logits.dtype in (torch.float32, torch.float64) else logits.float()


def summarize(logits: Any, k: int) -> tuple[Any, Any, Any]:
    """The top-k summary of the distributions ``softmax(logits)`` (``(..., |V|)``): the ids of the k most probable
    tokens (``(..., k)``, int64), their log-probabilities and the log of the rest's mass (float64; −inf when
    k = |V|)."""
    logp = torch.log_softmax(_scored(logits), dim=-1)
    k = min(int(k), logp.shape[-1])
    top, idx = logp.topk(k, dim=-1)
    if k == logp.shape[-1]:
        rest = torch.full(logp.shape[:-1], -math.inf, dtype=torch.float64, device=logp.device)
    else:
        rest = logp.scatter(-1, idx, -math.inf).logsumexp(dim=-1).double()
    return idx, top.double(), rest


def topk_kl(logits: Any, idx: Any, top: Any, rest: Any) -> Any:
    """KL_k(P ‖ Q) of (2) per position (float64, ``logits.shape[:-1]``): P given by its top-k summary
    (:func:`summarize`), Q = ``softmax(logits)``."""
    logq = torch.log_softmax(_scored(logits), dim=-1)
    q_top = logq.gather(-1, idx).double()
    kl = (top.exp() * (top - q_top)).sum(dim=-1)
    if idx.shape[-1] < logq.shape[-1]:
        q_rest = logq.scatter(-1, idx, -math.inf).logsumexp(dim=-1).double()
        p_rest = rest.exp()
        kl = kl + torch.where(p_rest > 0, p_rest * (rest - q_rest), torch.zeros_like(p_rest))
    return kl


def full_kl(dense_logits: Any, logits: Any) -> Any:
    """KL(P ‖ Q) of (1) over the whole vocabulary, per position, float64 (for checks: it needs the dense logits)."""
    logp = torch.log_softmax(dense_logits.double(), dim=-1)
    logq = torch.log_softmax(logits.double(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(dim=-1)


class DenseReference(TokenWindows):
    """The dense model's next-token distributions on fixed windows, summarised by their top ``k`` (docstring, (2)).

    ``input_ids`` is (windows, seq_len). Built from one pass of the dense model that also keeps every decoder layer's
    input (:attr:`streams`, a :class:`~lmshrink.evaluate.midstack.LayerInputs`; pass ``streams`` to reuse one
    computed on these windows); for an adapter without a layer list, from whole passes (and :attr:`streams` is None).
    Keeps windows × (seq_len − 1) × k ids and float64 log-probabilities, and the rest's log-mass, on the model's
    device; :attr:`ce` is the dense model's per-window CE.
    """

    def __init__(self, model: Any, adapter: Any, input_ids: Any, *, k: int = 64, batch_size: int = 8,
                 streams: Any = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise LmshrinkError(f"The top-k of the dense reference must be a whole number ≥ 1, not {k!r}.")
        if input_ids.dim() != 2 or input_ids.shape[1] < 2:
            raise LmshrinkError("The KL needs windows of at least two tokens (a token to predict from and one to "
                                f"predict), not shape {tuple(input_ids.shape)}.")
        self.model, self.adapter, self.input_ids = model, adapter, input_ids
        self.batch_size = max(int(batch_size), 1)
        if streams is not None and tuple(streams.input_ids.shape) != tuple(input_ids.shape):
            raise ValueError(f"streams were computed on windows of shape {tuple(streams.input_ids.shape)}, not "
                             f"{tuple(input_ids.shape)}")
        if streams is None and adapter.layer_list(model) is not None:
            streams = LayerInputs(model, adapter, input_ids, self.batch_size)
        self.streams = streams
        idx, top, rest, ce = [], [], [], []
        with frozen(model), torch.no_grad():
            for k_batch, rows in enumerate(self.batches):
                ids = input_ids[rows]
                if streams is not None:
                    last = streams.num_layers
                    logits = logits_from_hidden(model, adapter, last, streams.at(last)[k_batch])
                else:
                    logits = model(input_ids=model_inputs(model, ids), use_cache=False).logits
                logits = logits[:, :-1]
                for row in range(logits.shape[0]):  # one window at a time: the vocabulary-wide temporaries stay small
                    i, t, r = summarize(logits[row], k)
                    idx.append(i)
                    top.append(t)
                    rest.append(r)
                ce.append(token_nll(logits, ids).mean(dim=1))
        self.k = int(idx[0].shape[-1])
        self.vocab_size = int(logits.shape[-1])
        #: (windows, seq_len − 1, k) token ids and log p of the dense model's top k; (windows, seq_len − 1) log p_R
        self.top_ids = torch.stack(idx)
        self.top_logp = torch.stack(top)
        self.rest_logp = torch.stack(rest)
        #: the dense model's per-window CE (float64)
        self.ce = torch.cat(ce).double().cpu().numpy()

    @property
    def batches(self) -> list[slice]:
        """Slices of windows the passes run in: the kept streams' batches when there are some."""
        if self.streams is not None:
            return list(self.streams.batches)
        n = self.input_ids.shape[0]
        return [slice(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]

    @property
    def rest_mass(self) -> float:
        """The mean, over all predicted positions, of the dense mass p_R the top k leave out (0 when k = |V|)."""
        return float(self.rest_logp.exp().mean())

    def kl(self, logits: Any, windows: slice) -> Any:
        """Per-position KL_k (2) of ``logits`` (the predicting positions of ``windows``, ``(b − a, seq_len − 1,
        |V|)``) from the dense model, float64."""
        a = windows.start
        rows = [topk_kl(logits[j], self.top_ids[a + j], self.top_logp[a + j], self.rest_logp[a + j])
                for j in range(logits.shape[0])]
        return torch.stack(rows)


class RemovalKL(TokenWindows):
    """KL fitness (1)–(2) of removal sets of ``model``, with the CE of the same passes; mirrors
    :class:`~lmshrink.evaluate.measured.RemovalLoss`.

    ``removed`` is a collection of block indices (``adapter.blocks(model, granularity)``; ``granularity``
    ``layer`` or ``sublayer``). ``meter(removed)`` is the KL estimate on all windows
    (:class:`~lmshrink.evaluate.measured.LossEstimate`: per-window values, mean, se, paired ``minus``),
    ``meter.cross_entropy(removed)`` the CE of the same passes, ``meter.healed(removed, runs)`` the KL with fitted
    linear maps applied by hooks; ``meter.windows(removed, a, b)`` measures windows [a, b) only (what a race
    uses). Every measured window is kept per set (and per healing: two fits of one set are two measurements), so
    asking again costs nothing and a longer range measures only the windows missing.

    Counters: :attr:`evaluations` — distinct sets measured (the budget unit of searches, as RemovalLoss);
    :attr:`windows_measured` — windows passed through the network, over all sets; :attr:`tokens_spent` — those
    windows' tokens. ``reference`` (a :class:`DenseReference` on these windows) may be shared between meters of
    different granularities.
    """

    def __init__(self, model: Any, adapter: Any, input_ids: Any = None, *, granularity: str = "layer", k: int = 64,
                 batch_size: int = 8, reference: DenseReference | None = None, progress: bool = False) -> None:
        if reference is None:
            if input_ids is None:
                raise ValueError("RemovalKL needs input_ids or a DenseReference")
            reference = DenseReference(model, adapter, input_ids, k=k, batch_size=batch_size)
        elif input_ids is not None and tuple(input_ids.shape) != tuple(reference.input_ids.shape):
            raise ValueError("input_ids differ from the reference's windows")
        self.reference = reference
        self.model, self.adapter, self.granularity = model, adapter, granularity
        self.input_ids = reference.input_ids
        self.streams = reference.streams
        self.progress = progress
        self.blocks = adapter.blocks(model, granularity)
        self.evaluations = 0
        self.windows_measured = 0
        n = self.num_windows
        #: the dense model: KL 0 on every window, and its CE
        self.base = LossEstimate(np.zeros(n))
        self.base_ce = LossEstimate(reference.ce.copy())
        #: (2, windows): KL and CE, NaN = not yet; keyed by ("plain", set) or ("healed", set, the runs' identities)
        self._values: dict[tuple[Any, ...], np.ndarray] = {}
        #: the healings measured, kept referenced so that the identities in their keys stay theirs
        self._healings: dict[tuple[Any, ...], list[Any]] = {}

    # --- the RemovalLoss interface ------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)


    @property
    def tokens_spent(self) -> int:
        """Tokens passed through the network by all measurements so far."""
        return self.windows_measured * self.seq_len

    def __call__(self, removed: Iterable[int]) -> LossEstimate:
        """The KL estimate of ``removed`` on all windows."""
        return self.estimate(removed)

    def cross_entropy(self, removed: Iterable[int], runs: Sequence[Any] | None = None) -> LossEstimate:
        """The CE of ``removed`` (healed by ``runs`` when given) on all windows, from the same passes as the KL."""
        return self.estimate(removed, runs=runs, measure="ce")

    def healed(self, removed: Iterable[int], runs: Sequence[Any]) -> LossEstimate:
        """The KL with ``removed`` gated off and the linear-healing maps of ``runs`` applied
        (:class:`lmshrink.heal.linear.HealedRun`, fitted for this set); each healing of a set measured apart."""
        return self.estimate(removed, runs=runs)

    def estimate(self, removed: Iterable[int], *, runs: Sequence[Any] | None = None,
                 measure: str = "kl") -> LossEstimate:
        """:meth:`windows` on all windows, as a :class:`LossEstimate`."""
        return LossEstimate(self.windows(removed, 0, self.num_windows, runs=runs, measure=measure))

    def measured(self, removed: Iterable[int], a: int = 0, b: int | None = None) -> bool:
        """Whether windows [a, b) (all by default) of ``removed`` were measured already, unhealed."""
        s = self._set(removed)
        if not s:
            return True
        values = self._values.get(("plain", s))
        return values is not None and not np.isnan(values[0, a : self.num_windows if b is None else b]).any()

    def many(self, sets: Sequence[Sequence[int]], desc: str = "measuring removals") -> list[LossEstimate]:
        """The KL of several sets, with a progress bar over the ones not measured yet."""
        todo = [s for s in sets if not self.measured(s)]
        for s in tqdm(todo, desc=desc, disable=not self.progress or not todo, leave=False):
            self(s)
        return [self(s) for s in sets]

    def windows(self, removed: Iterable[int], a: int, b: int, *, runs: Sequence[Any] | None = None,
                measure: str = "kl") -> np.ndarray:
        """Per-window ``measure`` ("kl" or "ce") of ``removed`` on windows [a, b), healed by ``runs`` when given;
        only the windows not measured before for this set run."""
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, not {measure!r}")
        n = self.num_windows
        if not 0 <= a <= b <= n:
            raise IndexError(f"windows [{a}, {b}) are out of range for {n} windows")
        s = self._set(removed)
        row = MEASURES.index(measure)
        if not s:
            return (self.base if measure == "kl" else self.base_ce).per_window[a:b].copy()
        key: tuple[Any, ...] = ("healed", s, tuple(id(r) for r in runs)) if runs else ("plain", s)
        if runs:
            self._healings.setdefault(key, list(runs))
        values = self._values.get(key)
        if values is None:
            values = self._values[key] = np.full((2, n), np.nan)
            self.evaluations += 1
        missing = np.flatnonzero(np.isnan(values[0, a:b])) + a
        for lo, hi in _ranges(missing):
            values[:, lo:hi] = self._measure(sorted(s), lo, hi, list(runs) if runs else None)
            self.windows_measured += hi - lo
        return values[row, a:b].copy()

    # --- measurement ----------------------------------------------------------------------------------------
    def _set(self, removed: Iterable[int]) -> frozenset[int]:
        s = frozenset(int(i) for i in removed)
        bad = [i for i in s if not 0 <= i < self.num_blocks]
        if bad:
            raise IndexError(f"block index {bad[0]} is out of range for {self.num_blocks} blocks")
        return s

    def _pieces(self, a: int, b: int) -> Iterator[tuple[int, slice, slice]]:
        """``(batch, rows inside the batch, windows)`` covering windows [a, b) in the reference's batches."""
        for k, batch in enumerate(self.reference.batches):
            lo, hi = max(a, batch.start), min(b, batch.stop)
            if lo < hi:
                yield k, slice(lo - batch.start, hi - batch.start), slice(lo, hi)

    def _measure(self, removed: Sequence[int], a: int, b: int, runs: list[Any] | None) -> np.ndarray:
        """(2, b − a): per-window KL and CE of windows [a, b)."""
        plan = RemovalPass.of(self.blocks, removed, runs, self.granularity)
        kl, ce = [], []
        with frozen(self.model), torch.no_grad(), \
                removed_in(self.model, self.adapter, self.blocks, removed, self.granularity, runs):
            for k, rows, wins in self._pieces(a, b):
                ids = self.input_ids[wins]
                if self.streams is not None:
                    logits = logits_from_hidden(self.model, self.adapter, plan.start,
                                                plan.hidden(self.streams, k, rows), plan.skip)
                else:
                    logits = self.model(input_ids=model_inputs(self.model, ids), use_cache=False).logits
                logits = logits[:, :-1]
                kl.append(self.reference.kl(logits, wins).mean(dim=1))
                ce.append(token_nll(logits, ids).mean(dim=1))
        return np.stack([torch.cat(kl).double().cpu().numpy(), torch.cat(ce).double().cpu().numpy()])


def _ranges(indices: np.ndarray) -> list[tuple[int, int]]:
    """Sorted indices as maximal ranges [lo, hi): [2, 3, 4, 7] → [(2, 5), (7, 8)]."""
    out: list[tuple[int, int]] = []
    for i in indices.tolist():
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out
