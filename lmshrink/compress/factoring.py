"""Whitened SVD of every decomposed matrix (SVD-LLM), kept as two factors per matrix.

With S the whitening of a layer's inputs (:mod:`lmshrink.compress.whitening`), the best rank-r W′ on the
calibration data is the truncated SVD of M = W S mapped back, W_r = U_r Σ_r V_rᵀ S⁻¹, with error
‖(W − W_r)X‖_F² = Σ_{i≥r} σ_i² (Eckart–Young on M).

The SVD of M (m × n, k = min(m, n)) is computed from the eigen-decomposition of its smaller Gram matrix, in
float64: M Mᵀ = U Σ² Uᵀ when m ≤ n, MᵀM = V Σ² Vᵀ otherwise. Each matrix is stored as two factors with
W(f) = left · diag(f) · right reproducing the soft truncation with keep-mask f ∈ [0, 1]^k:

    m ≤ n:  left = U (m × k),          right = Uᵀ W  (k × n)      [U_r U_rᵀ W = U_r Σ_r V_rᵀ S⁻¹]
    m > n:  left = W S V (m × k),      right = Vᵀ S⁻¹ (k × n)

so f = 1 gives W back (up to rounding) and the first r columns/rows give W_r.

:meth:`SvdFactors.save` / :meth:`SvdFactors.load` keep the factors in a safetensors file with a JSON side file
(format, key, shapes, whitening facts and the tensor file's SHA-256), never a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..core.errors import LmshrinkError
from .gram import GramStats, collect_grams, grams_by_layer, layer_owners
from .whitening import Whitening, whiten

FACTORS_FORMAT = "lmshrink.svd_factors/1"


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

    # --- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, key: Mapping[str, Any] | None = None) -> Path:
        """Write the tensors to ``path`` (safetensors) and the rest to ``path.with_suffix('.json')``.

        ``key`` (JSON data) describes what the factors were computed from; :meth:`load` refuses another key. Each
        file is written under a temporary name and renamed into place, the side file last.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        transposed: list[str] = []
        matrices = []
        for name, f in self.factors.items():
            tensors[f"{name}.sigma"] = torch.from_numpy(np.ascontiguousarray(f.sigma, dtype=np.float64))
            for part, t in (("left", f.left), ("right", f.right), ("bias", f.bias)):
                if t is None:
                    continue
                # a column-major factor is stored as its (row-major) transpose and read back as the same view: the
                # memory layout decides the summation order of later reductions, so it is kept for equal results
                if t.dim() == 2 and not t.is_contiguous() and t.T.is_contiguous():
                    tensors[f"{name}.{part}"] = t.T
                    transposed.append(f"{name}.{part}")
                else:
                    tensors[f"{name}.{part}"] = t.contiguous()
            matrices.append({"name": name, "shape": list(f.shape), "whitening": f.whitening})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        side = {"format": FACTORS_FORMAT, "key": dict(key or {}), "tensors": path.name, "sha256": _sha256(path),
                "transposed": transposed, "tokens": self.tokens, "groups": self.groups, "info": self.info,
                "matrices": matrices}
        meta = _side_file(path)
        tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(side, indent=1))
        os.replace(tmp, meta)
        return path

    @classmethod
    def load(cls, path: str | Path, *, key: Mapping[str, Any] | None = None) -> SvdFactors:
        """Read factors written by :meth:`save`; with ``key``, refuse factors computed from anything else."""
        path = Path(path)
        meta = _side_file(path)
        if not path.is_file() or not meta.is_file():
            raise LmshrinkError(f"No saved factors at {str(path)!r} (it needs its side file {meta.name}).")
        try:
            side = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LmshrinkError(f"{str(meta)!r} is not a JSON side file of saved factors: {exc}") from exc
        if not isinstance(side, dict) or side.get("format") != FACTORS_FORMAT:
            raise LmshrinkError(f"{str(meta)!r} does not describe saved factors (format {FACTORS_FORMAT!r}).")
        if key is not None and side.get("key") != json.loads(json.dumps(dict(key))):
            raise LmshrinkError(f"The factors at {str(path)!r} were computed from other inputs.")
        if side.get("sha256") != _sha256(path):
            raise LmshrinkError(f"{str(path)!r} does not match the checksum in {meta.name}: the file changed or is "
                                f"incomplete.")
        tensors = load_file(str(path))
        for key_ in side.get("transposed", []):
            tensors[key_] = tensors[key_].T
        factors = {}
        for m in side["matrices"]:
            name = m["name"]
            factors[name] = MatrixFactors(name, tuple(m["shape"]), tensors[f"{name}.sigma"].numpy(),
                                          tensors[f"{name}.left"], tensors[f"{name}.right"],
                                          tensors.get(f"{name}.bias"), m["whitening"])
        return cls(factors, int(side["tokens"]), [list(g) for g in side["groups"]], side["info"])


