"""The layers that replace a dense ``nn.Linear``: a low-rank pair, and a soft truncation for the loss oracle."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .remote.modeling_lmshrink import LowRankLinear as _StoredLowRankLinear
from .remote.modeling_lmshrink import replace_module

#: the structural transform recorded (and replayed on load) for layers replaced by :class:`LowRankLinear`
TRANSFORM = "low_rank"


class LowRankLinear(_StoredLowRankLinear):
    """y = left · (right · x) + bias, with ``left`` of shape (out, r) and ``right`` of shape (r, in): r(m+n) numbers.

    The stored layer (parameters and forward) is the saved modeling code's; this adds building and accounting.
    """

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

    def macs_per_token(self) -> int:
        """Multiply-adds of one forward per input vector: r(m + n)."""
        return self.rank * (self.in_features + self.out_features)

    def dense_weight(self) -> torch.Tensor:
        """left · right, the (out, in) weight this layer applies."""
        return self.left @ self.right


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
