"""Forward passes that start mid-stack from a cached hidden state.

Removing blocks at or after layer L leaves every hidden state before L unchanged, so the loss of such a removal
only needs layers L.. of the network run on the cached input of layer L. Adapters opt in through
:meth:`~lmshrink.core.ArchitectureAdapter.layer_list`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..core import Gates
from ..core.errors import LmshrinkError
from ..torch_utils import frozen
from .loss import model_inputs, token_nll
from .stopping import StopPass, run_until_stopped


@contextmanager
def start_at(model: Any, adapter: Any, layer: int, skip: Collection[int] = ()) -> Iterator[None]:
    """Within the context, ``model(inputs_embeds=h)`` runs decoder layers ``layer, layer+1, ...`` only, leaving out
    the layers in ``skip`` (layers gated off whole, which pass their input through)."""
    parent, attr = adapter.layer_list(model)
    full = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList([m for i, m in enumerate(full) if i >= layer and i not in skip]))
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


def logits_from_hidden(model: Any, adapter: Any, layer: int, hidden: torch.Tensor,
                       skip: Collection[int] = ()) -> torch.Tensor:
    """The logits of every position when the network runs from decoder layer ``layer`` on ``hidden`` (the input of
    ``layer``; the number of layers runs the head only), leaving out the layers in ``skip``."""
    with start_at(model, adapter, layer, skip):
        return model(inputs_embeds=hidden, use_cache=False).logits


def loss_from_hidden(model: Any, adapter: Any, layer: int, hidden: torch.Tensor, input_ids: torch.Tensor,
                     skip: Collection[int] = ()) -> torch.Tensor:
    """Per-sample next-token loss of ``input_ids`` when the network runs from ``layer`` on ``hidden`` (float64),
    leaving out the layers in ``skip``."""
    logits = logits_from_hidden(model, adapter, layer, hidden, skip)[:, :-1]
    return token_nll(logits, input_ids).mean(dim=1)


@dataclass(frozen=True)
class RemovalPass:
    """Where the forward pass of a removal starts: it reads the kept input of decoder layer ``first`` and runs
    layers ``start, start+1, …`` on it (``start`` = ``first`` + 1 when layer ``first`` is a gated-off whole layer,
    which passes its input through), leaving out the layers in ``skip`` (at granularity ``layer``, the removed
    ones: a gated-off layer passes its input through exactly, so it need not run); ``embedding_map`` multiplies
    that input when a healed run maps the embeddings (``first`` is 0 then)."""

    first: int
    start: int
    embedding_map: Any = None
    skip: frozenset[int] = frozenset()

    @classmethod
    def of(cls, blocks: Sequence[Any], removed: Sequence[int], runs: Sequence[Any] | None = None,
           granularity: str = "layer") -> RemovalPass:
        """The pass for the non-empty ``removed`` (indices into ``blocks``), healed by ``runs``
        (:class:`lmshrink.heal.linear.HealedRun`): a map on a branch before the first removed unit makes the pass
        start at that branch's layer."""
        first = min(blocks[b].layer for b in removed)
        start = min(blocks[b].layer + (1 if blocks[b].kind == "layer" else 0) for b in removed)
        skip = frozenset(blocks[b].layer for b in removed) if granularity == "layer" else frozenset()
        embedding_map = None
        for run in runs or ():
            if not run.healed:
                continue
            if run.branch_layer is None:  # mid-stack passes skip the embeddings: their map is applied by hand
                embedding_map = torch.as_tensor(run.map)
            else:  # the branch before the run must run for its map to apply
                first = min(first, run.branch_layer)
                start = min(start, run.branch_layer)
        return cls(first, start, embedding_map, skip)

    def hidden(self, streams: LayerInputs, k: int, rows: slice = slice(None)) -> torch.Tensor:
        """The pass's input for batch ``k`` of ``streams`` (its ``rows``), the embedding map applied."""
        hidden = streams.at(self.first)[k][rows]
        if self.embedding_map is not None and self.first == 0:
            hidden = hidden @ self.embedding_map.to(hidden.device, hidden.dtype)
        return hidden


@contextmanager
def removed_in(model: Any, adapter: Any, blocks: Sequence[Any], removed: Sequence[int], granularity: str,
               runs: Sequence[Any] | None = None) -> Iterator[None]:
    """Within the context, the blocks ``removed`` are gated off (no copy of the model) and the healed ``runs``'
    maps applied by hooks."""
    values = torch.ones(len(blocks))
    values[list(removed)] = 0.0
    with adapter.gate(model, Gates(values), granularity), maps_applied(model, adapter, runs or ()):
        yield


class HealingMap(Protocol):
    """A fitted map of a removed run that multiplies a branch's output (as
    :class:`lmshrink.heal.linear.HealedRun` does), applied while measuring by a forward hook."""

    @property
    def healed(self) -> bool:
        """Whether there is a map to apply."""

    def hook(self, model: Any, adapter: Any) -> Any:
        """Register the map's forward hook on ``model``; its handle."""


@contextmanager
def maps_applied(model: Any, adapter: Any, runs: Sequence[HealingMap]) -> Iterator[None]:
    """Within the context, the healed ``runs``' maps multiply their branches' outputs (full model numbering)."""
    handles = []
    try:
        for run in runs:
            if run.healed:
                handles.append(run.hook(model, adapter))
        yield
    finally:
        for h in handles:
            h.remove()


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
