"""Compression applied from a :class:`~lmshrink.core.plan.RankPlan`: each factored matrix of the plan replaced by its
rank-r factors (plain low-rank pair or PivGa), dense ones left alone, and the structural transform recorded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import LmshrinkError
from ..core.plan import RankPlan
from ..core.records import attributes
from .factoring import SvdFactors
from .io import record_transform
from .low_rank import TRANSFORM, LowRankLinear, replace_module
from .pivga import TRANSFORM as PIVGA_TRANSFORM
from .pivga import PivGaLinear


@dataclass
class CompressionSummary:
    """What :func:`apply_plan` did, per matrix and in total."""

    ranks: dict[str, int]
    kinds: dict[str, str]  # "low_rank", "pivga" or "dense"
    params_plain: int  # numbers stored had every factored matrix been a plain low-rank pair
    params_pivga: int  # numbers stored had every factored matrix been gauge-fixed
    params_stored: int  # numbers actually stored (weights of the decomposed matrices, no biases)
    params_dense: int  # m·n summed: the decomposed matrices before compression
    dense_for_speed: list[str] = field(default_factory=list)  # kept dense by the time break-even (break_even=)

    def to_dict(self) -> dict[str, Any]:
        return {
            **attributes(self, "params_plain", "params_pivga", "params_stored", "params_dense"),
            "ratio_stored": self.params_stored / max(self.params_dense, 1),
            "ratio_plain": self.params_plain / max(self.params_dense, 1),
            "ratio_pivga": self.params_pivga / max(self.params_dense, 1),
            "dense_matrices": sorted(k for k, v in self.kinds.items() if v == "dense"),
            "dense_for_speed": sorted(self.dense_for_speed),
            "ranks": self.ranks,
            "kinds": self.kinds,
        }


def check_plan(plan: RankPlan, factors: SvdFactors) -> None:
    """Refuse a plan that names a matrix the factors lack, or gives it another shape."""
    for m in plan.matrices:
        f = factors.factors.get(m.name)
        if f is None:
            raise LmshrinkError(f"The rank plan names {m.name}, which is not among the decomposed matrices.")
        if tuple(f.shape) != tuple(m.shape):
            raise LmshrinkError(f"The rank plan gives {m.name} the shape {list(m.shape)}, the model has "
                                f"{list(f.shape)}.")


@torch.no_grad()
def apply_plan(model: nn.Module, factors: SvdFactors, plan: RankPlan, *,
               dtype: torch.dtype | None = None, break_even: Any = None) -> CompressionSummary:
    """Replace each factored matrix of ``plan`` by its rank-r factorization (plain or PivGa) in place, keep the dense
    ones unchanged, and record the transform so that :func:`lmshrink.compress.io.save_compressed` can save it.

    ``break_even`` (a :class:`~lmshrink.compress.break_even.TimeBreakEven`, off by default) also keeps dense every
    matrix whose rank is above its shape's measured time break-even; the summary names them (``dense_for_speed``).
    """
    check_plan(plan, factors)
    kinds = dict(plan.kinds)
    for_speed: list[str] = []
    layers: dict[str, int] = {}
    plain = piv = stored = dense_total = 0
    for m in plan.matrices:
        rows, cols = m.shape
        r = m.rank
        dense_total += rows * cols
        if not m.dense and break_even is not None and break_even.keeps_dense(rows, cols, r):
            kinds[m.name] = "dense"
            for_speed.append(m.name)
        if m.dense or m.name in for_speed:
            plain += rows * cols
            piv += rows * cols
            stored += rows * cols
            continue
        f = factors.factors[m.name]
        old = model.get_submodule(m.name)
        layer_dtype = dtype or old.weight.dtype
        A, B = f.truncated(r)
        plain += min(r * (rows + cols), rows * cols)
        piv += r * (rows + cols) - r * r
        if plan.pivga:
            new = PivGaLinear.from_factors(A, B, f.orthonormal_left(r), f.bias, dtype=layer_dtype)
        else:
            new = LowRankLinear.from_factors(A, B, f.bias, dtype=layer_dtype)
        layers[m.name] = r
        stored += sum(p.numel() for n_, p in new.named_parameters() if n_ != "bias")
        replace_module(model, m.name, new.to(old.weight.device))
    if layers:
        record_transform(model, {"type": PIVGA_TRANSFORM if plan.pivga else TRANSFORM, "layers": layers})
    return CompressionSummary(plan.ranks, kinds, plain, piv, stored, dense_total, for_speed)


def compress_model(model: nn.Module, factors: SvdFactors, ranks: Mapping[str, int], *, pivga: bool = False,
                   dtype: torch.dtype | None = None) -> CompressionSummary:
    """:func:`apply_plan` for ranks given as name → rank: a rank at or above the break-even rank of the cost model
    (r(m+n) ≥ mn, or with PivGa r = min(m, n)) keeps the original dense layer unchanged."""
    shapes = {name: f.shape for name, f in factors.factors.items()}
    return apply_plan(model, factors, RankPlan.from_ranks(shapes, ranks, pivga=pivga), dtype=dtype)


__all__ = ["CompressionSummary", "apply_plan", "check_plan", "compress_model"]
