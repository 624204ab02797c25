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

from ..core.errors import LmshrinkError
from .remote.modeling_lmshrink import PivGaLinear as _StoredPivGaLinear

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


class PivGaLinear(_StoredPivGaLinear):
    """y[P] = rows · x, y[P̄] = coef · y[P] (+ bias): a rank-r layer storing r(m + n) − r² numbers.

    ``inverse`` (a buffer) maps output position i to its place in the concatenation [y[P], y[P̄]]. The stored
    tensors are ``rows``, ``coef`` and ``inverse``; in memory the forward also keeps the m × r left factor they
    imply (:meth:`expanded_left`), so inference is two matrix products. The stored layer (parameters, forward) is
    the saved modeling code's; this adds building, accounting and the check of loaded pivots.
    """

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

    def macs_per_token(self) -> int:
        """Multiply-adds of one forward per input vector: r(m + n) gather-free, r(m + n) − r² otherwise."""
        full = self.rank * (self.in_features + self.out_features)
        return full if self.gather_free else full - self.rank * self.rank

    def dense_weight(self) -> torch.Tensor:
        """The (out, in) weight W_r this layer applies."""
        return torch.cat([self.rows, self.coef @ self.rows], dim=0).index_select(0, self.inverse)

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
