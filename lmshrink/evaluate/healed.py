"""Deprecated location of :mod:`lmshrink.heal.fitness` (:class:`~lmshrink.heal.fitness.HealedFitness`,
:func:`~lmshrink.heal.fitness.healed_fitness`): fitting healing maps is the healing layer's, which builds on this
package, so the names moved there. Reading them here still works, with a :class:`DeprecationWarning`; the module is
resolved by name when first asked for, so the measurements never import the healing layer themselves."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = ("HealedFitness", "healed_fitness")


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"lmshrink.evaluate.healed.{name} moved to lmshrink.heal.fitness.{name}", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module("lmshrink.heal.fitness"), name)
