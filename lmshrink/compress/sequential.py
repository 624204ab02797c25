"""Truncation-aware (sequential) whitening, and the closed-form update of the kept factors.

One-pass whitening (:func:`~lmshrink.compress.factoring.svd_factors`) whitens every matrix on the *dense*
model's activations, so the errors the compressed layers 0..l−1 make never reach layer l's factorization. Here
the decoder layers are compressed one after the other, each on the inputs the compressed layers before it produce.
Two streams of hidden states are kept: H_d (the dense model's) and H_c (the partly compressed model's). For each
decoder layer l, batch by batch:

1. layer l (still dense) runs on H_d: each distinct input X_d of its matrices is kept, its output is H_d of l+1;
2. layer l (still dense) runs on H_c: G = X_c X_cᵀ and the cross Gram C = X_d X_cᵀ are accumulated per input;
3. every matrix of layer l is factored on G (S Sᵀ = G + δI, :mod:`~lmshrink.compress.whitening`), cut to its rank,
   optionally updated (below), and put into the model as a rank-r layer;
4. layer l (now compressed) runs on H_c: its output is H_c of l+1.

The ranks must be known before layer l is compressed, so the flow first allocates ranks on the one-pass factors
(any solver: fermigrad, milp, uniform), then recomputes the factors here with those ranks.

**Update of the kept factors.** Let Y = W X_d be the dense layer's outputs on the dense inputs and X = X_c the
inputs it now receives. With ``update="ls"`` the right factor B (r × n) of the whitened SVD is kept and the left
factor is the ridge least-squares solution

    A = argmin_A ‖Y − A B X‖² + δ‖A B‖² = W C Bᵀ (B (G + δI) Bᵀ)⁻¹                                          (1)

(set the gradient −2(Y Xᵀ − A B (X Xᵀ + δI)) Bᵀ to zero; Y Xᵀ = W X_d X_cᵀ = W C; δ is the whitening's ridge).
With ``update="joint"`` both factors are chosen at once: writing G + δI = S Sᵀ and W* = W C (G + δI)⁻¹,

    ‖Y − W′X‖² + δ‖W′‖² = ‖(W* − W′) S‖² + const                                                          (2)

so the best rank-r W′ is the truncated SVD of W* S mapped back (Eckart–Young), and (1) holds for its B; on the
calibration data it is never worse than ``"ls"``. With ``update="none"`` W itself is factored on G. A matrix the
plan keeps dense is left unchanged (its factors are still computed, for the plan's shape check).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..core.errors import LmshrinkError
from ..evaluate.midstack import start_at
from ..evaluate.stopping import run_until_stopped
from .factoring import MatrixFactors, SvdFactors, factor_matrix
from .gram import GramStats, _stop_at, _zero_grams, input_groups, start_walk
from .low_rank import LowRankLinear, replace_module
from .whitening import Whitening, whiten

UPDATES = ("none", "ls", "joint")


@dataclass
class SequentialStats(GramStats):
    """One decoder layer's Grams G = X_c X_cᵀ on the compressed stream and cross Grams C = X_d X_cᵀ (same order)."""

    cross: list[torch.Tensor] = field(default_factory=list)


def _capture(linears: Mapping[str, nn.Module], groups: list[list[str]], store: dict[int, torch.Tensor]) -> list[Any]:
    """Pre-hooks keeping each group's input (tokens × n, float64, CPU) in ``store``."""

    def hook(index: int):
        def fn(module: nn.Module, args: tuple) -> None:
            store[index] = args[0].detach().reshape(-1, args[0].shape[-1]).to("cpu", torch.float64)

        return fn

    return [linears[members[0]].register_forward_pre_hook(hook(g)) for g, members in enumerate(groups)]


