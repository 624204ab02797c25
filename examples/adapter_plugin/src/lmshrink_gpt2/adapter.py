"""``GPT2Adapter``: whole-block removal for GPT-2 (``GPT2LMHeadModel``, blocks at ``transformer.h``).

Each GPT-2 block is ``h + attn(ln_1(h))`` then ``+ mlp(ln_2(h))``; the adapter treats a block as one removable
unit of kind ``layer``:

- ``gate`` installs a forward hook per block that returns ``(1 − g)·h_in + g·block(h_in)``, exact at g = 1 (the
  block's own output) and at g = 0 (the block skipped). ``g`` may be one value per block or one per sample and
  block (``Gates`` broadcasts it).
- ``remove`` drops blocks from ``transformer.h``, renumbers ``layer_idx`` (the KV cache addresses its entries by
  it) and sets ``config.n_layer``, so ``save_pretrained`` / ``from_pretrained`` round-trip the smaller model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lmshrink
from lmshrink import ArchitectureAdapter, Block, LmshrinkError
from lmshrink.core import Gates


class GPT2Adapter(ArchitectureAdapter):
    """GPT-2 decoders: one block per ``transformer.h`` entry."""

    name = "gpt2"
    description = "GPT-2 decoders, one block per transformer.h entry; example plugin lmshrink-gpt2"
    granularities = ("layer",)

    def matches(self, model: Any) -> bool:
        config = getattr(model, "config", None)
        blocks = getattr(getattr(model, "transformer", None), "h", None)
        return getattr(config, "model_type", None) == "gpt2" and blocks is not None and len(blocks) > 0

    def _check(self, granularity: str) -> None:
        if granularity not in self.granularities:
            raise LmshrinkError(f"Adapter {self.name!r} has no granularity {granularity!r}; use 'layer'.")

    def blocks(self, model: Any, granularity: str = "layer") -> list[Block]:
        self._check(granularity)
        return [Block(i, f"transformer.h.{i}", "layer", i) for i in range(len(model.transformer.h))]

    @contextmanager
    def gate(self, model: Any, gates: Gates, granularity: str = "layer") -> Iterator[None]:
        self._check(granularity)
        handles = []
        try:
            for i, block in enumerate(model.transformer.h):
                handles.append(block.register_forward_hook(_mix_hook(gates, i), with_kwargs=True))
            yield
        finally:  # always take the hooks off, even when the body raised
            for handle in handles:
                handle.remove()

    def remove(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> Any:
        self._check(granularity)
        import torch.nn as nn

        if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
            # the attention scale depends on the block's position: a renumbered block would compute differently
            raise LmshrinkError("GPT2Adapter cannot remove blocks of a model with scale_attn_by_inverse_layer_idx.")
        blocks = model.transformer.h
        drop = {int(i) for i in indices}
        bad = sorted(i for i in drop if not 0 <= i < len(blocks))
        if bad:
            raise LmshrinkError(f"Block index {bad[0]} is out of range for a model with {len(blocks)} blocks.")
        keep = [i for i in range(len(blocks)) if i not in drop]
        if not keep:
            raise LmshrinkError("Refusing to remove every block of the model.")
        model.transformer.h = nn.ModuleList([blocks[i] for i in keep])
        for new_idx, block in enumerate(model.transformer.h):
            for module in block.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_idx
        model.config.n_layer = len(keep)
        return model

    # ``layer_list`` (optional, for mid-stack measurements) stays None: GPT-2 adds its position embeddings to
    # ``inputs_embeds`` inside the model, so ``model(inputs_embeds=h)`` would not run the blocks on ``h`` alone.
    # ``linear_layers`` (optional, for SVD compression) is not offered either: GPT-2 stores its projections as
    # transposed ``Conv1D`` modules, not ``nn.Linear``.


def _mix_hook(gates: Gates, index: int):
    def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        h = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output
        g = gates(index, out)
        mixed = (1 - g) * h + g * out
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

    return hook


@lmshrink.hookimpl
def lmshrink_register_adapters(register: Any) -> None:
    """Tell lmshrink about the adapter (called once when lmshrink loads its plugins)."""
    register(GPT2Adapter)
