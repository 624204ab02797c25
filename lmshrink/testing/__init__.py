"""Test helpers for lmshrink and its plugins: the solver conformance suite, tiny models and the adapter suite.

:mod:`lmshrink.testing.solvers` (the solver suite, :class:`SolverConformance`) needs numpy only;
:mod:`lmshrink.testing.adapters` (tiny models, :class:`AdapterConformance`) needs torch and transformers and is
imported on first use of one of its names. pytest is needed only to run the tests, not to import them. The public
names are listed once, in each module's ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import solvers as _solvers
from .solvers import *  # noqa: F401,F403


def _adapters() -> Any:
    return importlib.import_module(f"{__name__}.adapters")


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return [*_solvers.__all__, *_adapters().__all__]
    adapters = _adapters()
    if name in adapters.__all__:
        return getattr(adapters, name)
    raise AttributeError(f"module 'lmshrink.testing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
