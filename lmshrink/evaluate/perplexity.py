"""Perplexity on held-out text, over non-overlapping windows so every model sees the same tokens."""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm

from .loss import model_inputs, token_nll


@torch.no_grad()
def perplexity(
    model: Any,
    token_ids: torch.Tensor,
    *,
    window: int = 512,
    batch_size: int = 4,
    progress: bool = True,
    desc: str = "perplexity",
) -> dict[str, float]:
    """exp(mean next-token NLL) over ``token_ids`` (1-D) cut into chunks of ``window`` tokens.

    Each chunk is scored on its own (positions 1..window−1 predicted from the chunk's prefix); a trailing chunk
    shorter than 2 tokens is dropped. The NLL is accumulated in float64 whatever the model's dtype. Returns ``{"perplexity", "nll", "tokens"}``.
    """
    ids = token_ids.reshape(-1)
    chunks = [ids[s : s + window] for s in range(0, len(ids), window)]
    chunks = [c for c in chunks if len(c) >= 2]
    total_nll, total_tokens = 0.0, 0
    full = [c for c in chunks if len(c) == window]
    rest = [c for c in chunks if len(c) != window]
    batches = [torch.stack(full[i : i + batch_size]) for i in range(0, len(full), batch_size)]
    batches += [c[None] for c in rest]
    model.eval()
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        batch = model_inputs(model, batch)
        nll = token_nll(model(input_ids=batch, use_cache=False).logits[:, :-1], batch)
        total_nll += float(nll.sum())  # float64 per token (token_nll), summed in float64
        total_tokens += nll.numel()
    mean = total_nll / max(total_tokens, 1)
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": total_tokens}
