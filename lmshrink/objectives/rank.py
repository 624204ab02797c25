"""The contract of a rank-allocation objective, as the ``svd`` flow uses it, stage by stage:

1. :meth:`RankObjective.whiten`: the whitened SVD of every decomposed matrix (:mod:`lmshrink.compress.factoring`);
   the compression later applies the chosen ranks to these very factors;
2. :meth:`RankObjective.pose`: the :class:`~lmshrink.core.RankAllocationProblem` (plain data) of those factors;
3. :meth:`RankObjective.loss_oracle`: optionally, a :class:`~lmshrink.core.rank.LossOracle` (the model's
   differentiable calibration loss under soft truncation), handed by the pipeline to solvers that take one.

:meth:`Objective.build` (whiten, then pose) gives the problem alone, as for every objective.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import Objective, Option
from ..core.options import validate_options
from ..core.rank import LossOracle, RankAllocationProblem

if TYPE_CHECKING:
    from ..compress.factoring import SvdFactors


def rank_problem(
    factors: SvdFactors,
    ratio: float,
    *,
    pivga: bool = False,
    normalize: bool = False,
    min_rank: int = 1,
    metadata: dict[str, Any] | None = None,
) -> RankAllocationProblem:
    """The rank-allocation problem of ``factors`` at ``ratio``: the whitened singular values of every matrix, one
    budget ⌊ratio · Σ_l m_l n_l⌋; with ``normalize`` each matrix's error weighted by 1/Σ_i σ_{l,i}²."""
    names = factors.names
    shapes = [factors.factors[n].shape for n in names]
    sigmas = [factors.factors[n].sigma for n in names]
    total = sum(m * n for m, n in shapes)
    weights = None
    if normalize:
        weights = np.array([1.0 / max(float((s**2).sum()), 1e-300) for s in sigmas])
    meta = dict(metadata or {})
    meta.setdefault("ratio", float(ratio))
    return RankAllocationProblem(
        names=names,
        shapes=shapes,
        singular_values=sigmas,
        budget=float(np.floor(ratio * total + 1e-9)),
        pivga=pivga,
        min_rank=min_rank,
        weights=weights,
        metadata=meta,
    )


class RankObjective(Objective):
    """Base class of rank-allocation objectives: whitened SVDs → problem (→ loss oracle).

    Subclasses implement :meth:`pose` and may override :meth:`whiten` and :meth:`loss_oracle`. The stage methods
    take ``options`` complete and validated (:meth:`validate`); their own options extend :attr:`options`, whose
    ``ratio`` (the budget as a fraction of the dense parameters) and ``pivga`` (the cost model) the pipeline sets.
    """

    options = {
        "ratio": Option(0.8, "fraction of the decomposed matrices' parameters to keep", float),
        "pivga": Option(False, "count PivGa costs r(m+n)−r² instead of r(m+n)", bool),
        "gram_batch_size": Option(8, "samples per forward pass when collecting the whitening statistics", int),
        "eps": Option(1e-6, "relative regularization eps·trace/d first tried in the Cholesky factorization", float),
        "progress": Option(True, "show progress bars", bool),
    }

    def validate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` over the declared defaults; an unknown name or a value outside its choices is refused."""
        return validate_options(f"Objective {self.name!r}", self.options, options)

    def whiten(self, model: Any, adapter: Any, calibration: Any, options: Mapping[str, Any]) -> SvdFactors:
        """The whitened SVD of every matrix ``adapter.linear_layers(model)`` lists, on ``calibration`` (one decoder
        layer's Gram matrices at a time where the adapter knows the layer list)."""
        from ..compress.factoring import svd_factors

        return svd_factors(model, adapter.linear_layers(model), calibration.input_ids,
                           batch_size=options["gram_batch_size"], eps=options["eps"], progress=options["progress"],
                           adapter=adapter)

    @abstractmethod
    def pose(self, factors: SvdFactors, model: Any, adapter: Any, calibration: Any,
             options: Mapping[str, Any]) -> RankAllocationProblem:
        """The rank-allocation problem of ``factors``."""

    def loss_oracle(self, model: Any, factors: SvdFactors, problem: RankAllocationProblem, calibration: Any,
                    options: Mapping[str, Any]) -> LossOracle | None:
        """A differentiable calibration loss of soft keep-masks over ``problem``'s matrices, or None (the default)."""
        return None

    def build_problem(self, model: Any, adapter: Any, calibration: Any, **options: Any) -> RankAllocationProblem:
        factors = self.whiten(model, adapter, calibration, options)
        return self.pose(factors, model, adapter, calibration, options)


__all__ = ["RankObjective", "rank_problem"]
