"""The plain-data view of lmshrink's records (their ``to_dict``)."""

from __future__ import annotations

from typing import Any


def attributes(obj: Any, *names: str) -> dict[str, Any]:
    """``{name: obj.name}`` for each of ``names``, in that order."""
    return {name: getattr(obj, name) for name in names}
