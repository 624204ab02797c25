"""Replay of the low-rank transforms on load: :func:`lmshrink.compress.io.load_compressed` builds the stock model
from its config, then each transform recreates the module shapes the saved weights fit.

A transform spec, as ``lmshrink_config.json`` lists it, is ``{"type": "low_rank" | "pivga", "layers": {path:
rank}}``: ``path`` the dotted module path of an ``nn.Linear`` of the stock model (in × out features n, m), ``rank``
a whole number in 0..min(m, n) (lmshrink writes ranks below the break-even rank, so < min(m, n), and ≥ 1 unless
the problem allowed rank 0). Both are checked here before any module is replaced. A PivGa layer's pivots are its
``inverse`` buffer in ``model.safetensors``, checked when the weights load (:class:`~lmshrink.compress.pivga.
PivGaLinear`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ..core.errors import LmshrinkError
from .io import register_transform
from .low_rank import TRANSFORM, LowRankLinear, replace_module
from .pivga import TRANSFORM as PIVGA_TRANSFORM
from .pivga import PivGaLinear


def checked_layers(model: nn.Module, spec: dict[str, Any]) -> dict[str, int]:
    """``spec["layers"]`` as path → rank, each path an ``nn.Linear`` of ``model`` and each rank in 0..min(m, n)."""
    kind = spec.get("type")
    layers = spec.get("layers")
    if not isinstance(layers, dict):
        raise LmshrinkError(f"The {kind} transform needs 'layers', an object of module path → rank.")
    out = {}
    for path, rank in layers.items():
        try:
            module = model.get_submodule(path) if isinstance(path, str) and path else None
        except AttributeError:
            module = None
        if type(module) is not nn.Linear:
            raise LmshrinkError(f"The {kind} transform names {path!r}, which is not a linear layer of this "
                                f"{type(model).__name__}.")
        k = min(module.in_features, module.out_features)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= k:
            raise LmshrinkError(f"The {kind} transform gives {path} the rank {rank!r}; it must be a whole number in "
                                f"0..{k}.")
        out[path] = rank
    return out


def _replay(layer: type[nn.Module]) -> Callable[[nn.Module, dict[str, Any]], None]:
    def replay(model: nn.Module, spec: dict[str, Any]) -> None:
        for path, rank in checked_layers(model, spec).items():
            old = model.get_submodule(path)
            replace_module(model, path, layer(old.in_features, old.out_features, rank, old.bias is not None,
                                              old.weight.dtype))

    replay.__doc__ = f"Recreate the {layer.__name__} shapes of a saved model on a freshly built stock model."
    return replay


replay_low_rank = register_transform(TRANSFORM)(_replay(LowRankLinear))
replay_pivga = register_transform(PIVGA_TRANSFORM)(_replay(PivGaLinear))

__all__ = ["checked_layers", "replay_low_rank", "replay_pivga"]
