"""``DecoderStackAdapter``: the shared machinery of adapters for models whose removable blocks are the entries of
one ``nn.ModuleList`` of decoder layers (Llama, Qwen, Mistral, Nemotron-H, GPT-2, GPT-NeoX, ...).

A subclass declares where the layer list is, what each layer must contain, what to gate and which linear layers
SVD may factor; the base class does the rest at granularity ``layer``:

- ``blocks``: one :class:`~lmshrink.core.Block` per layer, named by its module path, of the kind
  :meth:`~DecoderStackAdapter.layer_kinds` reports (``layer`` unless the subclass reads kinds from the config);
- ``gate``: a forward hook per block, ``(1 − g)·h + g·layer(h)`` on the whole layer, or ``h + g·f(norm(h))`` by
  scaling the output of :attr:`~DecoderStackAdapter.gated_part` (both exact at g = 0 and g = 1), always removed;
- ``remove``: indices checked, :meth:`~lmshrink.core.ArchitectureAdapter.removal_error` consulted, the layer list
  rebuilt, every ``layer_idx`` renumbered (the KV cache addresses its entries by it) and the config rewritten
  (layer count and every per-layer list) so that ``AutoModelForCausalLM.from_pretrained`` reloads the model;
- ``layer_list`` (mid-stack measurements) and ``linear_layers`` (SVD compression).

Module paths are resolved with ``nn.Module.get_submodule``, which follows child modules only. Nothing here
imports torch at import time.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from ..core import ArchitectureAdapter, Block, Gates, LmshrinkError
from ..core.adapter import mixed_output_hook, scaled_output_hook


def renumber_layer(layer: Any, index: int) -> None:
    """Set every ``layer_idx`` inside ``layer`` (the layer, its attention, its cache bookkeeping) to ``index``."""
    for module in layer.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = index


def checked_indices(indices: Sequence[Any], count: int, unit: str = "blocks") -> list[int]:
    """``indices`` as sorted ints, each in 0..count-1 and listed once, or one sentence saying which is not."""
    out = []
    for i in indices:
        try:
            out.append(operator.index(i))
        except TypeError:
            raise LmshrinkError(f"Block index {i!r} is not an integer.") from None
    bad = [i for i in out if not 0 <= i < count]
    if bad:
        raise LmshrinkError(f"Block index {bad[0]} is out of range for a model with {count} {unit}.")
    if len(set(out)) != len(out):
        raise LmshrinkError("A block index is listed twice.")
    return sorted(out)


def remap_per_layer_overrides(config: Any, keep: Sequence[int]) -> bool:
    """Renumber the per-layer overrides of a heterogeneous config (``per_layer_config``) to the kept layers.

    Call it once the config reports the new layer count. Returns whether the config was heterogeneous.
    """
    spec = getattr(config, "__dict__", {}).get("_heterogeneity_spec")
    if spec is None:
        return False
    old = spec.per_layer_overrides
    config.per_layer_config = None
    if hasattr(config, "num_hidden_layers") and "num_hidden_layers" in vars(config):
        config.num_hidden_layers = len(keep)
    config.per_layer_config = {new: copy.deepcopy(old[i]) for new, i in enumerate(keep) if i in old}
    return True


def rewrite_per_layer_config(config: Any, keep: Sequence[int], old_count: int) -> list[str]:
    """Filter every per-layer list of ``config`` (``layer_types`` and the like) to the kept layers.

    A per-layer list is a list or tuple attribute of length ``old_count`` whose name mentions "layer".
    Heterogeneous per-layer overrides are renumbered too. Returns the names rewritten.
    """
    rewritten = []
    for key, value in list(vars(config).items()):
        if isinstance(value, (list, tuple)) and len(value) == old_count and "layer" in key:
            setattr(config, key, type(value)(value[i] for i in keep))
            rewritten.append(key)
    if remap_per_layer_overrides(config, keep):
        rewritten.append("per_layer_config")
    return rewritten


class DecoderStackAdapter(ArchitectureAdapter):
    """Base class of adapters for a stack of decoder layers held in one ``nn.ModuleList``.

    Declare, as class attributes: :attr:`layers_paths`, :attr:`layer_parts`, and where they differ from the
    defaults :attr:`model_types`, :attr:`gated_part`, :attr:`linear_names`, :attr:`layer_count` and
    :attr:`mid_stack`. Override :meth:`layer_kinds` when blocks have kinds other than ``layer``,
    :meth:`rewrite_config` when the config describes layers in some other way than lists,
    and :meth:`~lmshrink.core.ArchitectureAdapter.removal_error` to refuse removals the architecture cannot run.
    """

    #: ``config.model_type`` values this adapter accepts; empty: any model with the declared layout
    model_types: ClassVar[tuple[str, ...]] = ()
    #: candidate module paths of the ``nn.ModuleList`` of decoder layers, tried in order (e.g. ``"model.layers"``)
    layers_paths: ClassVar[tuple[str, ...]] = ("model.layers",)
    #: child modules every decoder layer must have for a model to match (e.g. ``("self_attn", "mlp")``)
    layer_parts: ClassVar[tuple[str, ...]] = ()
    #: None: gate the whole layer, ``(1 − g)·h + g·layer(h)``; a child path of the layer (e.g. ``"mixer"``) whose
    #: output is scaled instead, ``h + g·part(norm(h))`` (the part must be the layer's only residual branch)
    gated_part: ClassVar[str | None] = None
    #: paths inside a layer of the ``nn.Linear`` modules SVD compression may factor, or such tuples by block kind
    linear_names: ClassVar[tuple[str, ...] | Mapping[str, tuple[str, ...]]] = ()
    #: the config field that holds the number of layers
    layer_count: ClassVar[str | None] = "num_hidden_layers"
    #: whether ``model(inputs_embeds=h)`` runs exactly the decoder layers on ``h`` (no position embeddings or
    #: scaling added to it); enables :meth:`layer_list`
    mid_stack: ClassVar[bool] = True

    # --- layout ---------------------------------------------------------------------------------------------------

    def layers_path(self, model: Any) -> str:
        """The module path of ``model``'s decoder layer list (the first of :attr:`layers_paths` that exists)."""
        import torch.nn as nn

        for path in self.layers_paths:
            try:
                layers = model.get_submodule(path)
            except AttributeError:
                continue
            if isinstance(layers, nn.ModuleList):
                return path
        raise LmshrinkError(
            f"{type(model).__name__} has no decoder layer list at {' or '.join(self.layers_paths)}."
        )

    def layers(self, model: Any) -> Any:
        """The ``nn.ModuleList`` of decoder layers."""
        return model.get_submodule(self.layers_path(model))

    def layer_kinds(self, model: Any) -> list[str]:
        """The block kind of every decoder layer; ``layer`` for all by default."""
        return ["layer"] * len(self.layers(model))

    def matches(self, model: Any) -> bool:
        config = getattr(model, "config", None)
        if self.model_types and getattr(config, "model_type", None) not in self.model_types:
            return False
        if not hasattr(model, "get_submodule"):
            return False
        try:
            layers = self.layers(model)
            kinds = self.layer_kinds(model)
        except LmshrinkError:
            return False
        return 0 < len(layers) == len(kinds) and all(
            all(hasattr(layer, part) for part in self.layer_parts) for layer in layers
        )

    # --- the contract ---------------------------------------------------------------------------------------------

    def blocks(self, model: Any, granularity: str = "layer") -> list[Block]:
        self.check_granularity(granularity)
        path = self.layers_path(model)
        kinds = self.layer_kinds(model)
        count = len(model.get_submodule(path))
        if len(kinds) != count:
            raise LmshrinkError(
                f"The config lists {len(kinds)} blocks but the model has {count}: config and model disagree."
            )
        return [Block(i, f"{path}.{i}", kind, i) for i, kind in enumerate(kinds)]

    @contextmanager
    def gate(self, model: Any, gates: Gates, granularity: str = "layer") -> Iterator[None]:
        self.check_granularity(granularity)
        handles = []
        try:
            for block in self.blocks(model, granularity):
                module = model.get_submodule(block.name)
                if granularity == "layer" and self.gated_part is None:
                    hook = mixed_output_hook(gates, block.index)
                else:  # a branch: the gated part of a layer, or a sub-layer block
                    if granularity == "layer":
                        module = module.get_submodule(self.gated_part)
                    hook = scaled_output_hook(gates, block.index)
                handles.append(module.register_forward_hook(hook, with_kwargs=True))
            yield
        finally:  # take every hook off, also when the body raised
            for handle in handles:
                handle.remove()

    def remove(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> Any:
        self.check_granularity(granularity)
        import torch.nn as nn

        path = self.layers_path(model)
        layers = model.get_submodule(path)
        count = len(layers)
        drop = set(checked_indices(indices, count))
        keep = [i for i in range(count) if i not in drop]
        if not keep:
            raise LmshrinkError("Refusing to remove every layer of the model.")
        reason = self.removal_error(model, sorted(drop), granularity)
        if reason:
            raise LmshrinkError(reason)
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.ModuleList([layers[i] for i in keep]))
        for new_idx, layer in enumerate(model.get_submodule(path)):
            renumber_layer(layer, new_idx)
        self.rewrite_config(model.config, keep, count)
        return model

    def rewrite_config(self, config: Any, keep: Sequence[int], old_count: int) -> list[str]:
        """Rewrite ``config`` for the kept layers: every per-layer list (:func:`rewrite_per_layer_config`) and
        :attr:`layer_count`. Returns the fields rewritten."""
        rewritten = rewrite_per_layer_config(config, keep, old_count)
        if self.layer_count:
            setattr(config, self.layer_count, len(keep))
            rewritten.append(self.layer_count)
        return rewritten

    def layer_list(self, model: Any) -> tuple[Any, str] | None:
        if not self.mid_stack:
            return None
        parent, _, attr = self.layers_path(model).rpartition(".")
        return model.get_submodule(parent), attr

    def linear_layers(self, model: Any) -> dict[str, Any]:
        """The ``nn.Linear`` modules at :attr:`linear_names` in every layer, by module path (missing ones skipped)."""
        if not self.linear_names:
            return super().linear_layers(model)
        import torch.nn as nn

        path = self.layers_path(model)
        out = {}
        for i, (layer, kind) in enumerate(zip(model.get_submodule(path), self.layer_kinds(model))):
            names = self.linear_names.get(kind, ()) if isinstance(self.linear_names, Mapping) else self.linear_names
            for name in names:
                try:
                    module = layer.get_submodule(name)
                except AttributeError:
                    continue
                if isinstance(module, nn.Linear):
                    out[f"{path}.{i}.{name}"] = module
        return out


__all__ = [
    "DecoderStackAdapter",
    "checked_indices",
    "remap_per_layer_overrides",
    "renumber_layer",
    "rewrite_per_layer_config",
]
