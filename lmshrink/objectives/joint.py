"""Measurements behind the joint removal-and-rank problem (:class:`~lmshrink.core.joint.JointCompressionProblem`).

Both terms of its energy (1) are calibration-loss increases in nats per token, measured on the same windows:

- **removal**: ΔL_b = L(model without branch b) − L(model), one mid-stack pass per branch
  (:class:`~lmshrink.evaluate.measured.RemovalLoss` at ``sublayer`` granularity);
- **truncation** (``truncation="fisher"``, the default): ΔL_m(r) ≈ ½ Σ_t (g_tᵀ Δy_t)² / N, the Fisher estimate of
  the loss increase of matrix m at rank r on its own output errors Δy_t, per predicted token
  (:func:`~lmshrink.objectives.rank.aligned_fisher_errors`; one forward and backward pass), carried by the problem
  as its error table;
- **truncation** (``truncation="probes"``): the whitened error of matrix m at rank r relative to its total,
  e_m(r) = tail_m(r) / Σ_i σ_{m,i}², is turned into a loss by one sensitivity factor c per matrix *kind* (q_proj,
  k_proj, ..., down_proj). To
  calibrate c, a few matrices of that kind (in ``probe_layers`` layers spread over the stack) are truncated alone
  to a few ranks (``probe_fractions`` of their break-even rank), the real loss increase ΔL is measured for each,
  and c is the least-squares slope through the origin of ΔL against e:

      c_kind = Σ_p e_p ΔL_p / Σ_p e_p²                                                              (3)

  (clipped at 0). The fit's R² is recorded with the points, so a poor fit is visible in the report.

The surrogate treats the terms as additive: interactions between removed branches and truncated matrices (and
the change of the later layers' inputs after a removal, which the whitening statistics do not see) are ignored;
the final held-out evaluation judges the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..compress.factoring import svd_factors
from ..core.errors import LmshrinkError
from ..core.joint import TRUNCATION_TERMS, JointCompressionProblem
from ..core.rank import break_even_rank
from ..evaluate.measured import RemovalLoss
from ..evaluate.midstack import loss_from_hidden
from ..torch_utils import frozen
from .rank import aligned_fisher_errors


@dataclass
class JointMeasurements:
    """What the joint problem is built from: the whitened SVDs, the branch-removal losses and the sensitivities."""

    factors: Any  # lmshrink.compress.factoring.SvdFactors
    branches: list[str]
    branch_layers: list[int]
    base_loss: float
    removal_loss: np.ndarray
    removal_se: np.ndarray
    matrices: list[str]
    branch_of: list[int]
    kinds: list[str]
    sensitivity: dict[str, float]
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: int = 0
    #: per matrix, the truncation term of every rank 0..k in nats per token (``truncation="fisher"``), or None
    errors: list[np.ndarray] | None = None
    truncation: str = "probes"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON of the measurements (the factors left out)."""
        return {
            "base_loss": self.base_loss,
            "windows": self.windows,
            "removal": [{"branch": b, "layer": l, "delta_loss": float(d), "se": float(s)}
                        for b, l, d, s in zip(self.branches, self.branch_layers, self.removal_loss, self.removal_se)],
            "sensitivity": dict(self.sensitivity),
            "fits": self.fits,
            "truncation": self.truncation,
        }


def matrix_kind(name: str) -> str:
    """The kind of a matrix: the last part of its module path (``q_proj``, ``down_proj``, ...)."""
    return name.rsplit(".", 1)[-1]


def branch_membership(blocks: Sequence[Any], matrices: Sequence[str]) -> list[int]:
    """For each matrix, the index of the branch block whose module path contains it."""
    out = []
    for name in matrices:
        owner = [b.index for b in blocks if name.startswith(b.name + ".")]
        if len(owner) != 1:
            raise LmshrinkError(f"Matrix {name} belongs to no removable branch; the joint problem needs every "
                                "decomposed matrix inside an attention or MLP branch.")
        out.append(owner[0])
    return out


