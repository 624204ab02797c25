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

from .loss import model_inputs, token_nll
from .stopping import StopPass, run_until_stopped


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


class LayerInputs:
    """The unmodified model's input to every decoder layer, and the last layer's output, on fixed windows.

    One forward pass over ``input_ids`` (windows × seq_len), in batches of ``batch_size`` windows, stopped after the
    last decoder layer; the hidden states stay on the model's device in its dtype, (layers + 1) × windows × seq_len ×
    hidden numbers. ``at(l)`` lists, per batch, the input of layer ``l`` (``l`` = the number of layers: the last
    layer's output). Passes that change nothing before layer ``l`` can start there (:func:`start_at`) instead of
    at the embeddings; linear healing reads its targets and starts its captures from here when fitting many
    removal sets on the same samples.
    """

    def __init__(self, model: Any, adapter: Any, input_ids: torch.Tensor, batch_size: int = 8) -> None:
        from ..core.errors import LmshrinkError
        from ..objectives.common import frozen

        found = adapter.layer_list(model)
        if found is None:
            raise LmshrinkError(f"Adapter {adapter.name!r} does not expose its decoder layer list (layer_list), "
                                "which passes that start mid-stack need.")
        layers = getattr(*found)
        self.input_ids = input_ids
        self.num_layers = len(layers)
        n, size = input_ids.shape[0], max(int(batch_size), 1)
        self.batches = [slice(s, min(s + size, n)) for s in range(0, n, size)]
        self._hidden: dict[int, list[torch.Tensor]] = {layer: [] for layer in range(self.num_layers + 1)}

        def keep_last(module: Any, args: tuple, output: Any) -> None:
            store[self.num_layers] = (output[0] if isinstance(output, (tuple, list)) else output).detach()
            raise StopPass

        last = layers[self.num_layers - 1].register_forward_hook(keep_last)
        try:
            with frozen(model), torch.no_grad():
                for batch in self.batches:
                    store: dict[int, torch.Tensor] = {}
                    with capture_layer_inputs(model, adapter, store):
                        run_until_stopped(model, input_ids=model_inputs(model, input_ids[batch]), use_cache=False)
                    for layer, hidden in store.items():
                        self._hidden[layer].append(hidden)
        finally:
            last.remove()

    def at(self, layer: int) -> list[torch.Tensor]:
        """Per batch, the input of decoder layer ``layer`` in the unmodified model (the last layer's output for
        ``layer`` = :attr:`num_layers`)."""
        return self._hidden[layer]

    def ids(self, k: int) -> torch.Tensor:
        """The token ids of batch ``k``."""
        return self.input_ids[self.batches[k]]
