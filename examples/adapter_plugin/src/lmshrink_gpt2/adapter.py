"""``GPT2Adapter``: whole-block removal for GPT-2 (``GPT2LMHeadModel``, blocks at ``transformer.h``).

Each GPT-2 block is ``h + attn(ln_1(h))`` then ``+ mlp(ln_2(h))``; the adapter treats a block as one removable unit
of kind ``layer``. :class:`~lmshrink.adapters.DecoderStackAdapter` does the work from the declarations below: it
gates each block as ``(1 − g)·h_in + g·block(h_in)`` (exact at g = 0 and 1), and removal drops blocks from
``transformer.h``, renumbers ``layer_idx`` (the KV cache addresses its entries by it) and sets ``config.n_layer``,
so ``save_pretrained`` / ``from_pretrained`` round-trip the smaller model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lmshrink
from lmshrink.adapters import DecoderStackAdapter


class GPT2Adapter(DecoderStackAdapter):
    """GPT-2 decoders: one block per ``transformer.h`` entry."""

    name = "gpt2"
    description = "GPT-2 decoders, one block per transformer.h entry; example plugin lmshrink-gpt2"
    model_types = ("gpt2",)
    layers_paths = ("transformer.h",)
    layer_parts = ("attn", "mlp")
    layer_count = "n_layer"
    # GPT-2 adds its position embeddings to ``inputs_embeds`` inside the model, so ``model(inputs_embeds=h)`` does
    # not run the blocks on ``h`` alone: no mid-stack measurements. Its projections are transposed ``Conv1D``
    # modules, not ``nn.Linear``, so no ``linear_names`` for SVD compression either.
    mid_stack = False

    def removal_error(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> str | None:
        if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
            # the attention scale depends on the block's position: a renumbered block would compute differently
            return "GPT2Adapter cannot remove blocks of a model with scale_attn_by_inverse_layer_idx."
        return None


@lmshrink.hookimpl
def lmshrink_register_adapters(register: Any) -> None:
    """Tell lmshrink about the adapter (called once when lmshrink loads its plugins)."""
    register(GPT2Adapter)
