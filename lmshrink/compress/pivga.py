"""PivGa: gauge-fixed low-rank layers that store r(m + n) − r² numbers instead of r(m + n).

A rank-r factorization W_r = A·B (A: m × r, B: r × n) is redundant: A·G and G⁻¹·B give the same product for any
invertible r × r matrix G (a "gauge"), so r² of its r(m + n) numbers are free. Fix the gauge by choosing r rows P
of W_r (the pivots) with A[P] invertible and G = A[P]⁻¹:

    W_r[P, :]  = A[P] B                       =: B′      (r × n, stored)
    W_r[P̄, :] = A[P̄] B = A[P̄] A[P]⁻¹ B′     =  C B′    (C = A[P̄] A[P]⁻¹, (m − r) × r, stored)

so y = W_r x is computed as y[P] = B′x and y[P̄] = C·y[P]: r·n + (m − r)·r = r(m + n) − r² numbers (plus the
integer row indices). C does not depend on the gauge of A (A·G gives the same C), so the pivots are chosen on an
orthonormal basis U_r of the column space: column-pivoted QR of U_rᵀ (Businger–Golub, as in Q-DEIM) picks r
well-conditioned rows, which keeps ‖C‖ small and the float32 outputs within rounding of the plain pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import LmshrinkError

#: the structural transform recorded (and replayed on load, :mod:`lmshrink.compress.replay`) for PivGa layers
TRANSFORM = "pivga"


def pivot_rows(U: torch.Tensor | np.ndarray) -> np.ndarray:
    """A permutation of the m rows of U (m × r) whose first r entries are the pivots of a column-pivoted QR of Uᵀ."""
    Ut = np.ascontiguousarray(np.asarray(U, dtype=np.float64).T)
    r, m = Ut.shape
    if r == 0:
        return np.arange(m)
    try:
        from scipy.linalg import qr

        _, perm = qr(Ut, mode="r", pivoting=True)
        return np.asarray(perm, dtype=np.int64)
    except ImportError:  # Businger–Golub pivoting by hand: the column of largest remaining norm, then deflate
        R = Ut.copy()
        perm = np.arange(m)
        for j in range(min(r, m)):
            norms = np.einsum("ij,ij->j", R[j:, j:], R[j:, j:])
            p = j + int(np.argmax(norms))
            R[:, [j, p]] = R[:, [p, j]]
            perm[[j, p]] = perm[[p, j]]
            v = R[j:, j].copy()
            alpha = -np.copysign(np.linalg.norm(v), v[0] if v[0] != 0 else 1.0)
            v[0] -= alpha
            nv = np.linalg.norm(v)
            if nv > 0:
                v /= nv
                R[j:, j:] -= 2.0 * np.outer(v, v @ R[j:, j:])
        return perm


def gauge_fix(A: torch.Tensor, B: torch.Tensor, U: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(perm, B′, C) of W_r = A·B: pivots perm[:r], B′ = W_r[P] (r × n), C = A[P̄] A[P]⁻¹ ((m − r) × r), in float64.

    ``U`` (m × r, orthonormal columns spanning the columns of A) drives the pivoting; by default A's columns,
    normalized.
    """
    A = A.to(torch.float64)
    B = B.to(torch.float64)
    m, r = A.shape
    if U is None:
        U = A / torch.clamp(A.norm(dim=0), min=1e-300)
    U = U.to(torch.float64)
    perm = pivot_rows(U)
    P, Pbar = torch.from_numpy(perm[:r]), torch.from_numpy(perm[r:])
    rows = A[P] @ B
    # C = U[P̄] U[P]⁻¹ (= A[P̄] A[P]⁻¹): solve U[P]ᵀ Cᵀ = U[P̄]ᵀ
    coef = torch.linalg.solve(U[P].T, U[Pbar].T).T if r else torch.zeros(m, 0, dtype=torch.float64)
    return perm, rows, coef


def _version(t: torch.Tensor) -> int:
    """The in-place version counter of ``t`` (-1 for an inference tensor, which has none and cannot change)."""
    try:
        return t._version
    except RuntimeError:
        return -1


