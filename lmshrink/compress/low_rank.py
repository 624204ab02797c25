"""The layers that replace a dense ``nn.Linear``: a low-rank pair, and a soft truncation for the loss oracle."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the structural transform recorded (and replayed on load) for layers replaced by :class:`LowRankLinear`
TRANSFORM = "low_rank"


def replace_module(root: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at the dotted ``path`` under ``root``; returns the module it replaced."""
    parent, _, child = path.rpartition(".")
    owner = root.get_submodule(parent) if parent else root
    old = getattr(owner, child)
    setattr(owner, child, module)
    return old


class LowRankLinear(nn.Module):
    """y = left · (right · x) + bias, with ``left`` of shape (out, r) and ``right`` of shape (r, in): r(m+n) numbers."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = int(in_features), int(out_features), int(rank)
        self.left = nn.Parameter(torch.zeros(out_features, rank, dtype=dtype))
        self.right = nn.Parameter(torch.zeros(rank, in_features, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None

    @classmethod
    def from_factors(cls, A: torch.Tensor, B: torch.Tensor, bias: torch.Tensor | None = None,
                     dtype: torch.dtype = torch.float32) -> LowRankLinear:
        layer = cls(B.shape[1], A.shape[0], A.shape[1], bias is not None, dtype)
        with torch.no_grad():
            layer.left.copy_(A.to(dtype))
            layer.right.copy_(B.to(dtype))
            if bias is not None:
                layer.bias.copy_(bias.to(dtype))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.right), self.left, self.bias)

    def macs_per_token(self) -> int:
        """Multiply-adds of one forward per input vector: r(m + n)."""
        return self.rank * (self.in_features + self.out_features)

    def dense_weight(self) -> torch.Tensor:
        """left · right, the (out, in) weight this layer applies."""
        return self.left @ self.right

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class SoftTruncatedLinear(nn.Module):
    """y = left · (mask ⊙ (right · x)) + bias: a layer soft-truncated by a keep-mask over its singular values.

    ``left``, ``right`` and ``bias`` are frozen tensors (not parameters); gradients flow to ``mask`` only. The soft
    weight left·diag(mask)·right is never formed.
    """

    def __init__(self, left: torch.Tensor, right: torch.Tensor, mask: torch.Tensor,
                 bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.left, self.right, self.mask, self.bias_ = left, right, mask, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.right) * self.mask.to(x.device, x.dtype), self.left, self.bias_)


__all__ = ["LowRankLinear", "SoftTruncatedLinear", "TRANSFORM", "replace_module"]
