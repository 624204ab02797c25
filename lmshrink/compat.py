"""Differences between the transformers releases lmshrink supports, in one place.

transformers 5.24 renamed the cache argument of every forward pass and the cache field of every output from
``past_key_values`` to ``cache`` (the old names still work there, with a deprecation warning, until 5.40).
Earlier releases know only ``past_key_values``.

Some models and config features exist only from a given release on (:data:`TRANSFORMERS_SINCE`);
:func:`transformers_lacks` says, in one sentence, when the installed release is too old for one of them.
"""

from __future__ import annotations

import inspect
from typing import Any

import transformers
from packaging.version import Version

#: models and config features lmshrink supports that are newer than its transformers floor:
#: feature -> (the first transformers release that has it, what it is, in words)
TRANSFORMERS_SINCE = {
    # NemotronHConfig exists from 5.3, but its block names (layers_block_type "linear_attention", MLP blocks "-")
    # are those the adapter reads only from 5.13
    "nemotron_h": ("5.13", "Nemotron-H models"),
    "per_layer_config": ("5.14", "heterogeneous configs (per_layer_config)"),
}

#: keyword names under which a decoder passes the KV cache to its sub-modules, newest first
CACHE_KWARGS = ("cache", "past_key_values")


def cache_argument(model: Any) -> str:
    """The keyword ``model.forward`` takes its cache under: ``cache`` (transformers ≥ 5.24) or ``past_key_values``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - a forward without a signature
        return CACHE_KWARGS[-1]
    return next((name for name in CACHE_KWARGS if name in params), CACHE_KWARGS[-1])


def output_cache(output: Any) -> Any:
    """The cache a forward pass returned (``output.cache`` or, before 5.24, ``output.past_key_values``)."""
    if "cache" in getattr(type(output), "__dataclass_fields__", {}):
        return output.cache
    return output.past_key_values


def transformers_lacks(feature: str) -> str | None:
    """Why the installed transformers cannot run ``feature`` (a key of :data:`TRANSFORMERS_SINCE`), or None if it can."""
    needed, what = TRANSFORMERS_SINCE[feature]
    if Version(transformers.__version__) >= Version(needed):
        return None
    return f"{what} need transformers >= {needed} (installed: {transformers.__version__})"
