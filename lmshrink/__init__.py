"""lmshrink: compress language models by posing each compression decision as an optimization problem.

The top-level names are light: heavy ones (torch, transformers) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .core import (  # noqa: E402
    ArchitectureAdapter,
    BinaryQuadraticProblem,
    Block,
    Constraint,
    LmshrinkError,
    Objective,
    Option,
    Solution,
    SolutionSet,
    Solver,
    load_problem,
)
from .plugins import hookimpl  # noqa: E402

_LAZY = {
    "prune": ("lmshrink.pipeline.prune", "prune"),
    "svd_compress": ("lmshrink.pipeline.svd", "svd_compress"),
    "compress_model": ("lmshrink.pipeline.compress", "compress_model"),
    "load_model": ("lmshrink.models", "load_model"),
    "load_compressed": ("lmshrink.compress.io", "load_compressed"),
    "heal_model": ("lmshrink.pipeline.heal_model", "heal_model"),
    # the settings of the runs above and the shared settings they are composed of
    "PruneConfig": ("lmshrink.pipeline.config", "PruneConfig"),
    "SvdConfig": ("lmshrink.pipeline.svd", "SvdConfig"),
    "CompressConfig": ("lmshrink.pipeline.compress", "CompressConfig"),
    "HealConfig": ("lmshrink.pipeline.heal_model", "HealConfig"),
    **{name: ("lmshrink.pipeline.settings", name) for name in (
        "DataSettings", "EvaluationSettings", "FactoringSettings", "OutputSettings", "PerplexitySettings",
        "PlacementSettings", "ProgressSettings", "RunSettings", "SaveSettings", "SavedModelSettings")},
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lmshrink' has no attribute {name!r}")


__all__ = [
    "ArchitectureAdapter",
    "BinaryQuadraticProblem",
    "Block",
    "Constraint",
    "LmshrinkError",
    "Objective",
    "Option",
    "Solution",
    "SolutionSet",
    "Solver",
    "__version__",
    "hookimpl",
    "load_problem",
    *_LAZY,
]
