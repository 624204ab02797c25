"""Per-sample language-model loss, and the calibration loss of a model with some blocks gated off."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from ..core import Gates
from ..devices import model_device


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are scored in float32; float32 and float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token NLL of every predicted position, (batch, seq_len − 1), in float64: ``logits`` (of positions
    0..T−2) are scored in at least float32 and each token's NLL is cast to float64 before any sum, so that losses
    and perplexities accumulate in float64 whatever the model's dtype."""
    targets = input_ids[:, 1:].to(logits.device)
    nll = F.cross_entropy(_upcast(logits).reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.to(torch.float64).view(targets.shape)


def model_inputs(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """``input_ids`` on the device of the model's input embeddings (a no-op when they are there already)."""
    return input_ids.to(model_device(model))


def per_sample_loss(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each row of ``input_ids``: shape (batch,), float64."""
    input_ids = model_inputs(model, input_ids)
    logits = model(input_ids=input_ids, use_cache=False).logits[:, :-1]
    return token_nll(logits, input_ids).mean(dim=1)


@torch.no_grad()
def calibration_loss(
    model: Any,
    input_ids: torch.Tensor,
    *,
    adapter: Any = None,
    removed: Sequence[int] = (),
    granularity: str = "layer",
    batch_size: int = 8,
) -> float:
    """Mean per-sample loss over ``input_ids`` with the blocks ``removed`` gated to 0 (no copy of the model)."""
    losses = []
    if removed:
        n = len(adapter.blocks(model, granularity))
        values = torch.ones(n)
        values[list(removed)] = 0.0
        ctx = adapter.gate(model, Gates(values), granularity)
    else:
        ctx = nullcontext()
    with ctx:
        for start in range(0, input_ids.shape[0], batch_size):
            losses.append(per_sample_loss(model, input_ids[start : start + batch_size]))
    return float(torch.cat(losses).mean())
