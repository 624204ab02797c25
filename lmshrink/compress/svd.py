"""Data-aware (whitened) SVD of linear layers, as in SVD-LLM, and the low-rank layers that replace them.

For a linear layer y = W x (W of shape m × n, out × in) with calibration inputs X (n × N, one column per token),
let G = X Xᵀ be their Gram matrix and S a square root of it, S Sᵀ = G (the Cholesky factor). Then S⁻¹X has
orthonormal rows, so for any W′

    ‖(W − W′) X‖_F = ‖(W S − W′ S) S⁻¹X‖_F = ‖W S − W′ S‖_F                                         (1)

and the best rank-r W′ on the calibration data is the truncated SVD of M = W S mapped back:
W_r = U_r Σ_r V_rᵀ S⁻¹, with error ‖(W − W_r)X‖_F² = Σ_{i≥r} σ_i² (Eckart–Young on M).

Implementation notes

- G is accumulated in float64 from forward hooks, one matrix per *distinct* input (q/k/v read the same
  normalized hidden states, gate/up too), batch by batch: activations are never all held at once.
- S: the Cholesky factor of G + δI with δ = eps·trace(G)/n, eps growing ×10 from ``eps`` until the factorization
  succeeds (so (1) holds for G + δI: the error is ‖(W − W′)X‖² + δ‖W − W′‖², δ recorded); after ``max_tries`` an
  eigen-decomposition G = QΛQᵀ with eigenvalues floored at δ gives S = QΛ^{1/2}. Which one was used is recorded.
- The SVD of M (m × n, k = min(m, n)) is computed from the eigen-decomposition of its smaller Gram matrix, in
  float64: M Mᵀ = U Σ² Uᵀ when m ≤ n, MᵀM = V Σ² Vᵀ otherwise. Each matrix is stored as two factors with
  W(f) = left · diag(f) · right reproducing the soft truncation with keep-mask f ∈ [0, 1]^k:

      m ≤ n:  left = U (m × k),          right = Uᵀ W  (k × n)      [U_r U_rᵀ W = U_r Σ_r V_rᵀ S⁻¹]
      m > n:  left = W S V (m × k),      right = Vᵀ S⁻¹ (k × n)

  so f = 1 gives W back (up to rounding) and the first r columns/rows give W_r.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.errors import LmshrinkError
from ..core.rank import break_even_rank
from .io import record_transform, register_transform, transforms_of

TRANSFORM = "low_rank"


# --- Gram matrices of layer inputs -----------------------------------------------------------------------------
@dataclass
class GramStats:
    """Float64 Gram matrices XXᵀ of the calibration inputs, one per group of layers reading the same input."""

    groups: list[list[str]]
    grams: list[torch.Tensor]
    tokens: int

    def group_of(self, name: str) -> int:
        for g, members in enumerate(self.groups):
            if name in members:
                return g
        raise KeyError(name)


def _module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def input_groups(model: nn.Module, linears: Mapping[str, nn.Module], probe_ids: torch.Tensor) -> list[list[str]]:
    """Group the layers that receive the very same input tensor, found by one short probe forward pass."""
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, args: tuple) -> None:
            seen[name] = args[0]

        return fn

    try:
        for name, module in linears.items():
            handles.append(module.register_forward_pre_hook(hook(name)))
        with torch.no_grad():
            model(input_ids=probe_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in linears if n not in seen]
    if missing:
        raise LmshrinkError(f"Layer {missing[0]} was not called in a forward pass; it cannot be whitened.")
    groups: list[list[str]] = []
    tensors: list[torch.Tensor] = []
    for name in linears:  # identity (not equality) of the input tensor defines a group
        for g, t in enumerate(tensors):
            if seen[name] is t:
                groups[g].append(name)
                break
        else:
            groups.append([name])
            tensors.append(seen[name])
    return groups


@torch.no_grad()
def collect_grams(
    model: nn.Module,
    linears: Mapping[str, nn.Module],
    input_ids: torch.Tensor,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> GramStats:
    """Accumulate G = Σ_tokens x xᵀ (float64) for every distinct layer input over the calibration batches."""
    groups = input_groups(model, linears, input_ids[:1, : min(8, input_ids.shape[1])])
    grams = [
        torch.zeros(linears[g[0]].in_features, linears[g[0]].in_features, dtype=torch.float64) for g in groups
    ]
    handles = []

    def hook(index: int):
        def fn(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            grams[index].addmm_(x.T, x)

        return fn

    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for g, members in enumerate(groups):
            handles.append(linears[members[0]].register_forward_pre_hook(hook(g)))
        starts = range(0, input_ids.shape[0], batch_size)
        for s in tqdm(starts, desc="whitening statistics", disable=not progress, leave=False):
            batch = input_ids[s : s + batch_size]
            model(input_ids=batch, use_cache=False)
            tokens += batch.numel()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return GramStats(groups, grams, tokens)


# --- whitening ---------------------------------------------------------------------------------------------------
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
    eye = torch.eye(n, dtype=torch.float64)
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


# --- factors -----------------------------------------------------------------------------------------------------
@dataclass
class MatrixFactors:
    """One layer's whitened SVD: W(f) = left · diag(f) · right, singular values ``sigma`` (descending)."""

    name: str
    shape: tuple[int, int]
    sigma: np.ndarray
    left: torch.Tensor
    right: torch.Tensor
    bias: torch.Tensor | None
    whitening: dict[str, Any] = field(default_factory=dict)

    @property
    def max_rank(self) -> int:
        return min(self.shape)

    def truncated(self, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) with W_r = A·B, A of shape m × r and B of shape r × n, the singular values split evenly."""
        A, B = self.left[:, :r].to(torch.float64), self.right[:r].to(torch.float64)
        # rescale column i of A and row i of B to equal norms (each √σ_i): same product, balanced float32 ranges
        na, nb = A.norm(dim=0), B.norm(dim=1)
        g = torch.where((na > 0) & (nb > 0), torch.sqrt(nb / torch.where(na > 0, na, 1)), torch.ones_like(na))
        return A * g, B / g[:, None]

    def orthonormal_left(self, r: int) -> torch.Tensor:
        """U_r: an orthonormal basis of the column space of W_r (the left factor with unit columns)."""
        A = self.left[:, :r].to(torch.float64)
        return A / torch.clamp(A.norm(dim=0), min=1e-300)


@dataclass
class SvdFactors:
    """Whitened SVDs of every decomposed matrix of a model, in the adapter's order, and how they were made."""

    factors: dict[str, MatrixFactors]
    tokens: int
    groups: list[list[str]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.factors)

    def whitening_summary(self) -> dict[str, Any]:
        """Counts of Cholesky / eigen whitenings and the largest relative eps used."""
        seen = {}
        for g in self.groups:
            seen[g[0]] = self.factors[g[0]].whitening
        methods = [w.get("method") for w in seen.values()]
        return {
            "inputs": len(seen),
            "cholesky": methods.count("cholesky"),
            "eigen": methods.count("eigen"),
            "max_eps": max((w.get("eps", 0.0) for w in seen.values()), default=0.0),
            "per_input": {name: w for name, w in seen.items()},
        }


