"""``pairs``: a QUBO fitted exactly to measured single and pairwise removals.

d_i = L(without i) − L and d_ij = L(without i, j) − L on calibration text. With linear d_i and off-diagonal
Q_ij = (d_ij − d_i − d_j)/2 (Q symmetric, so the pair counts twice), the energy of removing {i} is d_i and of
removing {i, j} is d_ij: exact for one or two removals, a pairwise-interaction model beyond. N(N+1)/2 forward
passes on ``samples`` calibration samples, cached on disk.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..cache import cached_arrays
from ..core import BinaryQuadraticProblem, Objective, Option
from ..plugins import hookimpl
from .common import frozen, measurement_key, problem_metadata


def removal_losses(model: Any, adapter: Any, input_ids: Any, granularity: str, batch_size: int,
                   progress: bool) -> dict[str, np.ndarray]:
    """Base loss, single-removal losses (N,) and pair-removal losses (N × N, symmetric, NaN diagonal)."""
    from tqdm.auto import tqdm

    from ..evaluate.loss import calibration_loss

    n = len(adapter.blocks(model, granularity))
    jobs = [()] + [(i,) for i in range(n)] + list(itertools.combinations(range(n), 2))
    single = np.zeros(n)
    pair = np.full((n, n), np.nan)
    base = 0.0
    with frozen(model):
        for removed in tqdm(jobs, desc="pairwise removals", disable=not progress, leave=False):
            loss = calibration_loss(model, input_ids, adapter=adapter, removed=removed, granularity=granularity,
                                    batch_size=batch_size)
            if not removed:
                base = loss
            elif len(removed) == 1:
                single[removed[0]] = loss
            else:
                pair[removed] = pair[removed[::-1]] = loss
    return {"base": np.array(base), "single": single, "pair": pair}


class PairsObjective(Objective):
    """QUBO fitted to measured single and pairwise removal losses (exact for M ≤ 2)."""

    name = "pairs"
    description = "QUBO from measured loss increases of every single and pairwise removal (exact for M ≤ 2)."
    options = {
        "granularity": Option("layer", "layer, or sublayer (attention and MLP apart)", str),
        "samples": Option(4, "calibration samples per measurement (the first ones)", int),
        "batch_size": Option(8, "samples per forward pass", int),
        "progress": Option(True, "show a progress bar", bool),
    }

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
        meta.update({"base_loss": base, "cached_measurement": cached, "single_loss_increase": d.tolist()})
        return BinaryQuadraticProblem([b.name for b in blocks], d, quad, 0.0, [], meta)


@hookimpl
def lmshrink_register_objectives(register: Any) -> None:
    register(PairsObjective)
