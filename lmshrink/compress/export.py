"""Export to dense: every factored layer multiplied back into a plain ``nn.Linear``, saved as a stock
transformers model that ``from_pretrained`` loads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import LmshrinkError
from .io import clear_transforms, transforms_of
from .low_rank import TRANSFORM, replace_module
from .pivga import TRANSFORM as PIVGA_TRANSFORM


def densify(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every factored layer multiplied back into a plain ``nn.Linear`` (no transforms)."""
    dense = copy.deepcopy(model)
    clear_transforms(dense)
    targets = [(name, mod) for name, mod in dense.named_modules() if hasattr(mod, "dense_weight")]
    with torch.no_grad():
        for name, mod in targets:
            W = mod.dense_weight()
            lin = nn.Linear(W.shape[1], W.shape[0], bias=mod.bias is not None, dtype=W.dtype)
            lin.weight.copy_(W)
            if mod.bias is not None:
                lin.bias.copy_(mod.bias)
            replace_module(dense, name, lin)
    return dense


def export_dense(model: nn.Module, path: str | Path, tokenizer: Any = None) -> Path:
    """Save ``model`` as a plain transformers model (W_r = A·B multiplied back) that ``from_pretrained`` loads."""
    path = Path(path)
    kinds = {t["type"] for t in transforms_of(model)} - {TRANSFORM, PIVGA_TRANSFORM}
    if kinds:
        raise LmshrinkError(f"Cannot export a dense model: transforms {sorted(kinds)} have no dense form.")
    dense = densify(model)
    dense.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


__all__ = ["densify", "export_dense"]
