"""Adapter for NVIDIA Nemotron-H hybrids (``NemotronHForCausalLM``), e.g. NVIDIA-Nemotron-3-Nano-30B-A3B.

A Nemotron-H decoder is a stack of blocks, each a single mixer of one kind behind a pre-norm and a residual:
``h + mixer(norm(h))``. The mixer kinds come from ``config.layers_block_type`` (the older configs' string
``hybrid_override_pattern``: M = Mamba2, E = MoE, * = attention, - = MLP). Every block is one removable unit
(granularity ``layer``) whose kind is read from the config:

====================  ==========  ======================================
``layers_block_type``  pattern     block kind reported
====================  ==========  ======================================
``linear_attention``   ``M``       ``mamba``
``full_attention``     ``*``       ``attention``
``moe``                ``E``       ``moe``
``mlp``                ``-``       ``mlp``
====================  ==========  ======================================

Gating multiplies the mixer's output, ``h + g·mixer(norm(h))``: exact at g = 1 and g = 0.

Removal deletes the blocks, renumbers the ``layer_idx`` of the kept blocks and their mixers, and rewrites
``layers_block_type`` (and every other per-layer field: a stored ``hybrid_override_pattern`` string in configs
that keep one, ``num_hidden_layers`` where it is stored, heterogeneous ``per_layer_config`` overrides), so
``AutoModelForCausalLM.from_pretrained`` rebuilds the smaller model. The cache needs nothing more: transformers'
``DynamicCache(config=...)`` builds one cache layer per block from ``config.layer_types`` (a recurrent
conv/SSM-state layer for each Mamba2 block, a growing KV layer for each attention block, an empty placeholder
for MoE/MLP blocks) and every mixer addresses its own entry by its ``layer_idx``; with the list rewritten and the
indices renumbered to the new positions, the two agree again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core import LmshrinkError
from .decoder_stack import DecoderStackAdapter, remap_per_layer_overrides

#: Nemotron-H block type (current and legacy names) → lmshrink block kind
KIND_OF: dict[str, str] = {
    "linear_attention": "mamba",
    "mamba": "mamba",
    "full_attention": "attention",
    "attention": "attention",
    "moe": "moe",
    "mlp": "mlp",
}
#: pattern character → block type, as in ``NemotronHConfig``
PATTERN: dict[str, str] = {"M": "linear_attention", "E": "moe", "*": "full_attention", "-": "mlp"}
#: block kind → pattern character
PATTERN_CHAR: dict[str, str] = {"mamba": "M", "moe": "E", "attention": "*", "mlp": "-"}

#: the ``nn.Linear`` modules SVD compression may factor, by block kind. The routed experts are 3-D parameter
#: tensors, not linear layers, and the Mamba2 projections pack several unrelated maps (gate, x, B, C, dt) into one
#: matrix; neither is listed.
LINEAR_NAMES = {
    "attention": ("mixer.q_proj", "mixer.k_proj", "mixer.v_proj", "mixer.o_proj"),
    "mlp": ("mixer.up_proj", "mixer.down_proj"),
    "moe": (
        "mixer.shared_experts.up_proj",
        "mixer.shared_experts.down_proj",
        "mixer.fc1_latent_proj",
        "mixer.fc2_latent_proj",
    ),
    "mamba": (),
}


def block_types(config: Any) -> list[str]:
    """The per-block mixer types of a Nemotron-H config (``layers_block_type``, else ``hybrid_override_pattern``)."""
    types = getattr(config, "layers_block_type", None)
    if types is not None:
        return list(types)
    pattern = getattr(config, "hybrid_override_pattern", None)
    if isinstance(pattern, str):
        try:
            return [PATTERN[c] for c in pattern]
        except KeyError as exc:
            raise LmshrinkError(f"hybrid_override_pattern {pattern!r} has an unknown block character {exc}.") from None
    raise LmshrinkError("This Nemotron-H config has neither layers_block_type nor hybrid_override_pattern.")


def block_kinds(config: Any) -> list[str]:
    """The lmshrink block kind of every block of a Nemotron-H config."""
    kinds = []
    for i, t in enumerate(block_types(config)):
        if t not in KIND_OF:
            raise LmshrinkError(f"Block {i} of this Nemotron-H model has type {t!r}, unknown to lmshrink ({sorted(KIND_OF)}).")
        kinds.append(KIND_OF[t])
    return kinds


def pattern_of(config: Any) -> str:
    """The block pattern of a config as a string, e.g. ``"MEM*E"``."""
    return "".join(PATTERN_CHAR[k] for k in block_kinds(config))


def rewrite_config(config: Any, keep: Sequence[int]) -> list[str]:
    """Rewrite every per-block field of a Nemotron-H config to the kept blocks; returns the fields rewritten.

    ``layers_block_type`` is the source of truth in current transformers (``hybrid_override_pattern`` and
    ``num_hidden_layers`` are read-only properties derived from it there); configs that store the pattern string
    or the layer count as plain fields (older transformers, remote code) get those rewritten as well.
    ``mtp_layers_block_type`` describes the multi-token-prediction layers, not the decoder, and is left alone.
    """
    stored = vars(config)
    old = block_types(config)
    rewritten = []
    if "layers_block_type" in stored or getattr(config, "layers_block_type", None) is not None:
        config.layers_block_type = [old[i] for i in keep]
        rewritten.append("layers_block_type")
    pattern = stored.get("hybrid_override_pattern")
    if isinstance(pattern, str) and len(pattern) == len(old):
        config.hybrid_override_pattern = "".join(pattern[i] for i in keep)
        rewritten.append("hybrid_override_pattern")
    if "num_hidden_layers" in stored:
        config.num_hidden_layers = len(keep)
        rewritten.append("num_hidden_layers")
    if remap_per_layer_overrides(config, keep):
        rewritten.append("per_layer_config")
    return rewritten


class NemotronHAdapter(DecoderStackAdapter):
    """NVIDIA Nemotron-H hybrids: one block per mixer (Mamba2, attention, MLP or MoE), kinds from the config."""

    name = "nemotron_h"
    description = "NVIDIA Nemotron-H hybrids such as Nemotron-3-Nano-30B-A3B, one block per Mamba2/attention/MLP/MoE mixer"
    granularities = ("layer",)
    model_types = ("nemotron_h", "nemotronh")
    layers_paths = ("model.layers", "backbone.layers")  # transformers, remote code
    layer_parts = ("mixer", "norm")
    gated_part = "mixer"
    linear_names = LINEAR_NAMES

    def layer_kinds(self, model: Any) -> list[str]:
        return block_kinds(model.config)

    def rewrite_config(self, config: Any, keep: Sequence[int], old_count: int) -> list[str]:
        return rewrite_config(config, keep)

    def removal_error(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> str | None:
        kinds = block_kinds(model.config)
        drop = set(int(i) for i in indices)
        if "attention" in kinds and all(kinds[i] != "attention" or i in drop for i in range(len(kinds))):
            return (
                "Refusing to remove every attention block: transformers cannot run a Nemotron-H model without one "
                "(its cache counts the tokens seen in an attention layer, so even model(ids) with the default "
                "use_cache=True fails). Keep at least one attention block, e.g. --remove attention=N-1."
            )
        return None
