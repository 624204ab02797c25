"""Whitening: a square root S of a Gram matrix G (S Sᵀ = G + δI), as SVD-LLM uses it.

For a linear layer y = W x with calibration inputs X (n × N) and G = X Xᵀ = S Sᵀ, the rows of S⁻¹X are
orthonormal, so ‖(W − W′) X‖_F = ‖(W − W′) S‖_F for any W′: truncating the SVD of W·S is optimal on the data.

S is the Cholesky factor of G + δI with δ = eps·trace(G)/n, eps growing ×10 from ``eps`` until the factorization
succeeds (the identity then holds for G + δI: the error is ‖(W − W′)X‖² + δ‖W − W′‖², δ recorded). After
``max_tries`` an eigen-decomposition G = QΛQᵀ with eigenvalues floored at δ gives S = QΛ^{1/2}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.errors import LmshrinkError


@dataclass
class Whitening:
    """S with S Sᵀ = G + δI, how it was obtained, and a solver for S⁻¹."""

    S: torch.Tensor
    method: str  # "cholesky" or "eigen"
    eps: float  # the relative eps of the δ that was used
    delta: float  # δ = eps · trace(G) / n, added to the diagonal
    tries: int
    #: for the eigen fallback: eigenvectors and sqrt(eigenvalues)
    _Q: torch.Tensor | None = None
    _sqrt: torch.Tensor | None = None

    def right_solve(self, Y: torch.Tensor) -> torch.Tensor:
        """Y · S⁻¹."""
        if self.method == "cholesky":
            # Y S⁻¹ = (S⁻ᵀ Yᵀ)ᵀ with S lower triangular
            return torch.linalg.solve_triangular(self.S.T, Y.T, upper=True).T
        return (Y / self._sqrt) @ self._Q.T  # S = QΛ^{1/2} → S⁻¹ = Λ^{-1/2}Qᵀ

    def info(self) -> dict[str, Any]:
        return {"method": self.method, "eps": self.eps, "delta": self.delta, "tries": self.tries}


def whiten(G: torch.Tensor, *, eps: float = 1e-6, max_tries: int = 7) -> Whitening:
    """A square root S of G + δI: Cholesky with δ = eps·trace/n growing ×10 on failure, else eigen-decomposition."""
    G = G.to(torch.float64)
    n = G.shape[0]
    scale = float(torch.trace(G)) / n
    if not np.isfinite(scale):
        raise LmshrinkError("The calibration Gram matrix has non-finite entries.")
    scale = scale if scale > 0 else 1.0
    G = (G + G.T) / 2
    eye = torch.eye(n, dtype=torch.float64, device=G.device)
    e = float(eps)
    for attempt in range(1, max_tries + 1):
        L, info = torch.linalg.cholesky_ex(G + e * scale * eye)
        if int(info) == 0 and bool(torch.isfinite(L).all()) and bool((torch.diagonal(L) > 0).all()):
            return Whitening(L, "cholesky", e, e * scale, attempt)
        e = e * 10 if e > 0 else 1e-10
    # eigen fallback: G = QΛQᵀ, Λ floored at the last δ tried
    lam, Q = torch.linalg.eigh(G)
    floor = e * scale
    sqrt = torch.sqrt(torch.clamp(lam, min=floor))
    return Whitening(Q * sqrt, "eigen", e, floor, max_tries + 1, Q, sqrt)


__all__ = ["Whitening", "whiten"]
