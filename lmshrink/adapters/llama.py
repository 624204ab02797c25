"""Adapter for Llama-shaped decoders: Llama, Qwen2, Qwen3, Mistral, SmolLM2, ...

A model matches when its decoder layers sit at ``model.model.layers`` and each has ``self_attn``, ``mlp`` and the
two RMSNorms of the Llama block. Granularities:

- ``layer``: one block per decoder layer, gated as ``h_out = (1 − g)·h_in + g·layer(h_in)``, so g = 1 is the
  unchanged model and g = 0 skips the layer exactly.
- ``sublayer``: attention and MLP of each layer gated apart (2N blocks): ``h + g·attn(norm(h))`` and likewise
  for the MLP, so g = 0 removes that branch exactly (:mod:`lmshrink.adapters.sublayer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core import Block
from .decoder_stack import (  # noqa: F401  (re-exported: these helpers lived here before)
    DecoderStackAdapter,
    remap_per_layer_overrides,
    renumber_layer,
    rewrite_per_layer_config,
)

LINEAR_NAMES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


class LlamaAdapter(DecoderStackAdapter):
    """Llama-family decoders (decoder layers at ``model.model.layers``)."""

    name = "llama"
    description = "Llama-shaped decoders at model.model.layers: Llama, Qwen2, Qwen3, Mistral, SmolLM2"
    granularities = ("layer", "sublayer")
    layers_paths = ("model.layers",)
    layer_parts = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
    linear_names = LINEAR_NAMES

    def blocks(self, model: Any, granularity: str = "layer") -> list[Block]:
        if granularity == "sublayer":
            from .sublayer import sublayer_blocks

            return sublayer_blocks(model, self.layers_path(model))  # branches already removed are not listed
        return super().blocks(model, granularity)

    def remove(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> Any:
        from .sublayer import remove_sublayers, sync_record

        if granularity == "sublayer":
            return remove_sublayers(self, model, indices, self.layers_path(model))
        model = super().remove(model, indices, granularity)
        sync_record(model, self.layers_path(model))  # layers were renumbered: keep the record of removed branches
        return model

    def save_format(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> str:
        """``"lmshrink"`` when removing ``indices`` leaves a layer with only one of its two branches (call it before
        :meth:`remove`); ``"transformers"`` when every removed unit is a whole layer."""
        self.check_granularity(granularity)
        from .sublayer import sublayer_save_format

        return sublayer_save_format(model, indices, granularity, self.layers_path(model))

    def transforms(self) -> Mapping[str, Any]:
        from .sublayer import SUBLAYER_TRANSFORM

        return {SUBLAYER_TRANSFORM.name: SUBLAYER_TRANSFORM}
