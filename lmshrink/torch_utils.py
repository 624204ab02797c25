"""Generic torch helpers on a whole model: its parameters frozen for a measurement, and what a measurement on it
depends on (a digest of every weight, the config, the library versions).

torch is imported on first use: the objectives that use these helpers are listed (``lmshrink plugins``) without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import __version__

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

    config = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    return {
        "class": type(model).__name__,
        "weights": weights_digest(model),
        "config": {k: v for k, v in config.items() if k not in _PROVENANCE},
        "torch": torch.__version__.split("+")[0],
        "lmshrink": __version__,
    }


@contextmanager
def frozen(model: Any) -> Iterator[Any]:
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
