"""Where a model runs and in which precision: ``--device``, ``--dtype``, ``--device-map`` and ``--save-dtype``.

Every setting is checked here before a model loads (one sentence each). Measurements accumulate in float64
whatever the model's dtype (gate gradients and losses in :mod:`lmshrink.objectives.fisher` and
:mod:`lmshrink.evaluate.loss`, perplexity in :mod:`lmshrink.evaluate.perplexity`, Gram matrices in
:mod:`lmshrink.compress.gram`); this module only decides the placement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.errors import LmshrinkError, did_you_mean

# torch (and what imports it) is imported inside the functions that need it: the settings are checked here, from
# the command line too, before anything heavy loads

#: ``--dtype`` and ``--save-dtype`` values; "auto" is resolved by :func:`resolve_placement` / :func:`save_dtype_of`
DTYPES = ("auto", "bfloat16", "float16", "float32")
#: ``--device-map`` values accelerate understands
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_CUDA = re.compile(r"^cuda(:(\d+))?$")


@dataclass(frozen=True)
class Placement:
    """A checked placement: ``device`` ("cpu", "cuda", "cuda:1"), ``dtype`` ("bfloat16", "float16", "float32") and
    ``device_map`` (None, or an accelerate device map such as "auto" that spreads the model over the GPUs)."""

    device: str = "cpu"
    dtype: str = "float32"
    device_map: str | None = None

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, "device_map": self.device_map}


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str | None) -> str:
    """``--device``: "auto" (or None) is "cuda" when torch has a CUDA device, else "cpu"; "cpu", "cuda" and
    "cuda:N" are checked against this machine."""
    name = "auto" if device is None else str(device).strip().lower()
    count = _cuda_count()
    if name == "auto":
        return "cuda" if count else "cpu"
    if name == "cpu":
        return "cpu"
    match = _CUDA.match(name)
    if match is None:
        choices = ("auto", "cpu", "cuda")
        raise LmshrinkError(f"Unknown --device {device!r}.{did_you_mean(name, choices)} Devices: auto, cpu, cuda, "
                            "cuda:N.")
    if not count:
        raise LmshrinkError(f"CUDA was asked for (--device {device}) but this torch has no CUDA device; use --device "
                            "cpu or auto.")
    index = match.group(2)
    if index is not None and int(index) >= count:
        raise LmshrinkError(f"--device {device} names GPU {index}, but this machine has {count} CUDA device(s) "
                            f"(cuda:0 to cuda:{count - 1}).")
    return name


def check_dtype_name(dtype: str | None, flag: str = "--dtype") -> str:
    """``dtype`` as one of :data:`DTYPES` (None is "auto"); an unknown name is refused with the closest one."""
    name = "auto" if dtype is None else str(dtype).strip().lower()
    if name not in DTYPES:
        raise LmshrinkError(f"Unknown {flag} {dtype!r}.{did_you_mean(name, DTYPES)} Dtypes: {', '.join(DTYPES)}.")
    return name


def _matmul_fails(device: str, dtype: str) -> str | None:
    """Why a small matrix product in ``dtype`` fails on ``device`` (None when it works)."""
    import torch

    try:
        a = torch.ones(4, 4, dtype=getattr(torch, dtype), device=device)
        torch.nn.functional.linear(a, a)
    except (RuntimeError, TypeError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def resolve_placement(device: str | None = "auto", dtype: str | None = "auto",
                      device_map: str | None = None) -> Placement:
    """Check ``--device``, ``--dtype`` and ``--device-map`` and resolve "auto": the GPU when there is one, and
    bfloat16 on a GPU, float32 on the CPU. Raises :class:`LmshrinkError` in one sentence for each bad setting."""
    name = check_dtype_name(dtype)
    if device_map is not None:
        if device_map not in DEVICE_MAPS:
            raise LmshrinkError(f"Unknown --device-map {device_map!r}.{did_you_mean(str(device_map), DEVICE_MAPS)} "
                                f"Device maps: {', '.join(DEVICE_MAPS)}.")
        if not _cuda_count():
            raise LmshrinkError(f"--device-map {device_map} spreads the model over the GPUs, but this torch has no "
                                "CUDA device, which leaves nothing on any GPU; drop --device-map.")
        resolved = resolve_device(device)
        if resolved == "cpu":
            raise LmshrinkError(f"--device-map {device_map} places the model on the GPUs; it cannot be combined with "
                                "--device cpu.")
        device = "cuda"
    else:
        device = resolve_device(device)
    if name == "auto":
        name = "float32" if device == "cpu" else "bfloat16"
    if device == "cpu" and name != "float32":
        reason = _matmul_fails("cpu", name)
        if reason is not None:
            raise LmshrinkError(f"This torch cannot multiply {name} matrices on the CPU ({reason}); use --dtype "
                                "bfloat16 or float32.")
    return Placement(device, name, device_map)


def check_save_dtype(save_dtype: str | None) -> str:
    """``--save-dtype`` checked (one of :data:`DTYPES`; "auto" is resolved once the source is known)."""
    return check_dtype_name(save_dtype, "--save-dtype")


def source_dtype(source: str | None) -> str | None:
    """The precision the model ``source`` was stored in: bfloat16 for a GGUF file (the embedded default included:
    its quantized weights are sub-float32), the ``dtype`` / ``torch_dtype`` of a model directory's (or a Hub
    id's cached) config.json; None when unknown."""
    from .models import DEFAULT_MODEL

    if source is None:
        return None
    if source == DEFAULT_MODEL or str(source).endswith(".gguf"):
        return "bfloat16"
    config = Path(source).expanduser() / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(source), "config.json")
        except Exception:  # not a Hub id, or no hub client: the source precision is unknown
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("dtype") or data.get("torch_dtype") if isinstance(data, dict) else None
    value = str(value).removeprefix("torch.") if value else None
    return value if value in DTYPES[1:] else None


