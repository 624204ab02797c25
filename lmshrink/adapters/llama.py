"""Adapter for Llama-shaped decoders: Llama, Qwen2, Qwen3, Mistral, SmolLM2, ...

A model matches when its decoder layers sit at ``model.model.layers`` and each has ``self_attn``, ``mlp`` and the
two RMSNorms of the Llama block. Granularities:

- ``layer``: one block per decoder layer, gated as ``h_out = (1 − g)·h_in + g·layer(h_in)``, so g = 1 is the
  unchanged model and g = 0 skips the layer exactly.
- ``sublayer``: attention and MLP of each layer gated apart (2N blocks): ``h + g·attn(norm(h))`` and likewise
  for the MLP, so g = 0 removes that branch exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..core import ArchitectureAdapter, Block, Gates, LmshrinkError
from ..core.adapter import scaled_output_hook
from ..plugins import hookimpl

LINEAR_NAMES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _layers(model: Any) -> Any:
    return model.model.layers


def _module(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def rewrite_per_layer_config(config: Any, keep: Sequence[int], old_count: int) -> list[str]:
    """Filter every per-layer list of ``config`` (``layer_types`` and the like) to the kept layers.

    A per-layer list is a list or tuple attribute of length ``old_count`` whose name mentions "layer".
    Returns the names rewritten.
    """
    rewritten = []
    for key, value in list(vars(config).items()):
        if isinstance(value, (list, tuple)) and len(value) == old_count and "layer" in key:
            setattr(config, key, type(value)(value[i] for i in keep))
            rewritten.append(key)
    if remap_per_layer_overrides(config, keep):
        rewritten.append("per_layer_config")
    return rewritten


def remap_per_layer_overrides(config: Any, keep: Sequence[int]) -> bool:
    """Renumber the per-layer overrides of a heterogeneous config (``per_layer_config``) to the kept layers.

    Call it once the config reports the new layer count. Returns whether the config was heterogeneous.
    """
    spec = getattr(config, "__dict__", {}).get("_heterogeneity_spec")
    if spec is None:
        return False
    import copy

    old = spec.per_layer_overrides
    config.per_layer_config = None
    if hasattr(config, "num_hidden_layers") and "num_hidden_layers" in vars(config):
        config.num_hidden_layers = len(keep)
    config.per_layer_config = {new: copy.deepcopy(old[i]) for new, i in enumerate(keep) if i in old}
    return True


class LlamaAdapter(ArchitectureAdapter):
    """Llama-family decoders (decoder layers at ``model.model.layers``)."""

    name = "llama"
    description = "Llama-shaped decoders at model.model.layers: Llama, Qwen2, Qwen3, Mistral, SmolLM2"
    granularities = ("layer", "sublayer")

    def matches(self, model: Any) -> bool:
        layers = getattr(getattr(model, "model", None), "layers", None)
        if layers is None or len(layers) == 0:
            return False
        return all(
            all(hasattr(layer, a) for a in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"))
            for layer in layers
        )

    def _check(self, granularity: str) -> None:
        if granularity not in self.granularities:
            raise LmshrinkError(
                f"Adapter {self.name!r} has no granularity {granularity!r}; use one of {list(self.granularities)}."
            )

    def blocks(self, model: Any, granularity: str = "layer") -> list[Block]:
        self._check(granularity)
        n = len(_layers(model))
        if granularity == "layer":
            return [Block(i, f"model.layers.{i}", "layer", i) for i in range(n)]
        from .sublayer import sublayer_blocks

        return sublayer_blocks(model)  # branches already removed are not listed

    @contextmanager
    def gate(self, model: Any, gates: Gates, granularity: str = "layer") -> Iterator[None]:
        self._check(granularity)
        handles = []
        try:
            for block in self.blocks(model, granularity):
                module = _module(model, block.name)
                hook = _layer_hook if granularity == "layer" else scaled_output_hook
                handles.append(module.register_forward_hook(hook(gates, block.index), with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()

    def remove(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> Any:
        self._check(granularity)
        if granularity != "layer":
            from .sublayer import remove_sublayers

            return remove_sublayers(self, model, indices)
        import torch.nn as nn

        layers = _layers(model)
        n = len(layers)
        drop = set(int(i) for i in indices)
        bad = sorted(i for i in drop if not 0 <= i < n)
        if bad:
            raise LmshrinkError(f"Block index {bad[0]} is out of range for a model with {n} layers.")
        keep = [i for i in range(n) if i not in drop]
        if not keep:
            raise LmshrinkError("Refusing to remove every layer of the model.")
        model.model.layers = nn.ModuleList([layers[i] for i in keep])
        for new_idx, layer in enumerate(model.model.layers):
            renumber_layer(layer, new_idx)
        rewrite_per_layer_config(model.config, keep, n)
        model.config.num_hidden_layers = len(keep)
        from .sublayer import sync_record

        sync_record(model)  # layers were renumbered: keep the record of removed sub-layers in step
        return model

    def save_format(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> str:
        """``"lmshrink"`` when removing ``indices`` leaves a layer with only one of its two branches (call it before
        :meth:`remove`); ``"transformers"`` when every removed unit is a whole layer."""
        self._check(granularity)
        from .sublayer import sublayer_save_format

        return sublayer_save_format(model, indices, granularity)

    def layer_list(self, model: Any) -> tuple[Any, str]:
        return model.model, "layers"

    def linear_layers(self, model: Any) -> dict[str, Any]:
        out = {}
        for i, layer in enumerate(_layers(model)):
            for name in LINEAR_NAMES:
                try:
                    out[f"model.layers.{i}.{name}"] = _module(layer, name)
                except AttributeError:
                    continue
        return out


def renumber_layer(layer: Any, index: int) -> None:
    """Set every ``layer_idx`` inside ``layer`` (attention, KV cache bookkeeping) to ``index``."""
    for module in layer.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = index


def _mix(h: Any, out: Any, g: Any) -> Any:
    # (1 − g)·h + g·out is exactly h at g = 0 and exactly out at g = 1.
    return (1 - g) * h + g * out


def _layer_hook(gates: Gates, index: int):
    def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        h = args[0] if args else kwargs["hidden_states"]
        if isinstance(output, tuple):
            g = gates(index, output[0])
            return (_mix(h, output[0], g), *output[1:])
        return _mix(h, output, gates(index, output))

    return hook


@hookimpl
def lmshrink_register_adapters(register: Any) -> None:
    register(LlamaAdapter)