def _truncated_loss(model: Any, adapter: Any, meter: Any, layer: int, name: str, weight: Any) -> np.ndarray:
    """Per-window loss with matrix ``name`` (in decoder layer ``layer``) replaced by ``weight``, run mid-stack."""
    module = model.get_submodule(name)
    saved = module.weight.data
    module.weight.data = weight.to(saved.dtype).to(saved.device)
    try:
        with frozen(model), torch.no_grad():
            out = [loss_from_hidden(model, adapter, layer, hidden, meter.streams.ids(k))
                   for k, hidden in enumerate(meter.streams.at(layer))]
    finally:
        module.weight.data = saved
    return torch.cat(out).double().cpu().numpy()


def calibrate_sensitivity(model: Any, adapter: Any, meter: Any, factors: Any, matrices: Sequence[str],
                          layers: Sequence[int], *, probe_layers: int = 3,
                          probe_fractions: Sequence[float] = (0.25, 0.6), pivga: bool = False,
                          progress: bool = False) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """c per matrix kind by the least-squares fit (3); returns the factors and, per kind, the probe points and R²."""
    num_layers = meter.streams.num_layers
    chosen = sorted({int(round(v)) for v in np.linspace(0, num_layers - 1, max(int(probe_layers), 1))})
    by_kind: dict[str, list[int]] = {}
    for m, name in enumerate(matrices):
        if layers[m] in chosen:
            by_kind.setdefault(matrix_kind(name), []).append(m)
    probes = [(kind, m, f) for kind, ms in by_kind.items() for m in ms for f in probe_fractions]
    base = meter.base.per_window
    points: dict[str, list[tuple[float, float]]] = {k: [] for k in by_kind}
    for kind, m, frac in tqdm(probes, desc="calibrating truncation sensitivity", disable=not progress, leave=False):
        f = factors.factors[matrices[m]]
        be = break_even_rank(*f.shape, pivga)
        r = max(1, min(be - 1, int(round(frac * be))))
        s2 = np.asarray(f.sigma, dtype=np.float64) ** 2
        rel = float(s2[r:].sum() / max(s2.sum(), 1e-300))
        A, B = f.truncated(r)
        loss = _truncated_loss(model, adapter, meter, layers[m], matrices[m], A @ B)
        points[kind].append((rel, float((loss - base).mean())))
    scale: dict[str, float] = {}
    fits: dict[str, dict[str, Any]] = {}
    for kind, pts in points.items():
        e, d = np.array(pts).T
        c = max(float(e @ d / max(e @ e, 1e-300)), 0.0)  # (3)
        resid = d - c * e
        total = float(((d - d.mean()) ** 2).sum())
        scale[kind] = c
        fits[kind] = {"scale": c, "r2": 1 - float(resid @ resid) / total if total > 0 else None,
                      "points": [{"relative_error": float(a), "delta_loss": float(b)} for a, b in pts]}
    return scale, fits


def fisher_truncation_errors(model: Any, linears: dict[str, Any], factors: Any, ids: Any, *, batch_size: int = 8,
                             progress: bool = False) -> list[np.ndarray]:
    """The truncation term of every rank of every matrix of ``linears`` (in their order), in nats per predicted
    token of ``ids``: :func:`~lmshrink.objectives.rank.aligned_fisher_errors`, whose ½ Σ_t (g_tᵀ Δy_t)² is in units
    of the summed NLL, divided by the predicted tokens, so that it adds to the removal losses."""
    table = aligned_fisher_errors(model, linears, factors, ids, batch_size=batch_size, progress=progress)
    predicted = int(ids.shape[0]) * (int(ids.shape[1]) - 1)
    return [table[n] / predicted for n in linears]


