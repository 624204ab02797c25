"""The contract of a rank-allocation objective, as the ``svd`` flow uses it, stage by stage:

1. :meth:`RankObjective.whiten`: the whitened SVD of every decomposed matrix (:mod:`lmshrink.compress.factoring`);
   the compression later applies the chosen ranks to these very factors;
2. :meth:`RankObjective.pose`: the :class:`~lmshrink.core.RankAllocationProblem` (plain data) of those factors;
3. :meth:`RankObjective.loss_oracle`: optionally, a :class:`~lmshrink.core.rank.LossOracle` (the model's
   differentiable calibration loss under soft truncation), handed by the pipeline to solvers that take one;
   :meth:`RankObjective.allocation_probe` likewise an :class:`~lmshrink.core.rank.AllocationProbe` (a hard
   allocation's measured loss and relinearized tables, :class:`RelinearizedProbe`).

:meth:`Objective.build` (whiten, then pose) gives the problem alone, as for every objective.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ..core import LmshrinkError, Objective, option
from ..core.rank import LossOracle, Probe, RankAllocationProblem

if TYPE_CHECKING:
    from ..compress.factoring import SvdFactors


#: how each matrix's truncation error is weighted in the energy: ``plain`` (w_l = 1), ``relative``
#: (w_l = 1/‖W_l X_l‖² = 1/Σ_i σ_{l,i}²), ``fisher`` (w_l = the loss's mean squared gradient per output entry,
#: :func:`output_sensitivity`) or ``fisher-aligned`` (each rank's error replaced by the Fisher estimate of its loss
#: increase, :func:`aligned_fisher_errors`)
ERROR_WEIGHTS = ("plain", "relative", "fisher", "fisher-aligned")


def rank_problem(
    factors: SvdFactors,
    ratio: float,
    *,
    pivga: bool = False,
    normalize: bool = False,
    min_rank: int = 1,
    metadata: dict[str, Any] | None = None,
    weights: Sequence[float] | None = None,
    errors: Sequence[np.ndarray] | None = None,
) -> RankAllocationProblem:
    """The rank-allocation problem of ``factors`` at ``ratio``: the whitened singular values of every matrix, one
    budget ⌊ratio · Σ_l m_l n_l⌋; with ``normalize`` each matrix's error weighted by 1/Σ_i σ_{l,i}², with
    ``weights`` (one per matrix, in the factors' order) by those; ``errors`` (per matrix, the error of every rank
    0..k) replaces the whitened tails."""
    names = factors.names
    shapes = [factors.factors[n].shape for n in names]
    sigmas = [factors.factors[n].sigma for n in names]
    total = sum(m * n for m, n in shapes)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(names),) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise LmshrinkError(f"Give one finite, non-negative error weight per matrix ({len(names)}).")
    elif normalize:
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
        errors=None if errors is None else list(errors),
    )


class PassTotals(NamedTuple):
    """What :func:`_output_gradient_passes` counted: input tokens, predicted tokens and their summed loss."""

    tokens: int
    predicted: int
    loss: float


def _output_gradient_passes(model: Any, linears: Mapping[str, Any], input_ids: Any, on_output: Any, *,
                            batch_size: int, progress: bool, desc: str, loss: Any = None,
                            second: Any = None) -> PassTotals:
    """Forward and backward passes of the summed next-token NLL (or of ``loss(logits, ids, start)``, a per-position
    loss of the batch of samples from ``start`` on) over ``input_ids`` in batches, calling ``on_output(name, x, y)``
    for every listed linear's input x and output y (y requires grad: register tensor hooks on it to read ∂L/∂y).
    With ``second`` (same signature) a second backward pass of that loss follows on the same forward pass, so a
    tensor hook on y fires twice per batch, first with ∂L/∂y. The weights get no gradients."""
    import torch

    from ..evaluate.loss import model_inputs, token_nll

    def keep(name: str):
        def fn(module: Any, args: tuple, output: Any) -> None:
            if output.requires_grad:
                on_output(name, args[0], output)

        return fn

    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    handles = []
    tokens = predicted = 0
    summed = 0.0
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        handles = [module.register_forward_hook(keep(name)) for name, module in linears.items()]
        embed = model.get_input_embeddings()
        starts = range(0, int(input_ids.shape[0]), batch_size)
        for s in tqdm(starts, desc=desc, disable=not progress, leave=False):
            ids = model_inputs(model, input_ids[s : s + batch_size])
            with torch.enable_grad():
                h = embed(ids).detach().requires_grad_(True)
                logits = model(inputs_embeds=h, use_cache=False).logits[:, :-1]
                total = (token_nll(logits, ids) if loss is None else loss(logits, ids, s)).sum()
                total.backward(retain_graph=second is not None)
                if second is not None:
                    second(logits, ids, s).sum().backward()
            tokens += int(ids.numel())
            predicted += int(ids[:, 1:].numel())
            summed += float(total.detach())
    finally:
        for h_ in handles:
            h_.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    return PassTotals(tokens, predicted, summed)


def output_sensitivity(model: Any, linears: Mapping[str, Any], input_ids: Any, *, batch_size: int = 4,
                       progress: bool = False) -> dict[str, float]:
    """Per matrix, how much the calibration loss reacts to an error in its outputs.

    With L the summed next-token NLL and y_t a matrix's output at token t, a small output error Δy changes the loss
    by about ½ Σ_t Δy_tᵀ F_t Δy_t (second order, F_t ≈ E[g_t g_tᵀ] with g_t = ∂L/∂y_t, the Fisher approximation of
    the Hessian). Taking F_t isotropic with the mean of its diagonal, f_l = Σ_t ‖g_t‖² / (N m_l) over the N
    calibration tokens and m_l outputs, gives ΔL ≈ ½ f_l ‖ΔW X‖², so f_l · (whitened truncation error) estimates
    each matrix's loss increase on one scale. One forward and backward pass per batch; weights get no gradients.
    """
    sums = {name: 0.0 for name in linears}

    def on_output(name: str, x: Any, y: Any) -> None:
        y.register_hook(lambda g: sums.__setitem__(name, sums[name] + float(g.double().pow(2).sum())))

    tokens = _output_gradient_passes(model, linears, input_ids, on_output, batch_size=batch_size,
                                     progress=progress, desc="output sensitivity").tokens
    return {name: sums[name] / (tokens * module.out_features) for name, module in linears.items()}


def aligned_fisher_errors(model: Any, linears: Mapping[str, Any], factors: SvdFactors, input_ids: Any, *,
                          batch_size: int = 4, progress: bool = False) -> dict[str, np.ndarray]:
    """Per matrix and rank r = 0..k, the loss increase that truncating it to rank r causes, by the Fisher
    quadratic form on the truncation's own output errors.

    A matrix's whitened SVD is W = Σ_i a_i b_iᵀ (``left``/``right`` of its factors). Truncated to rank r, its output
    at token t moves by Δy_t = −Σ_{i≥r} a_i (b_iᵀ x_t), and with g_t = ∂L/∂y_t (L the summed next-token NLL) the
    Fisher approximation of the Hessian gives ΔL ≈ ½ Σ_t (g_tᵀ Δy_t)² = ½ Σ_t (Σ_{i≥r} (g_tᵀ a_i)(b_iᵀ x_t))².
    Unlike :func:`output_sensitivity`, which takes F_t isotropic, this keeps how the gradient aligns with each
    component's output direction and how each token's input weighs on it. One forward and backward pass per batch;
    per batch and matrix, two projections on the factors and a suffix sum over the components.
    """
    import torch

    sums = {name: torch.zeros(factors.factors[name].max_rank + 1, dtype=torch.float64) for name in linears}

    def on_output(name: str, x: Any, y: Any) -> None:
        f = factors.factors[name]
        right = f.right.to(device=x.device, dtype=torch.float32)
        proj = x.detach().float().reshape(-1, x.shape[-1]) @ right.T  # (b_iᵀ x_t), tokens × k

        def grad(g: Any) -> None:
            left = f.left.to(device=g.device, dtype=torch.float32)
            c = (g.float().reshape(-1, g.shape[-1]) @ left) * proj  # (g_tᵀ a_i)(b_iᵀ x_t)
            tail = c.flip(-1).cumsum(-1).flip(-1).double()  # Σ_{i≥r}, r = 0..k−1
            sums[name][:-1] += tail.pow(2).sum(0).cpu()

        y.register_hook(grad)

    _output_gradient_passes(model, linears, input_ids, on_output, batch_size=batch_size, progress=progress,
                            desc="aligned Fisher errors")
    return {name: 0.5 * sums[name].numpy() for name in linears}


def sample_rows(input_ids: Any, count: int, seed: int = 0) -> Any:
    """``count`` rows of ``input_ids`` drawn without replacement by ``seed``, in their original order (all of them
    when ``count`` is 0 or not below the number of rows)."""
    import torch

    n = int(input_ids.shape[0])
    if count < 0:
        raise LmshrinkError(f"A sample count is 0 (all) or positive, not {count}.")
    if count == 0 or count >= n:
        return input_ids
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:count].sort().values
    return input_ids[rows.to(input_ids.device)]


class RelinearizedProbe:
    """An :class:`~lmshrink.core.rank.AllocationProbe`: the calibration loss of the model truncated to an allocation,
    and every matrix's second-order table around it.

    With the model truncated to ranks r⁰ (each matrix W = Σ_i a_i b_iᵀ cut to its first r⁰_l components, the
    ``left``/``right`` of its whitened SVD), moving matrix l alone to rank r moves its output at token t by
    Δy_t = Σ_{i<r} a_i b_iᵀx_t − Σ_{i<r⁰} a_i b_iᵀx_t. With g_t = ∂L/∂y_t (L the summed next-token NLL) and
    S_t(r) = g_tᵀΔy_t = P_t(r) − P_t(r⁰), P_t(r) = Σ_{i<r} (g_tᵀa_i)(b_iᵀx_t), the loss changes by about

        Δ_l(r) = [Σ_t S_t(r) + ½ Σ_t S_t(r)²] / N                                                          (R)

    (first order plus the empirical-Fisher second order, per predicted token; N the predicted tokens). At the dense
    model the first-order term of a truncation is small and (R) is :func:`aligned_fisher_errors`; around a
    compressed model it is not, and it is what a trust-region step needs. With ``target="kl"`` L is instead the
    KL divergence from the uncompressed model's next-token distribution (its top-``top_k`` summary, computed once;
    :func:`~lmshrink.evaluate.kl.topk_kl`), whose gradients carry the whole teacher distribution rather than one
    sampled next token. One forward and backward pass over the calibration samples per call, with the matrices
    swapped for their truncations (restored after).

    The second-order term is the empirical Fisher of L's own gradients (``curvature="empirical"``), or
    (``"sampled"``) the Fisher of the truncated model's predictive distribution q, the Gauss-Newton curvature of both
    CE and KL: ½ Σ_t (ĝ_tᵀΔy_t)² with ĝ_t the gradient of −log q(ŷ) for next tokens ŷ drawn from q itself (one
    draw per position, seeded; a second backward pass). The KL's own gradients vanish as the truncated model nears
    the dense one, so its empirical Fisher understates the curvature and the steps it predicts overshoot.
    """

    def __init__(self, model: Any, factors: SvdFactors, names: Sequence[str], input_ids: Any, *,
                 batch_size: int = 4, progress: bool = False, target: str = "ce", top_k: int = 128,
                 curvature: str = "empirical", seed: int = 0) -> None:
        if target not in ("ce", "kl"):
            raise LmshrinkError(f"The probe's target is ce or kl, not {target!r}.")
        if curvature not in ("empirical", "sampled"):
            raise LmshrinkError(f"The probe's curvature is empirical or sampled, not {curvature!r}.")
        self.curvature, self.seed = curvature, int(seed)
        self.model = model
        self.names = list(names)
        self.factors = factors
        self.input_ids = input_ids
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.target, self.top_k = target, int(top_k)
        self._teacher: dict[int, tuple[Any, Any, Any]] = {}
        self.calls = 0

    def __repr__(self) -> str:
        loss = "next-token NLL" if self.target == "ce" else f"KL to the uncompressed model (top-{self.top_k})"
        return (f"RelinearizedProbe({len(self.names)} matrices, {int(self.input_ids.shape[0])} calibration samples, "
                f"{loss}, first + second order, {self.curvature} Fisher)")

    def _teacher_summaries(self) -> None:
        """The uncompressed model's top-k summary of every batch, once (before any layer is swapped)."""
        import torch

        from ..evaluate.kl import summarize
        from ..evaluate.loss import model_inputs

        if self._teacher:
            return
        with torch.no_grad():
            for s in range(0, int(self.input_ids.shape[0]), self.batch_size):
                ids = model_inputs(self.model, self.input_ids[s: s + self.batch_size])
                self._teacher[s] = summarize(self.model(input_ids=ids, use_cache=False).logits[:, :-1], self.top_k)

    def _kl(self, logits: Any, ids: Any, start: int) -> Any:
        from ..evaluate.kl import topk_kl

        return topk_kl(logits, *self._teacher[start])

    def _sampled_nll(self, logits: Any, ids: Any, start: int) -> Any:
        """−log q(ŷ) per position, ŷ drawn from q = softmax(logits) (seeded by the batch's first sample)."""
        import torch

        logq = torch.log_softmax(logits.float(), dim=-1)
        draw = torch.Generator(device="cpu").manual_seed(self.seed + start)
        probs = logq.detach().exp().reshape(-1, logq.shape[-1]).cpu()
        sampled = torch.multinomial(probs, 1, generator=draw).to(logq.device)
        return -logq.reshape(-1, logq.shape[-1]).gather(-1, sampled).reshape(logq.shape[:-1])

    def __call__(self, ranks: Sequence[int]) -> Probe:
        import torch

        from ..compress.low_rank import SoftTruncatedLinear, replace_module

        if len(ranks) != len(self.names):
            raise LmshrinkError(f"{len(ranks)} ranks for {len(self.names)} matrices.")
        at = {n: int(r) for n, r in zip(self.names, ranks)}
        if self.target == "kl":
            self._teacher_summaries()
        s1 = {n: torch.zeros(self.factors.factors[n].max_rank + 1, dtype=torch.float64) for n in self.names}
        s2 = {n: torch.zeros_like(s1[n]) for n in self.names}
        parts: dict[str, tuple[Any, Any]] = {}
        sampled = self._sampled_nll if self.curvature == "sampled" else None

        def on_output(name: str, x: Any, y: Any) -> None:
            left, right = parts[name]
            proj = x.detach().to(right.dtype).reshape(-1, x.shape[-1]) @ right.T  # (b_iᵀ x_t), tokens × k

            fired = [0]  # with sampled curvature the hook fires twice: ∂L/∂y, then ∂(−log q(ŷ))/∂y

            def grad(g: Any) -> None:
                c = (g.to(left.dtype).reshape(-1, g.shape[-1]) @ left) * proj  # (g_tᵀ a_i)(b_iᵀ x_t)
                prefix = torch.nn.functional.pad(c.cumsum(-1), (1, 0)).double()  # P_t(r), r = 0..k
                step = prefix - prefix[:, at[name]: at[name] + 1]  # S_t(r)
                if fired[0] == 0:
                    s1[name] += step.sum(0).cpu()
                if fired[0] == 1 or sampled is None:
                    s2[name] += step.pow(2).sum(0).cpu()
                fired[0] += 1

            y.register_hook(grad)

        saved = []
        try:
            for name in self.names:
                f = self.factors.factors[name]
                weight = self.model.get_submodule(name).weight
                left = f.left.to(device=weight.device, dtype=torch.float32)
                right = f.right.to(device=weight.device, dtype=torch.float32)
                parts[name] = (left, right)
                mask = (torch.arange(f.max_rank, device=weight.device) < at[name]).to(weight.dtype)
                bias = None if f.bias is None else f.bias.to(device=weight.device, dtype=weight.dtype)
                layer = SoftTruncatedLinear(left.to(weight.dtype), right.to(weight.dtype), mask, bias)
                saved.append((name, replace_module(self.model, name, layer)))
            linears = {name: self.model.get_submodule(name) for name in self.names}
            totals = _output_gradient_passes(self.model, linears, self.input_ids, on_output,
                                             batch_size=self.batch_size, progress=self.progress, desc="probe",
                                             loss=self._kl if self.target == "kl" else None, second=sampled)
        finally:
            for name, module in reversed(saved):
                replace_module(self.model, name, module)
        self.calls += 1
        n = max(totals.predicted, 1)
        curvature = [(0.5 * s2[name] / n).numpy() for name in self.names]
        tables = [(s1[name] / n).numpy() + c for name, c in zip(self.names, curvature)]
        return Probe(loss=totals.loss / n, tables=tables, curvature=curvature)


