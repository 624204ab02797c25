"""What one timed repetition measures: prefill throughput, decode latency with the KV cache, memory, and the
multiply-adds per token a model's matrices cost."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock_for(device: torch.device) -> str:
    """``"cpu time"`` (the process's CPU seconds) on the CPU with one torch thread, where it is the latency without
    the time other jobs hold the core, so timings on a shared machine stay comparable; ``"wall"`` otherwise."""
    return "cpu time" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"


def _now(device: torch.device) -> float:
    return time.process_time() if clock_for(device) == "cpu time" else time.perf_counter()


@torch.inference_mode()
def prefill_seconds(model: nn.Module, ids: torch.Tensor) -> float:
    """Seconds (:func:`clock_for`) of one forward pass over ``ids`` (batch × tokens), logits of the last position only (as a
    generation's prefill computes them)."""
    _sync(ids.device)
    start = _now(ids.device)
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    _sync(ids.device)
    return _now(ids.device) - start


def _cache_keyword(model: nn.Module) -> str:
    """The name under which this transformers' forward takes the KV cache (``cache`` since 5.x)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    return out.cache if hasattr(out, "cache") else out.past_key_values


@torch.inference_mode()
def decode_seconds(model: nn.Module, prompt: torch.Tensor, steps: int) -> float:
    """Seconds (:func:`clock_for`) per decoding step (one new token for each sequence of the batch) with the KV cache, after a
    prefill of ``prompt`` that is not timed; the next token is the greedy one."""
    keyword = _cache_keyword(model)
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    past, token = _cache_of(out), out.logits[:, -1:].argmax(-1)
    _sync(prompt.device)
    start = _now(prompt.device)
    for _ in range(steps):
        out = model(input_ids=token, use_cache=True, **{keyword: past})
        past, token = _cache_of(out), out.logits[:, -1:].argmax(-1)
    _sync(prompt.device)
    return (_now(prompt.device) - start) / steps


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the parameters, buffers and other tensors the modules hold in memory (such as the left factor a
    PivGa layer lays out for its forward; tied tensors counted once). Measure after a forward pass."""
    seen: dict[int, int] = {}
    held = [t for m in model.modules() for t in vars(m).values() if isinstance(t, torch.Tensor)]
    for t in [*model.parameters(), *model.buffers(), *held]:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def matrix_macs(model: nn.Module) -> dict[str, int]:
    """Multiply-adds per token of the model's matrices: ``decoder`` (every matrix inside the decoder layers) and
    ``head`` (the LM head). The embedding is a lookup (no multiply-adds); attention over the cache is not counted.
    A factored layer costs what its forward computes (:meth:`macs_per_token`)."""
    decoder = head = 0
    for name, module in model.named_modules():
        if hasattr(module, "macs_per_token"):
            macs = int(module.macs_per_token())
        elif isinstance(module, nn.Linear):
            macs = module.in_features * module.out_features
        else:
            continue
        if name.endswith("lm_head"):
            head += macs
        else:
            decoder += macs
    return {"decoder": decoder, "head": head}


def mac_shares(variant: dict[str, int], dense: dict[str, int], prefill_tokens: int) -> dict[str, float]:
    """The variant's multiply-adds over the dense model's: per decoded token (decoder + head) and per prefilled
    token (decoder, plus the head once per sequence)."""
    def prefill(m: dict[str, int]) -> float:
        return m["decoder"] + m["head"] / prefill_tokens

    return {"decode": (variant["decoder"] + variant["head"]) / (dense["decoder"] + dense["head"]),
            "prefill": prefill(variant) / prefill(dense)}


class PeakMemory:
    """Peak accelerator memory (bytes) allocated inside a ``with`` block; None on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))


__all__ = ["PeakMemory", "clock_for", "decode_seconds", "mac_shares", "matrix_macs", "prefill_seconds", "weight_bytes"]
