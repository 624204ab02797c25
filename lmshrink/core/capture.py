"""What a run produced beyond its solutions, collected for a record: raw sample sets, embeddings, circuits,
optimizer traces.

A solver offers each such artifact with :func:`offer`; it is kept only while a record collects them
(:func:`collecting`), and a callable is called only then, so solvers pay nothing when no run is recorded. Artifacts
are plain JSON data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_STORE: ContextVar[dict[str, Any] | None] = ContextVar("lmshrink_artifacts", default=None)


@contextmanager
def collecting() -> Iterator[dict[str, Any]]:
    """Collect every artifact offered inside the block into the yielded dict (name → JSON data)."""
    store: dict[str, Any] = {}
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)


def is_collecting() -> bool:
    """Whether a record collects artifacts now (solvers may skip work that only a record needs)."""
    return _STORE.get() is not None


def offer(name: str, value: Any | Callable[[], Any]) -> None:
    """Keep ``value`` (or ``value()``, computed only when collected) as the artifact ``name``."""
    store = _STORE.get()
    if store is not None:
        store[name] = value() if callable(value) else value
