"""Helpers shared by the block-removal objectives."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from ..cache import cache_key


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies a model's weights for caching: its name, size and a few weight checksums."""
    import torch

    params = list(model.parameters())
    probe = [float(p.detach().reshape(-1)[:64].double().sum()) for p in params[:: max(len(params) // 8, 1)]]
    return {
        "name": getattr(model.config, "name_or_path", "") or type(model).__name__,
        "class": type(model).__name__,
        "parameters": int(sum(p.numel() for p in params)),
        "probe": [round(v, 6) for v in probe],
        "torch": torch.__version__.split("+")[0],
    }


def measurement_key(model: Any, adapter: Any, calibration: Any, granularity: str, **extra: Any) -> str:
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