def measure_joint(model: Any, adapter: Any, calibration_ids: Any, *, loss_windows: int | None = None,
                  probe_layers: int = 3, probe_fractions: Sequence[float] = (0.25, 0.6), pivga: bool = False,
                  gram_batch_size: int = 8, batch_size: int = 8, eps: float = 1e-6, truncation: str = "fisher",
                  progress: bool = False) -> JointMeasurements:
    """Whitened SVDs on ``calibration_ids``, then branch-removal losses on its first ``loss_windows`` windows (all
    without it), and the truncation term: with ``truncation="fisher"`` every rank's Fisher loss estimate on its own
    output errors (:func:`~lmshrink.objectives.rank.aligned_fisher_errors`, on all of ``calibration_ids``, in nats
    per token), with ``"probes"`` one sensitivity per matrix kind fitted to measured single-matrix truncations (3)."""
    if truncation not in TRUNCATION_TERMS:
        raise LmshrinkError(f"truncation must be one of {', '.join(TRUNCATION_TERMS)}, not {truncation!r}.")
    if "sublayer" not in getattr(adapter, "granularities", ()):
        raise LmshrinkError(f"Adapter {adapter.name!r} cannot remove attention and MLP branches apart, which joint "
                            "compression needs.")
    linears = adapter.linear_layers(model)
    factors = svd_factors(model, linears, calibration_ids, batch_size=gram_batch_size, eps=eps, progress=progress,
                          adapter=adapter)
    ids = calibration_ids if loss_windows is None else calibration_ids[: max(int(loss_windows), 2)]
    meter = RemovalLoss(model, adapter, ids, granularity="sublayer", batch_size=batch_size, progress=progress)
    if meter.streams is None:
        raise LmshrinkError(f"Adapter {adapter.name!r} does not expose its layer list, which joint compression's "
                            "measurements need.")
    blocks = meter.blocks
    estimates = meter.many([[b.index] for b in blocks], desc="measuring branch removals")
    diffs = [e.minus(meter.base) for e in estimates]
    matrices = list(factors.names)
    branch_of = branch_membership(blocks, matrices)
    layers = [blocks[b].layer for b in branch_of]
    kinds = [matrix_kind(n) for n in matrices]
    errors = None
    if truncation == "fisher":
        errors = fisher_truncation_errors(model, {n: linears[n] for n in matrices}, factors, calibration_ids,
                                          batch_size=batch_size, progress=progress)
        scale, fits = {k: 0.0 for k in kinds}, {}
    else:
        scale, fits = calibrate_sensitivity(model, adapter, meter, factors, matrices, layers,
                                            probe_layers=probe_layers, probe_fractions=probe_fractions, pivga=pivga,
                                            progress=progress)
        missing = sorted(set(kinds) - set(scale))
        if missing:
            raise LmshrinkError(f"No probe measured matrices of kind {missing[0]}; raise probe_layers.")
    return JointMeasurements(factors=factors, branches=[b.name for b in blocks], branch_layers=[b.layer for b in blocks],
                             base_loss=meter.base.mean, removal_loss=np.array([d for d, _ in diffs]),
                             removal_se=np.array([s for _, s in diffs]), matrices=matrices, branch_of=branch_of,
                             kinds=kinds, sensitivity=scale, fits=fits, windows=int(ids.shape[0]), errors=errors,
                             truncation=truncation)


def joint_problem(measured: JointMeasurements, ratio: float, *, pivga: bool = False, min_rank: int = 1,
                  allow_removal: bool = True, allow_factoring: bool = True,
                  metadata: dict[str, Any] | None = None) -> JointCompressionProblem:
    """The joint problem of ``measured`` with budget ⌊ratio · Σ rows·cols⌋ over the decomposed matrices."""
    if not 0 < ratio <= 1:
        raise LmshrinkError(f"ratio must be in (0, 1], not {ratio}.")
    f = measured.factors.factors
    shapes = [tuple(f[n].shape) for n in measured.matrices]
    total = sum(r * c for r, c in shapes)
    meta = {"ratio": float(ratio), "base_loss": measured.base_loss, "sensitivity": dict(measured.sensitivity),
            **(metadata or {})}
    return JointCompressionProblem(
        branches=measured.branches, removal_loss=measured.removal_loss, matrices=measured.matrices, shapes=shapes,
        singular_values=[f[n].sigma for n in measured.matrices], branch_of=measured.branch_of,
        sensitivity=np.array([measured.sensitivity[k] for k in measured.kinds]),
        budget=float(np.floor(ratio * total + 1e-9)), pivga=pivga, min_rank=min_rank, allow_removal=allow_removal,
        allow_factoring=allow_factoring, metadata=meta, errors=measured.errors)


__all__ = ["JointMeasurements", "branch_membership", "calibrate_sensitivity", "fisher_truncation_errors",
           "joint_problem", "matrix_kind",
           "measure_joint"]
