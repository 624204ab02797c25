"""Forward passes cut short: a hook raises :class:`StopPass` once the pass has produced what it was run for (a
layer's input or output), and the layers after it are skipped. Imports nothing heavy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class StopPass(Exception):
    """Raised by a forward hook to end the pass it runs in."""


def run_until_stopped(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``call(*args, **kwargs)``, ended early and quietly when a hook raises :class:`StopPass`."""
    try:
        call(*args, **kwargs)
    except StopPass:
        pass
