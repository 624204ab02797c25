"""Helpers shared by the block-removal objectives: cache keys, problem metadata, and the check that a measurement
is finite."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..cache import cache_key
from ..core.errors import LmshrinkError
from ..torch_utils import model_identity

def measurement_key(model: Any, adapter: Any, calibration: Any, granularity: str, **extra: Any) -> str:
    """The cache key of a measurement (``extra`` names it and its version, e.g. ``what="gate_gradients"``)."""
    return cache_key(model_identity(model), adapter.name, granularity, calibration.fingerprint(), extra)


def problem_metadata(model: Any, adapter: Any, calibration: Any, objective: str, granularity: str,
                     options: dict[str, Any], blocks: list[Any]) -> dict[str, Any]:
    return {
        "model": getattr(model.config, "name_or_path", "") or type(model).__name__,
        "architecture": type(model).__name__,
        "adapter": adapter.name,
        "objective": objective,
        "granularity": granularity,
        "options": options,
        "calibration": {"source": calibration.source, **calibration.info},
        "blocks": [b.to_dict() for b in blocks],
    }


def nonfinite_origin(model: Any, adapter: Any, input_ids: Any, granularity: str = "layer") -> str:
    """Where a forward pass of ``model`` on ``input_ids`` first produces a NaN or an infinity.

    Runs one pass with a forward hook on the input embeddings and on every block of the adapter, in the order
    they run, and names the first whose output is not finite.
    """
    import torch

    from ..evaluate.loss import model_inputs

    found: list[str] = []

    def watch(label: str):
        def hook(module: Any, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not found and torch.is_tensor(out) and not bool(torch.isfinite(out).all()):
                found.append(label)

        return hook

    watched = [(model.get_input_embeddings(), "the input embeddings")]
    watched += [(model.get_submodule(b.name), f"block {b.index} ({b.name})") for b in adapter.blocks(model, granularity)]
    handles = [module.register_forward_hook(watch(label)) for module, label in watched]
    try:
        with torch.no_grad():
            logits = model(input_ids=model_inputs(model, input_ids[:1]),
                           use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    if found:
        return f"first in the output of {found[0]}"
    if not bool(torch.isfinite(logits).all()):
        return "first in the logits (after the last block)"
    return "only when gradients are taken (the forward pass is finite)"


def require_finite(values: Any, what: str, model: Any, adapter: Any, input_ids: Any, granularity: str = "layer") -> None:
    """Refuse a measurement that holds NaN or infinity, saying where in the model the non-finite values start."""
    arr = np.asarray(values, dtype=float)
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    raise LmshrinkError(
        f"The model produced non-finite values while measuring {what} ({int(bad.sum())} of {arr.size} are NaN or "
        f"infinite), {nonfinite_origin(model, adapter, input_ids, granularity)}."
    )
