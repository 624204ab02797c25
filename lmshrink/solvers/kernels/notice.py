"""A one-line notice on stderr, once per process, before numba compiles kernels whose on-disk cache is cold.

The kernels are compiled with ``cache=True``: the first solve after installing (or after their source changed)
compiles them, which takes tens of seconds, and later processes load the cache. :func:`announce_compile` says so
before that first, silent stall, once per process; callers pass the kernels they call from Python (each compiles
the kernels it calls), so a kernel a run never uses does not make it speak. A kernel counts as cold when it is not compiled in this process and numba's cache
index for it is missing or stale (its source stamp changed). Set ``LMSHRINK_QUIET=1`` to silence it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

_announced: set[str] = set()


def is_cold(dispatcher: Any) -> bool:
    """Whether calling this numba dispatcher will compile it: no signature compiled in this process and no valid
    entry in its on-disk cache."""
    if getattr(dispatcher, "signatures", None):
        return False
    cache = getattr(dispatcher, "_cache", None)
    try:
        return not cache._cache_file._load_index()  # {} when the index is missing or its source stamp is stale
    except Exception:  # no cache (cache=False) or a numba without these internals: assume it compiles
        return True


def announce_compile(what: str, dispatchers: Iterable[Any]) -> bool:
    """Print ``compiling lmshrink's <what> (once; cached) …`` on stderr when one of ``dispatchers`` is cold, at
    most once per process (whichever kernels come first: the branch and bound also compiles the annealing kernels
    it seeds from); returns whether it printed."""
    if _announced or not any(is_cold(d) for d in dispatchers):
        return False
    _announced.add(what)
    if os.environ.get("LMSHRINK_QUIET"):
        return False
    print(f"compiling lmshrink's {what} (once; cached) …", file=sys.stderr, flush=True)
    return True


def kernel_dispatchers(module: Any) -> list[Any]:
    """The numba dispatchers (``@njit`` functions) defined in ``module``."""
    return [v for v in vars(module).values() if hasattr(v, "py_func") and hasattr(v, "signatures")]
