"""``pairs``: a QUBO fitted exactly to measured single and pairwise removals.

d_i = L(without i) − L and d_ij = L(without i, j) − L on calibration text. With linear d_i and off-diagonal
Q_ij = (d_ij − d_i − d_j)/2 (Q symmetric, so the pair counts twice), the energy of removing {i} is d_i and of
removing {i, j} is d_ij: exact for one or two removals, a pairwise-interaction model beyond.

That takes N(N+1)/2 loss measurements on ``samples`` calibration samples, cached on disk. Where the adapter can
start a forward pass mid-stack, a removal whose first block sits in layer L reuses the cached input of layer L,
and the pairs (i, j) reuse the hidden states of the run without i: about N³/6 layer evaluations instead of N³/2.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..cache import cached_arrays, measurement_metadata
from ..core import BinaryQuadraticProblem, Gates, Objective, option
from ..torch_utils import frozen
from .common import measurement_key, problem_metadata, require_finite


def removal_losses(model: Any, adapter: Any, input_ids: Any, granularity: str, batch_size: int,
                   progress: bool) -> dict[str, np.ndarray]:
    """Base loss, single-removal losses (N,) and pair-removal losses (N × N, symmetric, NaN diagonal)."""
    n = len(adapter.blocks(model, granularity))
    total = 1 + n + n * (n - 1) // 2
    bar = tqdm(total=total * ((input_ids.shape[0] + batch_size - 1) // batch_size), desc="pairwise removals",
               disable=not progress, leave=False)
    measure = _midstack_losses if adapter.layer_list(model) is not None else _full_losses
    sums = {"base": 0.0, "single": np.zeros(n), "pair": np.zeros((n, n))}
    with frozen(model), bar:
        for start in range(0, input_ids.shape[0], batch_size):
            batch = input_ids[start : start + batch_size]
            base, single, pair = measure(model, adapter, batch, granularity, bar.update)
            sums["base"] += base * len(batch)
            sums["single"] += single * len(batch)
            sums["pair"] += pair * len(batch)
    m = input_ids.shape[0]
    pair = sums["pair"] / m
    measured = np.concatenate([[sums["base"]], sums["single"], pair[np.triu_indices(n, 1)]])
    require_finite(measured, "the removal losses", model, adapter, input_ids, granularity)
    np.fill_diagonal(pair, np.nan)
    return {"base": np.array(sums["base"] / m), "single": sums["single"] / m, "pair": pair}


def _full_losses(model, adapter, ids, granularity, tick):
    """Every measurement as a whole gated forward pass (any adapter)."""
    from ..evaluate.loss import calibration_loss

    n = len(adapter.blocks(model, granularity))
    single, pair = np.zeros(n), np.zeros((n, n))
    loss = lambda removed: calibration_loss(model, ids, adapter=adapter, removed=removed,  # noqa: E731
                                            granularity=granularity, batch_size=len(ids))
    base = loss(())
    tick()
    for i in range(n):
        single[i] = loss((i,))
        tick()
    for i, j in itertools.combinations(range(n), 2):
        pair[i, j] = pair[j, i] = loss((i, j))
        tick()
    return base, single, pair


def _midstack_losses(model, adapter, ids, granularity, tick):
    """The same numbers, starting each pass at the first layer that a removal touches."""
    import torch

    from ..evaluate.loss import per_sample_loss
    from ..evaluate.midstack import capture_layer_inputs, loss_from_hidden

    blocks = adapter.blocks(model, granularity)
    n = len(blocks)
    single, pair = np.zeros(n), np.zeros((n, n))
    gates = Gates(torch.ones(n))

    def skip_to(b):
        # a gated-off whole layer passes its input through: start after it
        return blocks[b].layer + 1 if blocks[b].kind == "layer" else blocks[b].layer

    with torch.no_grad(), adapter.gate(model, gates, granularity):
        base_inputs: dict[int, torch.Tensor] = {}
        with capture_layer_inputs(model, adapter, base_inputs):
            base = float(per_sample_loss(model, ids).mean())
        tick()
        for a in range(n):
            la = blocks[a].layer
            gates.values = torch.ones(n)
            gates.values[a] = 0
            after_a: dict[int, torch.Tensor] = {}
            start = skip_to(a)
            with capture_layer_inputs(model, adapter, after_a):
                single[a] = float(loss_from_hidden(model, adapter, start, base_inputs[la], ids).mean())
            tick()
            for b in range(a + 1, n):
                gates.values = torch.ones(n)
                gates.values[[a, b]] = 0
                lb = blocks[b].layer
                if lb in after_a:  # the run without a reached layer lb: continue from there
                    hidden, s = after_a[lb], skip_to(b)
                else:  # b shares a's layer and that layer ran in full: start at it, both gated off
                    hidden, s = base_inputs[la], la
                pair[a, b] = pair[b, a] = float(loss_from_hidden(model, adapter, s, hidden, ids).mean())
                tick()
    return base, single, pair


@dataclass(frozen=True)
class PairsOptions:
    granularity: str = option("layer", "layer, or sublayer (attention and MLP apart)")
    samples: int = option(4, "calibration samples per measurement (the first ones)")
    batch_size: int = option(8, "samples per forward pass")
    progress: bool = option(True, "show a progress bar")


class PairsObjective(Objective):
    """QUBO fitted to measured single and pairwise removal losses (exact for M ≤ 2)."""

    name = "pairs"
    description = "QUBO from measured loss increases of every single and pairwise removal (exact for M ≤ 2)."
    options = PairsOptions

    def build_problem(self, model, adapter, calibration, *, granularity, samples, batch_size, progress):
        blocks = adapter.blocks(model, granularity)
        calib = calibration.subset(samples)
        key = measurement_key(model, adapter, calib, granularity, what="pair_losses")
        arrays, cached = cached_arrays(
            "pairs", key, lambda: removal_losses(model, adapter, calib.input_ids, granularity, batch_size, progress)
        )
        base = float(arrays["base"])
        d = arrays["single"] - base
        dij = arrays["pair"] - base
        quad = (dij - d[:, None] - d[None, :]) / 2
        np.fill_diagonal(quad, 0.0)
        meta = problem_metadata(model, adapter, calib, self.name, granularity, {"samples": samples}, blocks)
        meta.update({"base_loss": base, **measurement_metadata(arrays, cached), "single_loss_increase": d.tolist()})
        return BinaryQuadraticProblem([b.name for b in blocks], d, quad, 0.0, [], meta)
