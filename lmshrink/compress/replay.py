"""Replay of the low-rank transforms on load: :func:`lmshrink.compress.io.load_compressed` builds the stock model
from its config, then each transform recreates the module shapes the saved weights fit.

A transform spec, as ``lmshrink_config.json`` lists it, is ``{"type": "low_rank" | "pivga", "layers": {path:
rank}}``: ``path`` the dotted module path of an ``nn.Linear`` of the stock model (in × out features n, m), ``rank``
a whole number in 0..min(m, n) (lmshrink writes ranks below the break-even rank, so < min(m, n), and ≥ 1 unless
the problem allowed rank 0). :func:`~lmshrink.compress.io.validate_layer_ranks` checks both before anything is
replayed. A PivGa layer's pivots are its ``inverse`` buffer in ``model.safetensors``, checked when the weights load
(:class:`~lmshrink.compress.pivga.PivGaLinear`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from .io import register_transform, validate_layer_ranks
from .low_rank import TRANSFORM, LowRankLinear, replace_module
from .pivga import TRANSFORM as PIVGA_TRANSFORM
from .pivga import PivGaLinear


def _replay(layer: type[nn.Module]) -> Callable[[nn.Module, dict[str, Any]], None]:
    def replay(model: nn.Module, spec: dict[str, Any]) -> None:
        for path, rank in spec["layers"].items():
            old = model.get_submodule(path)
            replace_module(model, path, layer(old.in_features, old.out_features, rank, old.bias is not None,
                                              old.weight.dtype))

    replay.__doc__ = (f"Recreate the {layer.__name__} shapes of a saved model on a freshly built stock model "
                      "(the spec checked by validate_layer_ranks).")
    return replay


replay_low_rank = register_transform(TRANSFORM, validate=validate_layer_ranks)(_replay(LowRankLinear))
replay_pivga = register_transform(PIVGA_TRANSFORM, validate=validate_layer_ranks)(_replay(PivGaLinear))

__all__ = ["replay_low_rank", "replay_pivga"]
