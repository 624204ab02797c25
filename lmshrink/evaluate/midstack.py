"""Forward passes that start mid-stack from a cached hidden state.

Removing blocks at or after layer L leaves every hidden state before L unchanged, so the loss of such a removal
only needs layers L.. of the network run on the cached input of layer L. Adapters opt in through
:meth:`~lmshrink.core.ArchitectureAdapter.layer_list`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .loss import token_nll


@contextmanager
def start_at(model: Any, adapter: Any, layer: int) -> Iterator[None]:
    """Within the context, ``model(inputs_embeds=h)`` runs decoder layers ``layer, layer+1, ...`` only."""
    parent, attr = adapter.layer_list(model)
    full = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList(list(full)[layer:]))
    try:
        yield
    finally:
        setattr(parent, attr, full)


@contextmanager
def capture_layer_inputs(model: Any, adapter: Any, store: dict[int, torch.Tensor]) -> Iterator[None]:
    """Record the input hidden state of every decoder layer that runs, keyed by its index in the full stack."""
    parent, attr = adapter.layer_list(model)
    handles = []

    def hook_for(index: int):
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            store[index] = (args[0] if args else kwargs["hidden_states"]).detach()

        return hook

    for index, layer in enumerate(getattr(parent, attr)):
        handles.append(layer.register_forward_pre_hook(hook_for(index), with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def loss_from_hidden(model: Any, adapter: Any, layer: int, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-sample next-token loss of ``input_ids`` when the network runs from ``layer`` on ``hidden`` (float64)."""
    with start_at(model, adapter, layer):
        logits = model(inputs_embeds=hidden, use_cache=False).logits[:, :-1]
    return token_nll(logits, input_ids).mean(dim=1)