class PivGaLinear(nn.Module):
    """y[P] = rows · x, y[P̄] = coef · y[P] (+ bias): a rank-r layer storing r(m + n) − r² numbers.

    ``inverse`` (a buffer) maps output position i to its place in the concatenation [y[P], y[P̄]]. The stored
    tensors are ``rows``, ``coef`` and ``inverse``; in memory the forward also keeps the m × r left factor they
    imply (:meth:`expanded_left`), so inference is two matrix products.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = int(in_features), int(out_features), int(rank)
        self.rows = nn.Parameter(torch.zeros(rank, in_features, dtype=dtype))
        self.coef = nn.Parameter(torch.zeros(out_features - rank, rank, dtype=dtype))
        self.register_buffer("inverse", torch.arange(out_features, dtype=torch.int64))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None

    @classmethod
    def from_factors(cls, A: torch.Tensor, B: torch.Tensor, U: torch.Tensor | None = None,
                     bias: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> PivGaLinear:
        """The gauge-fixed layer of W_r = A·B (see :func:`gauge_fix`)."""
        perm, rows, coef = gauge_fix(A, B, U)
        layer = cls(B.shape[1], A.shape[0], A.shape[1], bias is not None, dtype)
        with torch.no_grad():
            layer.rows.copy_(rows.to(dtype))
            layer.coef.copy_(coef.to(dtype))
            inverse = np.empty_like(perm)
            inverse[perm] = np.arange(perm.size)
            layer.inverse.copy_(torch.from_numpy(inverse))
            if bias is not None:
                layer.bias.copy_(bias.to(dtype))
        return layer

    @property
    def pivots(self) -> torch.Tensor:
        """The r output rows stored directly (P)."""
        return torch.argsort(self.inverse)[: self.rank]

    def expanded_left(self) -> torch.Tensor:
        """E (m × r) with E[P] = I and E[P̄] = C, in the output rows' own order, so that y = E·(B′x).

        Built from ``coef`` and ``inverse`` by copies only (exact in every dtype). Without autograd it is kept and
        rebuilt only when ``coef`` or ``inverse`` change (in place, by loading weights, or by ``.to()``); with
        autograd on a trainable ``coef`` it is rebuilt on every call so that gradients reach ``coef``.
        """
        coef, inverse = self.coef, self.inverse
        if torch.is_grad_enabled() and coef.requires_grad:
            return self._build_left(coef, inverse)
        key = (_version(coef), coef.data_ptr(), coef.dtype, coef.device, _version(inverse), inverse.data_ptr())
        if getattr(self, "_left_key", None) != key:
            with torch.no_grad():
                self._left = self._build_left(coef.detach(), inverse)
            self._left_key = key
        return self._left

    def _build_left(self, coef: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.rank, dtype=coef.dtype, device=coef.device)
        return torch.cat([eye, coef], dim=0).index_select(0, inverse).contiguous()

    @property
    def gather_free(self) -> bool:
        """Whether the forward is y = E·(B′x) (two products, r(m + n) multiply-adds): when that is no more than the
        dense m·n. At higher ranks (which only the gauge-fixed storage reaches) the forward computes y[P̄] = C·y[P]
        and gathers the rows into place, r(m + n) − r² multiply-adds."""
        return self.rank * (self.in_features + self.out_features) <= self.in_features * self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.linear(x, self.rows)  # y[P]
        if self.gather_free:
            # two matrix products and no gather of the outputs (E is laid out once): r² more multiply-adds than the
            # gathered form below, and faster than its cat and gather on the CPU (docs/guide/inference.md)
            return F.linear(z, self.expanded_left(), self.bias)
        y = torch.cat([z, F.linear(z, self.coef)], dim=-1).index_select(-1, self.inverse)
        return y + self.bias if self.bias is not None else y

    def macs_per_token(self) -> int:
        """Multiply-adds of one forward per input vector: r(m + n) gather-free, r(m + n) − r² otherwise."""
        full = self.rank * (self.in_features + self.out_features)
        return full if self.gather_free else full - self.rank * self.rank

    def dense_weight(self) -> torch.Tensor:
        """The (out, in) weight W_r this layer applies."""
        return torch.cat([self.rows, self.coef @ self.rows], dim=0).index_select(0, self.inverse)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Load as usual, then refuse an ``inverse`` that is not a permutation of the output rows."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        inverse = self.inverse
        if inverse.shape != (self.out_features,) or not torch.equal(
            torch.sort(inverse).values.cpu(), torch.arange(self.out_features, dtype=inverse.dtype)
        ):
            raise LmshrinkError(f"The pivots of the PivGa layer {prefix.rstrip('.') or '(root)'} are not a "
                                f"permutation of its {self.out_features} output rows.")


__all__ = ["PivGaLinear", "TRANSFORM", "gauge_fix", "pivot_rows"]
