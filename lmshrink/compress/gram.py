"""Gram matrices XXᵀ of the calibration inputs of linear layers, collected through forward hooks.

Layers that read the very same input tensor (q/k/v read the same normalized hidden states, gate/up too) share one
Gram matrix. Each is accumulated in float64, batch by batch, so activations are never all held at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..core.errors import LmshrinkError


@dataclass
class GramStats:
    """Float64 Gram matrices XXᵀ of the calibration inputs, one per group of layers reading the same input."""

    groups: list[list[str]]
    grams: list[torch.Tensor]
    tokens: int

    def group_of(self, name: str) -> int:
        """Index of the group (and Gram matrix) of layer ``name``."""
        for g, members in enumerate(self.groups):
            if name in members:
                return g
        raise KeyError(name)


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
    """Accumulate G = Σ_tokens x xᵀ (float64, on the CPU) for every distinct layer input over the calibration
    batches, whatever the model's dtype and device."""
    from ..evaluate.loss import model_inputs

    groups = input_groups(model, linears, model_inputs(model, input_ids[:1, : min(8, input_ids.shape[1])]))
    grams = [
        torch.zeros(linears[g[0]].in_features, linears[g[0]].in_features, dtype=torch.float64) for g in groups
    ]
    handles = []

    def hook(index: int):
        def fn(module: nn.Module, args: tuple) -> None:
            # float64 before the product, whatever the model's dtype; the Gram matrix stays on the CPU
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            if x.device == grams[index].device:
                grams[index].addmm_(x.T, x)
            else:
                grams[index].add_((x.T @ x).cpu())

        return fn

    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for g, members in enumerate(groups):
            handles.append(linears[members[0]].register_forward_pre_hook(hook(g)))
        starts = range(0, input_ids.shape[0], batch_size)
        for s in tqdm(starts, desc="whitening statistics", disable=not progress, leave=False):
            batch = model_inputs(model, input_ids[s : s + batch_size])
            model(input_ids=batch, use_cache=False)
            tokens += batch.numel()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return GramStats(groups, grams, tokens)


__all__ = ["GramStats", "collect_grams", "input_groups"]
