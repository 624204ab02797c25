"""lmshrink's own model format, for models that plain transformers cannot express (low-rank or gauge-fixed
factors, a decoder layer without its attention, ...).

A directory holds the (rewritten) transformers ``config.json``, ``lmshrink_config.json`` listing the structural
transforms applied to the stock architecture, in order, ``model.safetensors`` with the final weights, and the
tokenizer. :func:`load_compressed` builds the stock model from the config, replays the transforms to get the same
module shapes, then loads the weights.

A transform is a dict with a ``type`` key. Code that changes a model's structure calls :func:`record_transform`
and registers how to replay that type with :func:`register_transform`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import LmshrinkError

FORMAT = "lmshrink.compressed/1"
CONFIG_FILE = "lmshrink_config.json"
WEIGHTS_FILE = "model.safetensors"
_ATTR = "_lmshrink_transforms"

Transform = Callable[[Any, dict[str, Any]], None]
_TRANSFORMS: dict[str, Transform] = {}


def register_transform(kind: str) -> Callable[[Transform], Transform]:
    """Decorator: ``fn(model, spec)`` replays a transform of type ``kind`` on a freshly built stock model."""

    def deco(fn: Transform) -> Transform:
        _TRANSFORMS[kind] = fn
        return fn

    return deco


def record_transform(model: Any, spec: dict[str, Any]) -> None:
    """Note on ``model`` that the structural transform ``spec`` was applied (saved by :func:`save_compressed`)."""
    if "type" not in spec:
        raise LmshrinkError("A transform needs a 'type'.")
    transforms = getattr(model, _ATTR, None)
    if transforms is None:
        transforms = []
        object.__setattr__(model, _ATTR, transforms)
    transforms.append(dict(spec))


def transforms_of(model: Any) -> list[dict[str, Any]]:
    """The structural transforms recorded on ``model``."""
    return list(getattr(model, _ATTR, []) or [])


def save_compressed(model: Any, path: str | Path, *, tokenizer: Any = None, info: dict[str, Any] | None = None) -> Path:
    """Save ``model`` in lmshrink's format under ``path``."""
    from safetensors.torch import save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    meta = {"format": FORMAT, "transforms": transforms_of(model), "info": info or {}}
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=1, default=str))
    save_model(model, str(path / WEIGHTS_FILE))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def _ensure_transforms_loaded() -> None:
    """Import the modules that register transforms (they may not have been imported in this process)."""
    import importlib

    for module in ("lmshrink.compress.svd", "lmshrink.compress.pivga", "lmshrink.adapters.sublayer"):
        try:
            importlib.import_module(module)
        except ImportError:
            continue


def load_compressed(path: str | Path, *, with_tokenizer: bool = False) -> Any:
    """Rebuild a model saved by :func:`save_compressed`; with ``with_tokenizer`` returns (model, tokenizer)."""
    import torch
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / CONFIG_FILE).exists():
        raise LmshrinkError(f"{path} holds no {CONFIG_FILE}: not a model saved in lmshrink's format.")
    meta = json.loads((path / CONFIG_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise LmshrinkError(f"{path / CONFIG_FILE} has format {meta.get('format')!r}, expected {FORMAT!r}.")
    _ensure_transforms_loaded()
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None) or torch.float32)
    for spec in meta["transforms"]:
        kind = spec["type"]
        if kind not in _TRANSFORMS:
            raise LmshrinkError(f"{path} uses transform {kind!r}, unknown to this lmshrink ({sorted(_TRANSFORMS)}).")
        _TRANSFORMS[kind](model, spec)
        record_transform(model, spec)
    load_model(model, str(path / WEIGHTS_FILE), strict=True)
    model.eval()
    if with_tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
        return model, tokenizer
    return model