def save_dtype_of(save_dtype: str, source: str | None, model: Any) -> str:
    """``--save-dtype`` resolved: "auto" is the source's precision (:func:`source_dtype`), else the model's."""
    if save_dtype != "auto":
        return save_dtype
    return source_dtype(source) or str(model_dtype(model)).removeprefix("torch.")


def placement_settings(model: Any, device_map: str | None, save_dtype: str | None) -> dict[str, Any]:
    """What report.json records under ``settings``: the device and dtype the model ran in, the device map and the
    precision it was saved in (None when nothing was saved)."""
    return {"device": str(model_device(model)), "dtype": str(model_dtype(model)).removeprefix("torch."),
            "device_map": device_map, "save_dtype": save_dtype}


def model_dtype(model: Any) -> Any:
    """The dtype of the model's floating-point parameters (its input embeddings')."""
    return model.get_input_embeddings().weight.dtype


def model_device(model: Any) -> Any:
    """The device inputs go to: where the input embeddings live (the first GPU of a model spread by a device map)."""
    return model.get_input_embeddings().weight.device


def place_model(model: Any, placement: Placement) -> Any:
    """``model`` cast to the placement's dtype and moved to its device (a model spread by a device map is cast
    where it lies)."""
    if getattr(model, "hf_device_map", None) is not None:
        return model.to(placement.torch_dtype)
    return model.to(device=placement.device, dtype=placement.torch_dtype)


def cast_saved(path: str | Path, dtype: str) -> None:
    """Rewrite the saved model at ``path`` with every floating-point tensor in ``dtype``: each safetensors file
    in turn (one file in memory at a time) and the dtype recorded in config.json (and a shard index's size).
    Nothing is rewritten when the files already hold ``dtype``."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = Path(path)
    target = getattr(torch, dtype)
    total = 0
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            metadata = f.metadata()
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        changed = any(t.is_floating_point() and t.dtype != target for t in tensors.values())
        tensors = {name: t.to(target) if t.is_floating_point() else t for name, t in tensors.items()}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        if changed:
            save_file(tensors, str(file), metadata=metadata or {"format": "pt"})
        del tensors
    index = path / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        index.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    config = path / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        keys = [k for k in ("dtype", "torch_dtype") if k in data] or ["torch_dtype"]
        for key in keys:
            data[key] = dtype
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


@contextmanager
def memory_hint(what: str, lower: str) -> Iterator[None]:
    """Re-raise running out of memory while ``what`` runs as one sentence naming the settings to lower."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not (isinstance(exc, MemoryError) or _is_oom(exc)):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LmshrinkError(f"Ran out of memory while {what} ({first[:160]}); lower {lower}.") from None


__all__ = ["DTYPES", "DEVICE_MAPS", "Placement", "cast_saved", "check_dtype_name", "check_save_dtype",
           "memory_hint", "model_device", "model_dtype", "place_model", "placement_settings", "resolve_device", "resolve_placement",
           "save_dtype_of", "source_dtype"]
