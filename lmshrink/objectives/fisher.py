"""``fisher``: block removal as a QUBO from the empirical Fisher of scalar block gates.

Each block i gets a gate g_i (1 = unchanged). For calibration sample s, g_s = ∂L_s/∂g at g = 1 is one row of
A (m × N); H = AᵀA / m is the empirical Fisher. Removing the blocks x (Δg = −x) changes the loss by

    ΔL ≈ −ḡ·x + ½ xᵀ H x          (second-order Taylor expansion, ḡ the mean gradient)

The default keeps the second-order term alone, xᵀHx (the paper's energy; the factor ½ does not change the
minimiser); ``first_order=true`` uses the full expansion. Per-sample gradients come from one batched backward
pass: each sample gets its own copy of the gates (shape (B, N)), and since sample s depends only on its own copy,
∂(Σ_s L_s)/∂g[s] = ∂L_s/∂g.

With ``checkpointing=true`` each decoder layer keeps only its input during the forward pass and recomputes its
inside during the backward pass (one more forward pass of compute, the activations of one layer at a time).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..cache import cached_arrays, measurement_metadata
from ..core import BinaryQuadraticProblem, Gates, Objective, option
from ..core.errors import LmshrinkError
from ..devices import model_device
from ..torch_utils import frozen
from .common import measurement_key, problem_metadata, require_finite


@contextmanager
def checkpointed_layers(model: Any, adapter: Any) -> Iterator[None]:
    """Within the context every decoder layer's forward runs under activation checkpointing (non-reentrant, so
    the gate hooks around and inside a layer get their gradients): the backward pass recomputes each layer."""
    from torch.utils.checkpoint import checkpoint

    where = adapter.layer_list(model)
    if where is None:
        raise LmshrinkError(f"Gradient checkpointing needs an adapter that names the decoder layer list; "
                            f"{adapter.name!r} does not.")
    parent, attr = where
    layers = list(getattr(parent, attr))

    def wrap(forward: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)

        return run

    own = [vars(layer).get("forward") for layer in layers]  # a forward set on the instance (e.g. by accelerate)
    try:
        for layer in layers:
            layer.forward = wrap(layer.forward)
        yield
    finally:
        for layer, previous in zip(layers, own):
            if previous is not None:
                layer.forward = previous
            elif "forward" in vars(layer):
                del layer.forward


def gate_gradients(
    model: Any, adapter: Any, input_ids: Any, granularity: str = "layer", batch_size: int = 8, progress: bool = True,
    checkpointing: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample gate gradients A (m × N) and per-sample losses (m,) at gates = 1, float64 whatever the model's
    dtype (the gradients are cast per sample before H is formed from them); ``checkpointing`` recomputes each
    layer in the backward pass instead of keeping its activations."""
    import torch

    from ..evaluate.loss import per_sample_loss

    n = len(adapter.blocks(model, granularity))
    grads, losses = [], []
    starts = range(0, input_ids.shape[0], batch_size)
    saving = checkpointed_layers(model, adapter) if checkpointing else nullcontext()
    with frozen(model), saving:
        for start in tqdm(starts, desc="gate gradients", disable=not progress, leave=False):
            batch = input_ids[start : start + batch_size]
            # float32 gates on the inputs' device; each block casts its gate to the activation's dtype
            gates = torch.ones(batch.shape[0], n, requires_grad=True, device=model_device(model))
            with adapter.gate(model, Gates(gates), granularity):
                loss = per_sample_loss(model, batch)  # float64 per sample (evaluate.loss.token_nll)
                loss.sum().backward()
            # per-sample gradients in float64 before H = AᵀA/m is accumulated (in numpy, float64)
            grads.append(gates.grad.detach().double().cpu().numpy())
            losses.append(loss.detach().double().cpu().numpy())
    return np.concatenate(grads), np.concatenate(losses)


def fisher_terms(A: np.ndarray, first_order: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(linear, quadratic, mean gradient) of the problem from the gate gradients A (m × N)."""
    H = A.T @ A / A.shape[0]
    mean_grad = A.mean(axis=0)
    if first_order:
        return -mean_grad, H / 2, mean_grad
    return np.zeros(A.shape[1]), H, mean_grad


@dataclass(frozen=True)
class FisherOptions:
    granularity: str = option("layer", "layer, or sublayer (attention and MLP apart)")
    first_order: bool = option(False, "use −ḡ·x + ½xᵀHx instead of xᵀHx")
    batch_size: int = option(8, "samples per backward pass")
    checkpointing: bool = option(False, "recompute each layer in the backward pass (less memory, one more forward "
                                        "pass of compute)")
    progress: bool = option(True, "show a progress bar")


class FisherObjective(Objective):
    """Empirical-Fisher QUBO of block gates (second order, optionally with the first-order term)."""

    name = "fisher"
    description = "Empirical-Fisher QUBO xᵀHx of block-gate gradients, H = AᵀA/m (optional first-order term)."
    options = FisherOptions

    def build_problem(self, model, adapter, calibration, *, granularity, first_order, batch_size, checkpointing,
                      progress):
        blocks = adapter.blocks(model, granularity)
        key = measurement_key(model, adapter, calibration, granularity, what="gate_gradients")

        def measure() -> dict[str, np.ndarray]:
            A, losses = gate_gradients(model, adapter, calibration.input_ids, granularity, batch_size, progress,
                                       checkpointing)
            for values, what in ((losses, "the calibration loss"), (A, "the gate gradients")):
                require_finite(values, what, model, adapter, calibration.input_ids, granularity)
            return {"A": A, "losses": losses}

        arrays, cached = cached_arrays("fisher", key, measure)
        A = arrays["A"]
        m = A.shape[0]
        linear, quadratic, mean_grad = fisher_terms(A, first_order)
        meta = problem_metadata(model, adapter, calibration, self.name, granularity,
                                {"first_order": first_order}, blocks)
        meta.update({"samples": m, **measurement_metadata(arrays, cached), "mean_gradient": mean_grad.tolist(),
                     "base_loss": float(arrays["losses"].mean())})
        return BinaryQuadraticProblem([b.name for b in blocks], linear, quadratic, 0.0, [], meta)
