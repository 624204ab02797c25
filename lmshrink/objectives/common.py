"""Helpers shared by the block-removal objectives: cache keys, problem metadata, frozen parameters, and the
check that a measurement is finite."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..cache import cache_key
from ..core.errors import LmshrinkError

#: config entries that name where a model came from rather than what it computes
_PROVENANCE = ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash")


def weights_digest(model: Any) -> str:
    """SHA-256 of every tensor of ``model.state_dict()``: names, dtypes, shapes and raw bytes."""
    import torch

    digest = hashlib.sha256()
    seen: dict[tuple[int, int], str] = {}  # tied weights (embeddings and LM head) are hashed once
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            t = tensor.detach()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
            storage = (t.data_ptr(), t.nbytes)
            if storage in seen:
                digest.update(f"same as {seen[storage]};".encode())
            elif t.numel():
                seen[storage] = name
                digest.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def model_identity(model: Any) -> dict[str, Any]:
    """What a measurement on ``model`` depends on: every weight (hashed), the config and the library versions."""
    import torch

    from .. import __version__

    config = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    return {
        "class": type(model).__name__,
        "weights": weights_digest(model),
        "config": {k: v for k, v in config.items() if k not in _PROVENANCE},
        "torch": torch.__version__.split("+")[0],
        "lmshrink": __version__,
    }


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


@contextmanager
def frozen(model: Any):
    """Turn off parameter gradients (only gate gradients are needed) and restore them afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


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