def _run_layer(model: nn.Module, adapter: Any, index: int, layer: nn.Module, hidden: torch.Tensor,
               hooks: list[Any]) -> torch.Tensor:
    """Decoder layer ``index`` run on ``hidden`` (started mid-stack, stopped after it); its output hidden state.
    ``hooks`` (handles already registered) are removed afterwards."""
    out: list[torch.Tensor] = []
    hooks = [*hooks, _stop_at(layer, out, before=False)]
    try:
        with start_at(model, adapter, index):
            run_until_stopped(model, inputs_embeds=hidden, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return out[0]


@torch.no_grad()
def sequential_stats(model: nn.Module, adapter: Any, linears: Mapping[str, nn.Module], input_ids: torch.Tensor, *,
                     batch_size: int = 8, progress: bool = True
                     ) -> Iterator[tuple[int, dict[str, nn.Module], SequentialStats]]:
    """Yield, decoder layer after decoder layer, (index, its linear layers, :class:`SequentialStats`).

    While the generator is suspended at a yield, the caller may replace that layer's linear layers in ``model``
    (compress them); on resuming, the layer runs as it then stands on the compressed stream to give the next
    layer's inputs. Restoring the model afterwards is the caller's business.
    """

    where = adapter.layer_list(model)
    if where is None:
        raise LmshrinkError("Sequential whitening needs an adapter that knows the decoder layer list.")
    layers = list(getattr(*where))
    was_training = model.training
    model.eval()
    try:
        walk = start_walk(model, layers, linears, input_ids, batch_size, "sequential whitening cannot reach it.")
        owners, batches, probe, first = walk.owners, walk.batches, walk.probe, walk.first_inputs
        dense, comp = list(first), list(first)
        last = max(owners.values(), default=-1)
        for index in tqdm(range(last + 1), desc="sequential whitening", disable=not progress, leave=False):
            layer = layers[index]
            members = {name: linears[name] for name, i in owners.items() if i == index}
            groups = input_groups(model, members, probe) if members else []
            grams, cross = _zero_grams(members, groups), _zero_grams(members, groups)
            for b in range(len(batches)):
                xd: dict[int, torch.Tensor] = {}
                dense_in = dense[b]
                dense[b] = _run_layer(model, adapter, index, layer, dense[b], _capture(members, groups, xd))
                xc: dict[int, torch.Tensor] = xd
                if comp[b] is not dense_in:  # the streams differ once a layer before was compressed
                    xc = {}
                    _run_layer(model, adapter, index, layer, comp[b], _capture(members, groups, xc))
                for g in range(len(groups)):
                    grams[g].addmm_(xc[g].T, xc[g])  # Σ x_c x_cᵀ
                    cross[g].addmm_(xd[g].T, xc[g])  # Σ x_d x_cᵀ
                del xd, xc
            if members:
                yield index, members, SequentialStats(groups, grams, int(input_ids.numel()), cross)
            comp = [_run_layer(model, adapter, index, layer, h, []) for h in comp]
    finally:
        model.train(was_training)


def updated_weight(W: torch.Tensor, B: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor,
                   delta: float) -> torch.Tensor:
    """A·B with A = W C Bᵀ (B (G + δI) Bᵀ)⁻¹, the ridge least-squares left factor for the kept right factor B (1)."""
    ridge = gram + delta * torch.eye(gram.shape[0], dtype=gram.dtype)
    K = B @ ridge @ B.T  # r × r, symmetric positive definite for δ > 0 and B of full row rank
    A = torch.linalg.solve(K, (W @ cross @ B.T).T).T
    return A @ B


def target_weight(W: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, delta: float) -> torch.Tensor:
    """W* = W C (G + δI)⁻¹: the unconstrained minimiser of ‖W X_d − W′X_c‖² + δ‖W′‖² (2)."""
    ridge = gram + delta * torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.solve(ridge, (W @ cross).T).T  # ridge is symmetric


def factor_layer(members: Mapping[str, nn.Module], stats: SequentialStats, ranks: Mapping[str, int], *,
                 update: str = "ls", eps: float = 1e-6, dtype: torch.dtype = torch.float32) -> dict[str, MatrixFactors]:
    """The factors of one decoder layer's matrices on its sequential statistics; a matrix with a rank in ``ranks``
    is updated as ``update`` says (see the module docstring), the others are factored as they are."""
    if update not in UPDATES:
        raise LmshrinkError(f"update must be one of {', '.join(UPDATES)}, not {update!r}.")
    whitenings: dict[int, Whitening] = {}
    out: dict[str, MatrixFactors] = {}
    for name, module in members.items():
        g = stats.group_of(name)
        if g not in whitenings:
            whitenings[g] = whiten(stats.grams[g], eps=eps)
        wh = whitenings[g]
        W = module.weight.detach().to("cpu", torch.float64)
        bias = module.bias.detach().clone() if getattr(module, "bias", None) is not None else None
        r = ranks.get(name)
        if r is not None and update == "ls":
            B = factor_matrix(name, W, wh, dtype=torch.float64).right[:r]
            W = updated_weight(W, B, stats.grams[g], stats.cross[g], wh.delta)
        elif r is not None and update == "joint":
            W = target_weight(W, stats.grams[g], stats.cross[g], wh.delta)
        out[name] = factor_matrix(name, W, wh, bias, dtype=dtype)
    return out


@torch.no_grad()
def sequential_factors(model: nn.Module, adapter: Any, linears: Mapping[str, nn.Module], input_ids: torch.Tensor,
                       ranks: Mapping[str, int], *, update: str = "ls", batch_size: int = 8, eps: float = 1e-6,
                       dtype: torch.dtype = torch.float32, progress: bool = True) -> SvdFactors:
    """The whitened SVDs of every matrix in ``linears``, each decoder layer's on the inputs the layers before it
    produce once compressed to ``ranks`` (name → rank; a matrix not named stays dense), with the kept factors
    updated as ``update`` says. ``model`` is compressed layer by layer while this runs and restored at the end;
    the factors' first r rows/columns are the rank-r layer the statistics of the next layer were taken under."""
    if update not in UPDATES:
        raise LmshrinkError(f"update must be one of {', '.join(UPDATES)}, not {update!r}.")
    unknown = sorted(set(ranks) - set(linears))
    if unknown:
        raise LmshrinkError(f"The ranks name {unknown[0]}, which is not among the decomposed matrices.")
    parts: dict[str, MatrixFactors] = {}
    groups: list[list[str]] = []
    originals: dict[str, nn.Module] = {}
    try:
        for _, members, stats in sequential_stats(model, adapter, linears, input_ids, batch_size=batch_size,
                                                  progress=progress):
            part = factor_layer(members, stats, ranks, update=update, eps=eps, dtype=dtype)
            parts.update(part)
            groups += stats.groups
            for name, f in part.items():
                if name not in ranks:
                    continue
                old = members[name]
                A, B = f.truncated(int(ranks[name]))
                new = LowRankLinear.from_factors(A, B, f.bias, dtype=old.weight.dtype).to(old.weight.device)
                originals[name] = replace_module(model, name, new)
    finally:
        for name, old in originals.items():
            replace_module(model, name, old)
    tokens = int(input_ids.numel())
    out = SvdFactors({name: parts[name] for name in linears}, tokens, groups,
                     {"eps": eps, "tokens": tokens, "dtype": str(dtype).replace("torch.", ""),
                      "mode": "sequential", "update": update})
    out.info["whitening"] = {k: v for k, v in out.whitening_summary().items() if k != "per_input"}
    return out


__all__ = ["SequentialStats", "UPDATES", "factor_layer", "sequential_factors", "sequential_stats", "target_weight",
           "updated_weight"]
