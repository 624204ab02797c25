"""Sub-layer removal for Llama-shaped decoders: delete a layer's attention or its MLP, keep the rest.

A decoder layer computes ``h + attn(norm₁(h))`` then ``h + mlp(norm₂(h))``. Removing one branch replaces it by a
module without parameters that returns zeros of the right shape (:class:`RemovedAttention`,
:class:`RemovedMLP`), so the residual passes through unchanged and the branch's weights are really gone from
the saved file. The layer's now-unused norm stays (it holds a single vector).

Plain transformers cannot express "layer 3 has no attention", so such a model is saved in lmshrink's own format
(:mod:`lmshrink.compress.io`): this module defines the ``remove_sublayers`` transform (:data:`SUBLAYER_TRANSFORM`,
declared by the llama adapter's ``transforms()``) that checks a saved record and replays the replacement on a
freshly built stock model before the weights load. When both branches of a layer go, the
layer is removed as a whole layer (renumbering the rest and rewriting the config), which plain transformers
does express; a model whose removed units are all whole layers keeps the plain transformers format.

The recorded transform is a snapshot of the model's current structure (which branches of which layers are
gone, in the final layer numbering); every removal refreshes it in place, so a later layer removal that
renumbers the layers keeps it correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn as nn

from ..compress.io import TransformType, check_int, check_keys, resolve_module, set_transform
from ..compress.remote.modeling_lmshrink import RemovedAttention, RemovedMLP, kv_shape
from ..core import Block, LmshrinkError
from .decoder_stack import checked_indices

TRANSFORM = "remove_sublayers"
#: the default location of the decoder layers of a Llama-shaped model
LAYERS_PATH = "model.layers"
#: the removable branches of a Llama-shaped decoder layer: attribute → block kind
BRANCHES: dict[str, str] = {"self_attn": "attention", "mlp": "mlp"}


def is_removed(module: Any) -> bool:
    """Whether ``module`` is a placeholder for a deleted branch."""
    return isinstance(module, (RemovedAttention, RemovedMLP))


def placeholder(model: Any, attr: str, layer_idx: int) -> nn.Module:
    """The parameter-free module that replaces branch ``attr`` of decoder layer ``layer_idx``."""
    if BRANCHES.get(attr) == "attention":
        return RemovedAttention(layer_idx, *kv_shape(model.config))
    if attr in BRANCHES:
        return RemovedMLP()
    raise LmshrinkError(f"Unknown decoder-layer branch {attr!r}; expected one of {list(BRANCHES)}.")


def present_branches(layer: Any) -> list[str]:
    """The branch attributes of ``layer`` that are still there (in forward order)."""
    return [attr for attr in BRANCHES if hasattr(layer, attr) and not is_removed(getattr(layer, attr))]


def removed_branches(model: Any, layers_path: str = LAYERS_PATH) -> dict[int, list[str]]:
    """Layer index → branch attributes already deleted from that layer."""
    out: dict[int, list[str]] = {}
    for i, layer in enumerate(model.get_submodule(layers_path)):
        gone = [attr for attr in BRANCHES if is_removed(getattr(layer, attr, None))]
        if gone:
            out[i] = gone
    return out


def sublayer_blocks(model: Any, layers_path: str = LAYERS_PATH) -> list[Block]:
    """One block per branch still present, in order: the attention then the MLP of layer 0, then layer 1, ...

    Deleted branches are not listed, so the indices always refer to the model as it is now.
    """
    out: list[Block] = []
    for i, layer in enumerate(model.get_submodule(layers_path)):
        for attr in present_branches(layer):
            out.append(Block(len(out), f"{layers_path}.{i}.{attr}", BRANCHES[attr], i))
    return out


def _plan(model: Any, indices: Sequence[int], layers_path: str) -> tuple[dict[int, list[str]], list[int]]:
    """Split a sub-layer removal into single branches to replace and whole layers to delete."""
    blocks = sublayer_blocks(model, layers_path)
    by_layer: dict[int, list[str]] = {}
    for i in checked_indices(indices, len(blocks), "sub-layer blocks"):
        block = blocks[i]
        by_layer.setdefault(block.layer, []).append(block.name.rsplit(".", 1)[1])
    layers = model.get_submodule(layers_path)
    partial: dict[int, list[str]] = {}
    whole: list[int] = []
    for layer_idx, attrs in by_layer.items():
        if set(attrs) == set(present_branches(layers[layer_idx])):
            whole.append(layer_idx)
        else:
            partial[layer_idx] = attrs
    return partial, sorted(whole)


def sublayer_save_format(model: Any, indices: Sequence[int], granularity: str, layers_path: str = LAYERS_PATH) -> str:
    """``"lmshrink"`` when removing ``indices`` (of the *current* model) leaves some layer with one branch only.

    Call it before :func:`remove_sublayers`. A model that already lacks a branch somewhere is always
    ``"lmshrink"``; a removal whose units are all whole layers (at granularity ``layer``, or both branches of a
    layer at ``sublayer``) is ``"transformers"``.
    """
    if removed_branches(model, layers_path):
        return "lmshrink"
    if granularity != "sublayer" or not indices:
        return "transformers"
    partial, _ = _plan(model, indices, layers_path)
    return "lmshrink" if partial else "transformers"


def remove_sublayers(adapter: Any, model: Any, indices: Sequence[int], layers_path: str = LAYERS_PATH) -> Any:
    """Delete the sub-layer blocks at ``indices`` (indices into ``adapter.blocks(model, "sublayer")``).

    A layer that loses its last branch is removed as a whole layer through ``adapter.remove(..., "layer")``
    (which renumbers the layers and rewrites the config); any other branch is replaced by a parameter-free
    placeholder. The ``remove_sublayers`` transform recorded on the model is refreshed, so
    :func:`lmshrink.compress.io.save_compressed` writes a model that :func:`~lmshrink.compress.io.load_compressed`
    rebuilds. Returns the model.
    """
    partial, whole = _plan(model, indices, layers_path)
    layers = model.get_submodule(layers_path)
    if len(whole) == len(layers):
        raise LmshrinkError("Refusing to remove every layer of the model.")
    for layer_idx, attrs in partial.items():
        for attr in attrs:
            setattr(layers[layer_idx], attr, placeholder(model, attr, layer_idx))
    if whole:
        model = adapter.remove(model, whole, "layer")  # renumbers, rewrites the config, refreshes the record
    sync_record(model, layers_path)
    return model


def sync_record(model: Any, layers_path: str = LAYERS_PATH) -> None:
    """Make the ``remove_sublayers`` transform recorded on ``model`` match its current structure.

    Called after every structural change of the layer list (sub-layer removal, and layer removal, which
    renumbers the layers). The record keeps its position among the model's other transforms.
    """
    gone = removed_branches(model, layers_path)
    spec = {
        "type": TRANSFORM,
        "layers": layers_path,
        "removed": [[layer_idx, attr] for layer_idx in sorted(gone) for attr in gone[layer_idx]],
    }
    set_transform(model, TRANSFORM, spec if gone else None)


def _validate(model: Any, spec: dict[str, Any]) -> None:
    """Check a saved ``remove_sublayers`` record against the stock model: the layer list exists, and every
    ``[layer, branch]`` pair names a branch of a layer in range, once."""
    check_keys(spec, ["removed"], ["layers"])
    layers_path = spec.get("layers", LAYERS_PATH)
    layers = resolve_module(model, layers_path)
    if not isinstance(layers, nn.ModuleList):
        raise LmshrinkError(f"{layers_path} ({type(layers).__name__}) is not a list of decoder layers.")
    removed = spec["removed"]
    if not isinstance(removed, list):
        raise LmshrinkError(f"'removed' is a {type(removed).__name__}, not a list of [layer, branch] pairs.")
    seen = set()
    for pair in removed:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise LmshrinkError(f"Entry {pair!r} of 'removed' is not a [layer, branch] pair.")
        layer_idx = check_int(pair[0], "A layer index in 'removed'", 0, len(layers) - 1)
        attr = pair[1]
        if attr not in BRANCHES:
            raise LmshrinkError(f"Branch {attr!r} of layer {layer_idx} is not one of {list(BRANCHES)}.")
        resolve_module(layers, f"{layer_idx}.{attr}")
        if (layer_idx, attr) in seen:
            raise LmshrinkError(f"Branch {attr} of layer {layer_idx} is listed twice.")
        seen.add((layer_idx, attr))


def _replay(model: Any, spec: dict[str, Any]) -> None:
    """Replace the listed branches of a freshly built stock model by their placeholders."""
    layers = model.get_submodule(spec.get("layers", LAYERS_PATH))
    for layer_idx, attr in spec["removed"]:
        setattr(layers[int(layer_idx)], attr, placeholder(model, attr, int(layer_idx)))


#: the ``remove_sublayers`` transform: what :func:`lmshrink.compress.io.load_compressed` checks and replays
SUBLAYER_TRANSFORM = TransformType(TRANSFORM, _replay, _validate)


__all__ = [
    "BRANCHES",
    "SUBLAYER_TRANSFORM",
    "RemovedAttention",
    "RemovedMLP",
    "is_removed",
    "placeholder",
    "present_branches",
    "remove_sublayers",
    "removed_branches",
    "sublayer_blocks",
    "sublayer_save_format",
    "sync_record",
]
