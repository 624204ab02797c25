"""LoRA on the factors of factored layers: a trainable low-rank delta B·A added to each factor of every
:class:`~lmshrink.compress.remote.modeling_lmshrink.LowRankLinear` (``left``, ``right``) and
:class:`~lmshrink.compress.remote.modeling_lmshrink.PivGaLinear` (``rows``, ``coef``), folded into the stored factor
afterwards, so that a healed model keeps its layer types, shapes and parameter count.

The deltas are torch parametrizations (``torch.nn.utils.parametrize``): while they are attached, reading
``layer.left`` gives ``left + scale·B·A``, so the layer's own forward trains them. Fold them
(:func:`fold_factor_deltas`) before evaluating without gradients: a PivGa layer caches its expanded left factor
between calls with no autograd, keyed on the stored tensor, which a delta recomputed on each read is not.

PivGa: training ``rows`` and ``coef`` (by deltas, or directly with KD's method ``full``) keeps a valid PivGa layer.
Any ``rows`` and ``coef`` give the rank-r weight W[P] = rows, W[P̄] = coef·rows with the same pivots P; the gauge
E[P] = I is only a parametrization of the rank-r matrices whose rows P are independent, not a constraint on them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..compress.remote.modeling_lmshrink import LowRankLinear, PivGaLinear

#: the factor parameters trained in each factored layer type
FACTORS: dict[type[nn.Module], tuple[str, ...]] = {LowRankLinear: ("left", "right"), PivGaLinear: ("rows", "coef")}


class LowRankDelta(nn.Module):
    """X ↦ X + scale·B·A for a factor X (p × q), k = min(rank, p, q), scale = alpha/rank: B (p × k) starts at zero,
    A (k × q) as in LoRA, so training starts from the factor itself."""

    def __init__(self, factor: torch.Tensor, rank: int, alpha: float) -> None:
        super().__init__()
        p, q = factor.shape
        k = min(rank, p, q)
        self.scale = alpha / rank  # as peft's LoRA: the same scale for every factor, whatever its sides cap k to
        self.A = nn.Parameter(torch.empty(k, q, dtype=factor.dtype, device=factor.device))
        self.B = nn.Parameter(torch.zeros(p, k, dtype=factor.dtype, device=factor.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, factor: torch.Tensor) -> torch.Tensor:
        return factor + self.scale * (self.B @ self.A)


def factored_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every low-rank or PivGa layer of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, tuple(FACTORS))]


def factor_names(layer: nn.Module) -> tuple[str, ...]:
    """The trainable factors of a factored ``layer``."""
    return next(names for kind, names in FACTORS.items() if isinstance(layer, kind))


def add_factor_deltas(model: nn.Module, rank: int, alpha: float) -> list[nn.Parameter]:
    """Attach a :class:`LowRankDelta` of rank ``rank`` (at most the factor's smaller side) and scale ``alpha``/rank
    to every non-empty factor of every factored layer of ``model``; returns the new trainable parameters (the
    factors themselves are left as they are, frozen or not)."""
    params: list[nn.Parameter] = []
    for _, layer in factored_layers(model):
        for name in factor_names(layer):
            factor = getattr(layer, name)
            if factor.numel() == 0:
                continue
            delta = LowRankDelta(factor.detach(), rank, alpha)
            parametrize.register_parametrization(layer, name, delta)
            params += [delta.A, delta.B]
    return params


def fold_factor_deltas(model: nn.Module) -> None:
    """Add every attached delta into its factor and detach it: the layers are their own classes again, with their
    own parameters (the same objects, updated in place)."""
    for _, layer in factored_layers(model):
        for name in factor_names(layer):
            if parametrize.is_parametrized(layer, name):
                parametrize.remove_parametrizations(layer, name, leave_parametrized=True)


__all__ = ["FACTORS", "LowRankDelta", "add_factor_deltas", "factored_layers", "factor_names", "fold_factor_deltas"]