@dataclass(frozen=True)
class RankOptions:
    ratio: float = option(0.8, "fraction of the decomposed matrices' parameters to keep")
    pivga: bool = option(False, "count PivGa costs r(m+n)−r² instead of r(m+n)")
    gram_batch_size: int = option(8, "samples per forward pass when collecting the whitening statistics")
    eps: float = option(1e-6, "relative regularization eps·trace/d first tried in the Cholesky factorization")
    progress: bool = option(True, "show progress bars")


class RankObjective(Objective):
    """Base class of rank-allocation objectives: whitened SVDs → problem (→ loss oracle).

    Subclasses implement :meth:`pose` and may override :meth:`whiten` and :meth:`loss_oracle`. The stage methods
    take ``options`` complete and validated (:meth:`validate`); their own options extend :attr:`options`, whose
    ``ratio`` (the budget as a fraction of the dense parameters) and ``pivga`` (the cost model) the pipeline sets.
    """

    options = RankOptions

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

    def allocation_probe(self, model: Any, factors: SvdFactors, problem: RankAllocationProblem, calibration: Any,
                         options: Mapping[str, Any]) -> Any:
        """An :class:`~lmshrink.core.rank.AllocationProbe` over ``problem``'s matrices, or None (the default)."""
        return None

    def build_problem(self, model: Any, adapter: Any, calibration: Any, **options: Any) -> RankAllocationProblem:
        factors = self.whiten(model, adapter, calibration, options)
        return self.pose(factors, model, adapter, calibration, options)


__all__ = ["ERROR_WEIGHTS", "RankObjective", "RankOptions", "RelinearizedProbe", "aligned_fisher_errors",
           "output_sensitivity", "rank_problem", "sample_rows"]
