"""``fermi-rank``: SVD rank allocation as a :class:`~lmshrink.core.RankAllocationProblem`, with a loss oracle.

The objective poses the rank allocation of the whitened SVDs (:mod:`lmshrink.compress.factoring`): per matrix its
whitened singular values σ_{l,i}, one global budget ``ratio · Σ_l m_l n_l``, and the energy
Σ_l w_l Σ_{i≥r_l} σ_{l,i}² (the summed calibration truncation error; w_l = 1, or 1/Σ_i σ_{l,i}² with
``normalize`` or ``error_weights="relative"``, or ½ f_l with ``error_weights="fisher"``: then each term estimates the
calibration loss increase of truncating that matrix, :func:`~lmshrink.objectives.rank.output_sensitivity`). With
``error_weights="fisher-aligned"`` each matrix's tail is replaced by the Fisher estimate of the loss increase of each
rank on its own output errors (:func:`~lmshrink.objectives.rank.aligned_fisher_errors`).

That energy treats every matrix's output error alike, although the network is not equally sensitive to each. So
the objective also builds a *loss oracle* (:class:`SoftTruncationLoss`, a :class:`~lmshrink.core.rank.LossOracle`,
runtime only, never saved), which the pipeline hands to the ``fermigrad`` solver: given one soft keep-mask
f_l ∈ [0, 1]^{k_l} per matrix it returns the model's calibration loss with every matrix replaced by its soft
truncation

    W_l(f_l) = left_l · diag(f_l) · right_l            (= U Σ diag(f) Vᵀ S⁻¹, the whitened SVD)            (1)

differentiable in the masks only (the factors and the rest of the model stay frozen). The loss is the KL
divergence from the uncompressed model's next-token distribution (``target="kl"``, the teacher forward runs on
the same minibatch without grad) or the plain next-token cross-entropy (``target="ce"``). With
``teacher_top_k = K`` the teacher's K likeliest tokens per position are computed once per calibration sample and
kept (K·(T−1) numbers per sample instead of a teacher forward pass per call), and the KL is taken between the
coarse-grained distributions over those K tokens plus one "any other token" bucket. Each call takes the next
minibatch of ``batch_size`` calibration samples, cycling through a seeded shuffle. A solver that reads the
problem from a file sees only the σ's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import option
from ..core.rank import RankAllocationProblem
from .rank import (ERROR_WEIGHTS, RankObjective, RankOptions, RelinearizedProbe, aligned_fisher_errors,
                   output_sensitivity, rank_problem, sample_rows)


class SoftTruncationLoss:
    """Loss oracle: calibration loss of ``model`` with every factored matrix soft-truncated by the given masks.

    ``masks[l]`` belongs to ``names[l]`` (the problem's order) and has length min(m_l, n_l). Calling the oracle
    returns a scalar tensor whose gradient flows to the masks only.
    """

    def __init__(
        self,
        model: Any,
        factors: Any,
        names: Sequence[str],
        input_ids: Any,
        *,
        target: str = "kl",
        batch_size: int = 4,
        seed: int = 0,
        teacher_top_k: int = 0,
    ) -> None:
        import torch

        if target not in ("kl", "ce"):
            raise ValueError(f"target must be 'kl' or 'ce', not {target!r}")
        self.model = model
        self.names = list(names)
        self.factors = [factors.factors[n] for n in self.names]
        self.input_ids = input_ids
        self.target = target
        self.batch_size = max(1, int(batch_size))
        self.teacher_top_k = max(0, int(teacher_top_k))
        #: per calibration sample: the teacher's top-K log-probabilities and token ids at every position
        self._teacher: dict[int, tuple[Any, Any]] = {}
        self._rng = np.random.default_rng(seed)
        self._order: list[int] = []
        self.calls = 0
        # each factor in the dtype and on the device of the layer it replaces
        on = [dict(device=model.get_submodule(n).weight.device, dtype=model.get_submodule(n).weight.dtype)
              for n in self.names]
        self._left = [f.left.to(**o) for f, o in zip(self.factors, on)]
        self._right = [f.right.to(**o) for f, o in zip(self.factors, on)]
        self._bias = [None if f.bias is None else f.bias.to(**o) for f, o in zip(self.factors, on)]
        self._torch = torch

    def __repr__(self) -> str:
        teacher = f", teacher top-{self.teacher_top_k}" if self.target == "kl" and self.teacher_top_k else ""
        return (f"SoftTruncationLoss({self.target}, {len(self.names)} matrices, {self.batch_size} of "
                f"{int(self.input_ids.shape[0])} samples per call{teacher})")

    def _next_batch(self) -> list[int]:
        n = int(self.input_ids.shape[0])
        if len(self._order) < self.batch_size:
            self._order.extend(self._rng.permutation(n).tolist())
        take, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        return take

    def _teacher_top_k(self, take: list[int]) -> tuple[Any, Any]:
        """(log-probs, token ids), each (B, T−1, K): the uncompressed model's K likeliest tokens, cached per sample."""
        torch = self._torch
        import torch.nn.functional as F

        from ..evaluate.loss import model_inputs

        missing = [i for i in take if i not in self._teacher]
        if missing:
            with torch.no_grad():
                ids = model_inputs(self.model, self.input_ids[missing])
                logits = self.model(input_ids=ids, use_cache=False).logits[:, :-1].float()
                k = min(self.teacher_top_k, logits.shape[-1])
                values, ids = torch.topk(F.log_softmax(logits, dim=-1), k, dim=-1)
            for row, i in enumerate(missing):
                self._teacher[i] = (values[row].clone(), ids[row].clone())
        return (torch.stack([self._teacher[i][0] for i in take]), torch.stack([self._teacher[i][1] for i in take]))

    @contextmanager
    def soft(self, masks: Sequence[Any]) -> Iterator[None]:
        """Swap every factored layer for its soft truncation (1) with ``masks``; restore the layers on exit."""
        from ..compress.low_rank import SoftTruncatedLinear, replace_module

        if len(masks) != len(self.names):
            raise ValueError(f"{len(masks)} masks for {len(self.names)} matrices")
        saved = []
        # the rest of the model is frozen too: gradients flow to the masks only, no weight gradients are kept
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            for name, left, right, bias, mask in zip(self.names, self._left, self._right, self._bias, masks):
                saved.append((name, replace_module(self.model, name, SoftTruncatedLinear(left, right, mask, bias))))
            yield
        finally:
            for name, module in reversed(saved):
                replace_module(self.model, name, module)
            for p, flag in flags:
                p.requires_grad_(flag)

    def __call__(self, masks: Sequence[Any]) -> Any:
        torch = self._torch
        import torch.nn.functional as F

        from ..evaluate.loss import model_inputs

        take = self._next_batch()
        batch = model_inputs(self.model, self.input_ids[take])
        self.calls += 1
        teacher = top = None
        if self.target == "kl" and self.teacher_top_k:
            top = self._teacher_top_k(take)
        elif self.target == "kl":
            with torch.no_grad():
                teacher = F.log_softmax(self.model(input_ids=batch, use_cache=False).logits[:, :-1].float(), dim=-1)
        with self.soft(masks):
            logits = self.model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        logp = F.log_softmax(logits, dim=-1)
        if self.target == "ce":
            return F.nll_loss(logp.reshape(-1, logp.shape[-1]), batch[:, 1:].reshape(-1))
        if teacher is not None:
            # KL(p_teacher ‖ p_student) per token, averaged over tokens
            return (teacher.exp() * (teacher - logp)).sum(-1).mean()
        # coarse-grained KL over the teacher's top-K tokens plus one bucket "every other token" (by the data
        # processing inequality a lower bound of the full KL, equal to it as K → vocabulary size):
        #   Σ_{j∈K} p_j (log p_j − log q_j) + p_rest (log p_rest − log q_rest),  p_rest = 1 − Σ_{j∈K} p_j
        lp, ids = top
        lq = logp.gather(-1, ids)
        log_rest_p = torch.log1p(-torch.clamp(lp.exp().sum(-1), max=1 - 1e-7))
        log_rest_q = torch.log1p(-torch.clamp(lq.exp().sum(-1), max=1 - 1e-7))
        kl = (lp.exp() * (lp - lq)).sum(-1) + log_rest_p.exp() * (log_rest_p - log_rest_q)
        return kl.mean()


@dataclass(frozen=True)
class FermiRankOptions(RankOptions):
    target: str = option("kl", "oracle and probe loss: kl (to the uncompressed model) or ce (next-token)",
                         choices=("kl", "ce"))
    oracle: bool = option(True, "build the soft-truncation loss oracle and the allocation probe for solvers that "
                                "take them (runtime only, never saved)")
    batch_size: int = option(2, "calibration samples per oracle call")
    teacher_top_k: int = option(128, "kl: cache the teacher's top-K tokens per sample (0: full teacher every call)")
    normalize: bool = option(False, "weight each matrix's error by 1/Σσ² (relative error) in the energy")
    error_weights: str = option("plain", "weight of each matrix's whitened error in the energy: plain (1), relative "
                                         "(1/‖WX‖², as normalize), fisher (the loss's sensitivity to its outputs) or "
                                         "fisher-aligned (each rank's Fisher loss estimate on its own output errors)",
                                         choices=ERROR_WEIGHTS)
    probe_curvature: str = option("empirical", "second order of the allocation probe (trust-region): the "
                                  "empirical Fisher of the loss's own gradients, or sampled (the Fisher of the "
                                  "truncated model's own predictions)", choices=("empirical", "sampled"))
    probe_samples: int = option(0, "calibration samples each allocation probe measures (a seeded draw; 0: all): "
                                   "fewer make each trust-region round cheaper in proportion", minimum=0)
    min_rank: int = option(1, "smallest rank allowed")
    seed: int = option(0, "seed of the oracle's minibatch order")


class FermiRankObjective(RankObjective):
    """Whitened-SVD rank allocation under a parameter budget, with a soft-truncation loss oracle for fermigrad."""

    name = "fermi-rank"
    description = "SVD rank allocation (whitened truncation error) with a differentiable soft-truncation loss oracle."
    options = FermiRankOptions

    def pose(self, factors: Any, model: Any, adapter: Any, calibration: Any,
             options: Mapping[str, Any]) -> RankAllocationProblem:
        o = options
        meta = {
            "model": getattr(model.config, "name_or_path", "") or type(model).__name__,
            "architecture": type(model).__name__,
            "adapter": adapter.name,
            "objective": self.name,
            "options": {"ratio": o["ratio"], "pivga": o["pivga"], "target": o["target"], "eps": o["eps"],
                        "normalize": o["normalize"], "error_weights": o["error_weights"],
                        "batch_size": o["batch_size"],
                        "teacher_top_k": o["teacher_top_k"]},
            "calibration": {"source": calibration.source, **calibration.info},
            "whitening": factors.info.get("whitening", {}),
        }
        weights = errors = None
        if o["error_weights"] == "fisher":
            weights = [f * 0.5 for f in self.sensitivity(model, adapter, calibration, o, factors.names)]
        elif o["error_weights"] == "fisher-aligned":
            errors = self.aligned_errors(model, adapter, calibration, o, factors)
        return rank_problem(factors, o["ratio"], pivga=o["pivga"], normalize=o["normalize"] or
                            o["error_weights"] == "relative", min_rank=o["min_rank"], metadata=meta, weights=weights,
                            errors=errors)

    def sensitivity(self, model: Any, adapter: Any, calibration: Any, options: Mapping[str, Any],
                    names: Sequence[str]) -> list[float]:
        """:func:`~lmshrink.objectives.rank.output_sensitivity` of ``names`` on the calibration samples, kept for
        the same model and samples (every ratio of a run poses with the same weights)."""
        key = (id(model), calibration.fingerprint())
        if getattr(self, "_sensitivity_key", None) != key:
            linears = adapter.linear_layers(model)
            self._sensitivity = output_sensitivity(model, linears, calibration.input_ids,
                                                   batch_size=options["batch_size"], progress=options["progress"])
            self._sensitivity_key = key
        return [self._sensitivity[n] for n in names]

    def aligned_errors(self, model: Any, adapter: Any, calibration: Any, options: Mapping[str, Any],
                       factors: Any) -> list[Any]:
        """:func:`~lmshrink.objectives.rank.aligned_fisher_errors` of ``factors`` on the calibration samples, kept
        for the same model, samples and factors (every ratio of a run poses with the same table)."""
        key = (id(model), calibration.fingerprint(), id(factors))
        if getattr(self, "_aligned_key", None) != key:
            linears = {n: m for n, m in adapter.linear_layers(model).items() if n in factors.factors}
            self._aligned = aligned_fisher_errors(model, linears, factors, calibration.input_ids,
                                                  batch_size=options["batch_size"], progress=options["progress"])
            self._aligned_key = key
        return [self._aligned[n] for n in factors.names]

    def loss_oracle(self, model: Any, factors: Any, problem: RankAllocationProblem, calibration: Any,
                    options: Mapping[str, Any]) -> SoftTruncationLoss | None:
        """The soft-truncation loss (1) of ``model`` over ``problem``'s matrices (None with ``oracle=False``)."""
        if not options["oracle"]:
            return None
        return SoftTruncationLoss(model, factors, problem.names, calibration.input_ids, target=options["target"],
                                  batch_size=options["batch_size"], seed=options["seed"],
                                  teacher_top_k=options["teacher_top_k"])

    def allocation_probe(self, model: Any, factors: Any, problem: RankAllocationProblem, calibration: Any,
                         options: Mapping[str, Any]) -> RelinearizedProbe | None:
        """The relinearized probe (R) of ``model`` over ``problem``'s matrices (None with ``oracle=False``)."""
        if not options["oracle"]:
            return None
        return RelinearizedProbe(model, factors, problem.names,
                                 sample_rows(calibration.input_ids, options["probe_samples"], options["seed"]),
                                 batch_size=options["batch_size"], progress=options["progress"],
                                 target=options["target"], top_k=options["teacher_top_k"] or 128,
                                 curvature=options["probe_curvature"], seed=options["seed"])


__all__ = ["FermiRankObjective", "SoftTruncationLoss", "rank_problem"]