def _side_file(path: Path) -> Path:
    """The JSON side file next to the tensor file ``path``: the same name with the suffix ``.json``."""
    if path.suffix == ".json":
        raise LmshrinkError(f"{str(path)!r}: the factors' tensor file must not end in .json (that is its side file).")
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def soft_weight(f: MatrixFactors, mask: torch.Tensor) -> torch.Tensor:
    """left · diag(mask) · right: the soft-truncated weight (for checks; the loss oracle never forms it)."""
    return (f.left * mask.to(f.left.dtype)) @ f.right


@torch.no_grad()
def factor_matrix(name: str, W: torch.Tensor, wh: Whitening, bias: torch.Tensor | None = None, *,
                  dtype: torch.dtype = torch.float32) -> MatrixFactors:
    """The whitened SVD of one weight ``W`` (float64, on the whitening's device) as :class:`MatrixFactors`."""
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
    sigma = torch.sqrt(torch.clamp(lam, min=0)).cpu().numpy().copy()
    sigma = np.minimum.accumulate(sigma)  # exact ties may come out unsorted by a rounding error
    return MatrixFactors(name, (m, n), sigma, left.to(dtype), right.to(dtype), bias, wh.info())


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
        W = module.weight.detach().to("cpu", torch.float64)  # next to the Gram matrices (float64, CPU)
        bias = module.bias.detach().clone() if getattr(module, "bias", None) is not None else None
        factors[name] = factor_matrix(name, W, whitenings[g], bias, dtype=dtype)
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
    adapter: Any = None,
) -> SvdFactors:
    """Gram statistics over ``input_ids`` then the whitened SVD of every layer.

    With an ``adapter`` that knows the decoder layer list (and every matrix inside a decoder layer), one layer at a
    time (:func:`~lmshrink.compress.gram.grams_by_layer`): the peak is the model, the factors and one layer's
    Grams. Otherwise every Gram matrix is collected in one pass, then all are factored and freed.
    """
    where = adapter.layer_list(model) if adapter is not None else None
    if where is None or layer_owners(getattr(*where), linears) is None:
        stats = collect_grams(model, linears, input_ids, batch_size=batch_size, progress=progress)
        return factorize(linears, stats, eps=eps, dtype=dtype, progress=progress)
    parts: dict[str, MatrixFactors] = {}
    groups: list[list[str]] = []
    for members, stats in grams_by_layer(model, adapter, linears, input_ids, batch_size=batch_size,
                                         progress=progress):
        part = factorize(members, stats, eps=eps, dtype=dtype, progress=False)
        del stats
        parts.update(part.factors)
        groups += part.groups
    tokens = int(input_ids.numel())
    out = SvdFactors({name: parts[name] for name in linears}, tokens, groups,
                     {"eps": eps, "tokens": tokens, "dtype": str(dtype).replace("torch.", "")})
    out.info["whitening"] = {k: v for k, v in out.whitening_summary().items() if k != "per_input"}
    return out


__all__ = ["FACTORS_FORMAT", "MatrixFactors", "SvdFactors", "factor_matrix", "factorize", "soft_weight", "svd_factors"]
