"""What the conformance suites share: a label on failing checks, and pytest when it is installed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

try:  # the suites' pytest classes need it; their plain check functions work without it
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]


@contextmanager
def labelled(what: str) -> Iterator[None]:
    """Prefix the message of an AssertionError raised inside with ``[what]``."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"[{what}] {exc}") from exc
