"""Data-aware (whitened) SVD compression of linear layers, as in SVD-LLM: the public names in one place.

The pieces, one module each:

- :mod:`~lmshrink.compress.gram`: Gram matrices XXᵀ of every distinct layer input, collected through hooks;
- :mod:`~lmshrink.compress.whitening`: S with S Sᵀ = XXᵀ + δI (Cholesky, eigen-decomposition fallback);
- :mod:`~lmshrink.compress.factoring`: the whitened SVD of every matrix as two factors, saved and loaded with
  safetensors;
- :mod:`~lmshrink.compress.low_rank`: the low-rank and soft-truncated layers (the gauge-fixed ones in
  :mod:`~lmshrink.compress.pivga`);
- :mod:`~lmshrink.compress.apply`: compression applied from a :class:`~lmshrink.core.plan.RankPlan`;
- :mod:`~lmshrink.compress.replay`: the ``low_rank`` and ``pivga`` transforms replayed on load;
- :mod:`~lmshrink.compress.export`: export to a dense transformers model.
"""

from __future__ import annotations

from . import replay as _replay  # noqa: F401  (registers the low_rank and pivga transforms)
from .apply import CompressionSummary, apply_plan, check_plan, compress_model
from .export import densify, export_dense
from .factoring import MatrixFactors, SvdFactors, factorize, soft_weight, svd_factors
from .gram import GramStats, collect_grams, input_groups
from .low_rank import TRANSFORM, LowRankLinear, SoftTruncatedLinear, replace_module
from .whitening import Whitening, whiten

__all__ = [
    "CompressionSummary",
    "GramStats",
    "LowRankLinear",
    "MatrixFactors",
    "SoftTruncatedLinear",
    "SvdFactors",
    "TRANSFORM",
    "Whitening",
    "apply_plan",
    "check_plan",
    "collect_grams",
    "compress_model",
    "densify",
    "export_dense",
    "factorize",
    "input_groups",
    "replace_module",
    "soft_weight",
    "svd_factors",
    "whiten",
]
