"""A small on-disk cache for expensive measurements (gate gradients, pairwise losses, converted models).

Location: ``$LMSHRINK_CACHE``, else ``~/.cache/lmshrink``. Set ``LMSHRINK_CACHE=off`` to disable it.

An entry is written under a temporary name of its own (:mod:`lmshrink.staging`) and renamed into place, so
concurrent writers never share a file and a reader sees a whole entry or none. An entry that cannot be read
(truncated, overwritten with garbage) is named in a warning and computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .staging import checkpoint, remove_orphans, temp_path


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    env = os.environ.get("LMSHRINK_CACHE")
    if env and env.lower() in ("off", "0", "false", "no"):
        return None
    return Path(env) if env else Path.home() / ".cache" / "lmshrink"


#: the array a cache entry keeps the seconds of its computation under
SECONDS = "measurement_seconds"


#: the array :func:`cached_arrays` names its entry under (``kind/key``; not stored: the entry's place says it)
ENTRY = "measurement_entry"


def measurement_seconds(arrays: dict[str, np.ndarray]) -> float | None:
    """The seconds the computation of ``arrays`` (from :func:`cached_arrays`) took; None for an entry written before
    entries kept them."""
    return float(arrays[SECONDS]) if SECONDS in arrays else None


def measurement_metadata(arrays: dict[str, np.ndarray], cached: bool) -> dict[str, Any]:
    """What a problem's metadata says of the measurement ``arrays`` (from :func:`cached_arrays`) behind it: whether
    it was read from the cache, the seconds it took when made (None for an older entry) and its entry, ``kind/key``
    (problems built on one measurement name the same entry, so its cost is counted once)."""
    return {"cached_measurement": cached, SECONDS: measurement_seconds(arrays), "measurement": str(arrays[ENTRY])}


def cache_key(*parts: Any) -> str:
    """A stable hash of JSON-able ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def remove_cache_orphans() -> None:
    """Remove what killed writers left in every folder of the cache (measurements, converted models)."""
    folder = cache_dir()
    if folder is not None and folder.is_dir():
        for sub in folder.iterdir():
            remove_orphans(sub)


def cached_arrays(kind: str, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], bool]:
    """Arrays stored under ``kind/key.npz``, computed (and stored) when missing or unreadable. The seconds the
    computation took are stored with them (``SECONDS``; read back with :func:`measurement_seconds`), so a result
    read from the cache can still say what it cost; the returned arrays name their entry, ``kind/key`` (``ENTRY``).

    Returns (arrays, was_cached).
    """
    folder = cache_dir()
    path = folder / kind / f"{key}.npz" if folder else None
    entry = {ENTRY: np.asarray(f"{kind}/{key}")}
    if path is not None:
        remove_orphans(path.parent)
        arrays = _read(path)
        if arrays is not None:
            return {**arrays, **entry}, True
    started = time.perf_counter()
    arrays = {**compute(), SECONDS: np.asarray(time.perf_counter() - started)}
    if path is not None:
        _write(path, arrays)
    return {**arrays, **entry}, False


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry; None when it is absent, or unreadable (then with a warning, and removed)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        warnings.warn(f"The cache entry {path} is unreadable ({type(exc).__name__}: {exc}); computing it again.",
                      stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, ".npz")
    try:
        np.savez(tmp, **arrays)
        checkpoint("measurement")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
