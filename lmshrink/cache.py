"""A small on-disk cache for expensive measurements (gate gradients, pairwise losses, converted models).

Location: ``$LMSHRINK_CACHE``, else ``~/.cache/lmshrink``. Set ``LMSHRINK_CACHE=off`` to disable it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    env = os.environ.get("LMSHRINK_CACHE")
    if env and env.lower() in ("off", "0", "false", "no"):
        return None
    return Path(env) if env else Path.home() / ".cache" / "lmshrink"


def cache_key(*parts: Any) -> str:
    """A stable hash of JSON-able ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_arrays(kind: str, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], bool]:
    """Arrays stored under ``kind/key.npz``, computed (and stored) when missing. Returns (arrays, was_cached)."""
    folder = cache_dir()
    path = folder / kind / f"{key}.npz" if folder else None
    if path is not None and path.exists():
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}, True
    arrays = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return arrays, False