@torch.no_grad()
def factorize(
    linears: Mapping[str, nn.Module],
    stats: GramStats,
    *,
    eps: float = 1e-6,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> SvdFactors:
    """Whitened SVD of every layer in ``linears`` from the Gram matrices in ``stats`` (see the module docstring)."""
    factors: dict[str, MatrixFactors] = {}
    whitenings: list[Whitening | None] = [None] * len(stats.groups)
    order = {name: stats.group_of(name) for name in linears}
    for name, module in tqdm(linears.items(), desc="whitened SVD", disable=not progress, leave=False):
        g = order[name]
        if whitenings[g] is None:
            whitenings[g] = whiten(stats.grams[g], eps=eps)
        wh = whitenings[g]
        W = module.weight.detach().to(torch.float64)
        m, n = W.shape
        M = W @ wh.S
        if m <= n:
            lam, U = torch.linalg.eigh(M @ M.T)  # M Mᵀ = U Σ² Uᵀ, ascending
            lam, U = lam.flip(0), U.flip(1)
            left, right = U, U.T @ W
        else:
            lam, V = torch.linalg.eigh(M.T @ M)  # MᵀM = V Σ² Vᵀ
            lam, V = lam.flip(0), V.flip(1)
            left, right = M @ V, wh.right_solve(V.T)
        sigma = torch.sqrt(torch.clamp(lam, min=0)).numpy().copy()
        sigma = np.minimum.accumulate(sigma)  # exact ties may come out unsorted by a rounding error
        bias = module.bias.detach().clone() if getattr(module, "bias", None) is not None else None
        factors[name] = MatrixFactors(name, (m, n), sigma, left.to(dtype), right.to(dtype), bias, wh.info())
    info = {"eps": eps, "tokens": stats.tokens, "dtype": str(dtype).replace("torch.", "")}
    out = SvdFactors(factors, stats.tokens, stats.groups, info)
    out.info["whitening"] = {k: v for k, v in out.whitening_summary().items() if k != "per_input"}
    return out


def svd_factors(
    model: nn.Module,
    linears: Mapping[str, nn.Module],
    input_ids: torch.Tensor,
    *,
    batch_size: int = 8,
    eps: float = 1e-6,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> SvdFactors:
    """Gram statistics over ``input_ids`` then the whitened SVD of every layer (the Grams are freed after)."""
    stats = collect_grams(model, linears, input_ids, batch_size=batch_size, progress=progress)
    return factorize(linears, stats, eps=eps, dtype=dtype, progress=progress)


# --- low-rank layers ---------------------------------------------------------------------------------------------
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

    def dense_weight(self) -> torch.Tensor:
        """left · right, the (out, in) weight this layer applies."""
        return self.left @ self.right

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def is_dense_rank(shape: tuple[int, int], rank: int, pivga: bool) -> bool:
    """Whether ``rank`` means "keep dense" (at or above the break-even rank of the cost model)."""
    m, n = shape
    return int(rank) >= break_even_rank(m, n, pivga)


@dataclass
class CompressionSummary:
    """What :func:`compress_model` did, per matrix and in total."""

    ranks: dict[str, int]
    kinds: dict[str, str]  # "low_rank", "pivga" or "dense"
    params_plain: int  # numbers stored had every factored matrix been a plain low-rank pair
    params_pivga: int  # numbers stored had every factored matrix been gauge-fixed
    params_stored: int  # numbers actually stored (weights of the decomposed matrices, no biases)
    params_dense: int  # m·n summed: the decomposed matrices before compression

    def to_dict(self) -> dict[str, Any]:
        return {
            "params_plain": self.params_plain,
            "params_pivga": self.params_pivga,
            "params_stored": self.params_stored,
            "params_dense": self.params_dense,
            "ratio_stored": self.params_stored / max(self.params_dense, 1),
            "ratio_plain": self.params_plain / max(self.params_dense, 1),
            "ratio_pivga": self.params_pivga / max(self.params_dense, 1),
            "dense_matrices": sorted(k for k, v in self.kinds.items() if v == "dense"),
            "ranks": self.ranks,
            "kinds": self.kinds,
        }


@torch.no_grad()
def compress_model(
    model: nn.Module,
    factors: SvdFactors,
    ranks: Mapping[str, int],
    *,
    pivga: bool = False,
    dtype: torch.dtype | None = None,
) -> CompressionSummary:
    """Replace each layer in ``ranks`` by its rank-r factorization (plain or PivGa), in place; record the transform.

    A rank at or above the break-even rank of the cost model (r(m+n) ≥ mn, or with PivGa r = min(m, n)) keeps the
    original dense layer unchanged.
    """
    from .pivga import TRANSFORM as PIVGA_TRANSFORM
    from .pivga import PivGaLinear

    kinds: dict[str, str] = {}
    plain_layers: dict[str, int] = {}
    pivga_layers: dict[str, int] = {}
    plain = piv = stored = dense_total = 0
    for name, r in ranks.items():
        f = factors.factors[name]
        m, n = f.shape
        r = int(r)
        dense_total += m * n
        if not 0 <= r <= f.max_rank:
            raise LmshrinkError(f"Rank {r} of {name} is outside 0..{f.max_rank}.")
        if is_dense_rank(f.shape, r, pivga):
            kinds[name] = "dense"
            plain += m * n
            piv += m * n
            stored += m * n
            continue
        old = _module(model, name)
        layer_dtype = dtype or old.weight.dtype
        A, B = f.truncated(r)
        plain += min(r * (m + n), m * n)
        piv += r * (m + n) - r * r
        if pivga:
            new = PivGaLinear.from_factors(A, B, f.orthonormal_left(r), f.bias, dtype=layer_dtype)
            pivga_layers[name] = r
            kinds[name] = "pivga"
        else:
            new = LowRankLinear.from_factors(A, B, f.bias, dtype=layer_dtype)
            plain_layers[name] = r
            kinds[name] = "low_rank"
        stored += sum(p.numel() for n_, p in new.named_parameters() if n_ != "bias")
        _set_module(model, name, new.to(old.weight.device))
    if plain_layers:
        record_transform(model, {"type": TRANSFORM, "layers": plain_layers})
    if pivga_layers:
        record_transform(model, {"type": PIVGA_TRANSFORM, "layers": pivga_layers})
    return CompressionSummary({k: int(v) for k, v in ranks.items()}, kinds, plain, piv, stored, dense_total)


@register_transform(TRANSFORM)
def _replay_low_rank(model: nn.Module, spec: dict[str, Any]) -> None:
    """Recreate the LowRankLinear shapes of a saved model on a freshly built stock model."""
    for name, r in spec["layers"].items():
        old = _module(model, name)
        new = LowRankLinear(old.in_features, old.out_features, int(r), old.bias is not None, old.weight.dtype)
        _set_module(model, name, new)


# --- dense export ------------------------------------------------------------------------------------------------
def densify(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every factored layer multiplied back into a plain ``nn.Linear`` (no transforms)."""
    from .io import _ATTR

    dense = copy.deepcopy(model)
    if hasattr(dense, _ATTR):
        object.__delattr__(dense, _ATTR)
    targets = [(name, mod) for name, mod in dense.named_modules() if hasattr(mod, "dense_weight")]
    with torch.no_grad():
        for name, mod in targets:
            W = mod.dense_weight()
            lin = nn.Linear(W.shape[1], W.shape[0], bias=mod.bias is not None, dtype=W.dtype)
            lin.weight.copy_(W)
            if mod.bias is not None:
                lin.bias.copy_(mod.bias)
            _set_module(dense, name, lin)
    return dense


def export_dense(model: nn.Module, path: str | Path, tokenizer: Any = None) -> Path:
    """Save ``model`` as a plain transformers model (W_r = A·B multiplied back) that ``from_pretrained`` loads."""
    path = Path(path)
    kinds = {t["type"] for t in transforms_of(model)} - {TRANSFORM, "pivga"}
    if kinds:
        raise LmshrinkError(f"Cannot export a dense model: transforms {sorted(kinds)} have no dense form.")
    dense = densify(model)
    dense.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


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
        return F.linear(F.linear(x, self.right) * self.mask.to(x.dtype), self.left, self.bias_)


def soft_weight(f: MatrixFactors, mask: torch.Tensor) -> torch.Tensor:
    """left · diag(mask) · right: the soft-truncated weight (for checks; the loss oracle never forms it)."""
    return (f.left * mask.to(f.left.dtype)) @ f.right


__all__ = [
    "CompressionSummary",
    "GramStats",
    "LowRankLinear",
    "MatrixFactors",
    "SoftTruncatedLinear",
    "SvdFactors",
    "Whitening",
    "collect_grams",
    "compress_model",
    "densify",
    "export_dense",
    "factorize",
    "input_groups",
    "is_dense_rank",
    "soft_weight",
    "svd_factors",
    "whiten",
]

