"""``GPTNeoXAdapter``: whole-layer removal for GPT-NeoX models (Pythia, GPT-NeoX-20B; ``GPTNeoXForCausalLM``).

A GPT-NeoX layer adds attention and MLP to the residual stream (in parallel, or one after the other), so each
layer is one removable unit. Everything else comes from :class:`~lmshrink.adapters.DecoderStackAdapter`: gates,
removal with ``layer_idx`` renumbered for the KV cache, the config's layer count rewritten, mid-stack
measurements (rotary positions are applied inside attention, so ``model(inputs_embeds=h)`` runs the layers on
``h`` alone) and the linear layers SVD compression may factor.
"""

from __future__ import annotations

from typing import Any

import lmshrink
from lmshrink.adapters import DecoderStackAdapter


class GPTNeoXAdapter(DecoderStackAdapter):
    """GPT-NeoX decoders: one block per ``gpt_neox.layers`` entry."""

    name = "gpt_neox"
    description = "GPT-NeoX decoders (Pythia), one block per gpt_neox.layers entry; example plugin lmshrink-gpt-neox"
    model_types = ("gpt_neox",)
    layers_paths = ("gpt_neox.layers",)
    layer_parts = ("attention", "mlp", "input_layernorm", "post_attention_layernorm")
    linear_names = (
        "attention.query_key_value",
        "attention.dense",
        "mlp.dense_h_to_4h",
        "mlp.dense_4h_to_h",
    )


@lmshrink.hookimpl
def lmshrink_register_adapters(register: Any) -> None:
    """Tell lmshrink about the adapter (called once when lmshrink loads its plugins)."""
    register(GPTNeoXAdapter)
