"""Gram matrices XXᵀ of the calibration inputs of linear layers, collected through forward hooks.

Layers that read the very same input tensor (q/k/v read the same normalized hidden states, gate/up too) share one
Gram matrix. Each is accumulated in float64, batch by batch, so activations are never all held at once.

:func:`collect_grams` holds every layer's Gram matrices at once (one forward pass). :func:`grams_by_layer` holds
one decoder layer's at a time: it keeps the hidden states between layers (tokens × hidden size), runs each layer
once on the output of the one before, and hands over that layer's Grams before the next layer's are made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..core.errors import LmshrinkError
from ..evaluate.loss import model_inputs
from ..evaluate.midstack import start_at
from ..evaluate.stopping import StopPass, run_until_stopped


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
    groups = input_groups(model, linears, model_inputs(model, input_ids[:1, : min(8, input_ids.shape[1])]))
    grams = _zero_grams(linears, groups)
    handles = []
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        handles = _accumulate(linears, groups, grams)
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


def _zero_grams(linears: Mapping[str, nn.Module], groups: list[list[str]]) -> list[torch.Tensor]:
    return [torch.zeros(linears[g[0]].in_features, linears[g[0]].in_features, dtype=torch.float64) for g in groups]


def _accumulate(linears: Mapping[str, nn.Module], groups: list[list[str]], grams: list[torch.Tensor]) -> list[Any]:
    """Forward pre-hooks adding x xᵀ of each group's input to its Gram matrix; returns the hook handles."""

    def hook(index: int):
        def fn(module: nn.Module, args: tuple) -> None:
            # float64 before the product, whatever the model's dtype; the Gram matrix stays on the CPU
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            if x.device == grams[index].device:
                grams[index].addmm_(x.T, x)
            else:
                grams[index].add_((x.T @ x).cpu())

        return fn

    return [linears[members[0]].register_forward_pre_hook(hook(g)) for g, members in enumerate(groups)]


def _stop_at(module: nn.Module, store: list[torch.Tensor], *, before: bool) -> Any:
    """A hook on ``module`` that keeps its input (``before``) or its output hidden state, then ends the pass."""
    if before:
        def pre(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            store.append((args[0] if args else kwargs["hidden_states"]).detach())
            raise StopPass

        return module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(mod: nn.Module, args: tuple, output: Any) -> None:
        store.append((output[0] if isinstance(output, (tuple, list)) else output).detach())
        raise StopPass

    return module.register_forward_hook(post)


def layer_owners(layers: Any, linears: Mapping[str, nn.Module]) -> dict[str, int] | None:
    """The index of the decoder layer holding each linear layer, or None when one is outside every layer."""
    owner = {id(m): i for i, layer in enumerate(layers) for m in layer.modules()}
    found = {name: owner.get(id(module)) for name, module in linears.items()}
    return None if any(i is None for i in found.values()) else found


@dataclass
class DecoderWalk:
    """What a layer-by-layer walk over the decoder starts from: the decoder layers, the layer each linear layer
    sits in, the calibration batches as model inputs, a one-sample probe of them, and each batch's hidden states
    at the input of the first decoder layer."""

    layers: list[nn.Module]
    owners: dict[str, int]
    batches: list[Any]
    probe: Any
    first_inputs: list[torch.Tensor]


@torch.no_grad()
def start_walk(model: nn.Module, layers: list[nn.Module], linears: Mapping[str, nn.Module], input_ids: torch.Tensor,
               batch_size: int, outside: str) -> DecoderWalk:
    """The :class:`DecoderWalk` of ``input_ids`` through ``model`` (which must be in eval mode); a linear layer
    outside the decoder layers is refused with ``outside`` as the end of the sentence."""
    owners = layer_owners(layers, linears)
    if owners is None:
        raise LmshrinkError(f"A linear layer lies outside the decoder layers; {outside}")
    batches = [model_inputs(model, input_ids[s : s + batch_size]) for s in range(0, input_ids.shape[0], batch_size)]
    probe = model_inputs(model, input_ids[:1, : min(8, input_ids.shape[1])])
    first: list[torch.Tensor] = []
    handle = _stop_at(layers[0], first, before=True)
    try:
        for batch in batches:
            run_until_stopped(model, input_ids=batch, use_cache=False)
    finally:
        handle.remove()
    return DecoderWalk(layers, owners, batches, probe, first)


@torch.no_grad()
def grams_by_layer(
    model: nn.Module,
    adapter: Any,
    linears: Mapping[str, nn.Module],
    input_ids: torch.Tensor,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> Iterator[tuple[dict[str, nn.Module], GramStats]]:
    """Yield, decoder layer after decoder layer, that layer's linear layers and their :class:`GramStats`.

    Needs an adapter whose :meth:`~lmshrink.core.ArchitectureAdapter.layer_list` is known and linear layers that
    all sit inside decoder layers (:func:`layer_owners`). Each layer runs once per batch, started mid-stack on the
    hidden states the layer before produced; the pass stops right after it. Drop each yielded ``GramStats``
    before asking for the next to hold one layer's Grams at a time.
    """
    parent, attr = adapter.layer_list(model)
    layers = list(getattr(parent, attr))
    was_training = model.training
    model.eval()
    try:
        walk = start_walk(model, layers, linears, input_ids, batch_size, "collect its Grams with collect_grams.")
        owners, batches, probe, hidden = walk.owners, walk.batches, walk.probe, walk.first_inputs
        last = max(owners.values(), default=-1)
        for index in tqdm(range(last + 1), desc="whitening statistics", disable=not progress, leave=False):
            members = {name: linears[name] for name, i in owners.items() if i == index}
            groups = input_groups(model, members, probe) if members else []
            grams = _zero_grams(members, groups)
            outputs: list[torch.Tensor] = []
            handles = [*_accumulate(members, groups, grams), _stop_at(layers[index], outputs, before=False)]
            try:
                with start_at(model, adapter, index):
                    for h in hidden:
                        run_until_stopped(model, inputs_embeds=h, use_cache=False)
            finally:
                for h in handles:
                    h.remove()
            hidden = outputs
            if members:
                stats = GramStats(groups, grams, int(input_ids.numel()))
                del grams
                yield members, stats
                del stats
    finally:
        model.train(was_training)


__all__ = ["GramStats", "collect_grams", "grams_by_layer", "input_groups", "layer_owners"]
