"""Export to GGUF, the file format llama.cpp runs: a Llama-family model whose removed units are whole layers.

The file holds the metadata llama.cpp reads (``llama.block_count`` and the other hyper-parameters, written from
the model's config, so a pruned model's new layer count is what it says), the tokenizer (copied field by field
from the source GGUF when there is one, else built from the Hugging Face tokenizer by :mod:`gguf.vocab`), and
the tensors under llama.cpp's names (``blk.{i}.attn_q.weight`` ..., mapped by :class:`gguf.TensorNameMap`).

Two conventions differ from transformers. (1) llama.cpp applies the rotary embedding to adjacent pairs of a
head's query/key dimensions, (x₀, x₁), (x₂, x₃), ..., while transformers rotates the two halves of the head
against each other, (x_j, x_{j + d/2}). The same rotation on reordered rows: row (j, half h) of a head in
transformers' layout goes to row 2j + h in llama.cpp's (:func:`interleave_rotary_rows`); transformers' GGUF loader
undoes it on reading. (2) Matrices are stored as (rows, cols) arrays whose GGUF shape lists cols first; the
:mod:`gguf` writer takes numpy arrays in torch's (out, in) order and writes that reversal itself.

Tensor types: ``type="auto"`` keeps each tensor in the source's type where :func:`gguf.quants.quantize` can
write it (F32, F16, BF16, Q8_0, and the legacy Q4_0/Q4_1/Q5_0/Q5_1), else ``fallback``; the source is the tensor
of the source GGUF (``source_gguf``) or, without one, the model's own dtype. ``type`` f32, f16, bf16 or q8_0
writes every matrix in that type. Vectors (norms, biases) stay F32 as llama.cpp expects, and a matrix whose rows
do not split into whole quantization blocks (32 values for Q8_0) is written in F16.

What GGUF's ``llama`` architecture cannot express is refused in one sentence before anything is written: a
decoder layer without its attention or MLP, low-rank or PivGa layers (any lmshrink transform), another
architecture, rope scaling.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf.vocab import BpeVocab, SpecialVocab
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..core.errors import LmshrinkError
from ..models import DEFAULT_MODEL, LMSHRINK_CONFIG, check_model_source, default_gguf_path
from .io import transforms_of

#: the ``--type`` choices: name → GGML tensor type name
GGUF_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}
#: architectures (config.model_type) written as GGUF ``llama``
LLAMA_MODEL_TYPES = ("llama",)
#: GGUF general.file_type of a file whose matrices all have one type (llama.cpp's LlamaFileType)
_FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0"}
_TORCH_TO_GGML = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16"}


# --- what GGUF can express ---------------------------------------------------------------------------------------


def _rope_type(config: Any) -> str | None:
    """The rope scaling named by ``config`` (None or "default" for plain rotary embeddings)."""
    for attr in ("rope_parameters", "rope_scaling"):
        params = getattr(config, attr, None)
        if isinstance(params, dict):
            kind = params.get("rope_type") or params.get("type")
            if kind not in (None, "default"):
                return str(kind)
    return None


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        return float(params["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


def check_gguf_exportable(config: Any, transforms: Sequence[dict[str, Any]] = ()) -> None:
    """Raise :class:`LmshrinkError` (one sentence) unless a model of ``config`` with the recorded lmshrink
    ``transforms`` can be written as a GGUF ``llama`` model."""
    if transforms:
        kinds = sorted({str(t.get("type")) for t in transforms})
        what = {"remove_sublayers": "decoder layers without their attention or MLP", "low_rank": "low-rank layers",
                "pivga": "PivGa layers"}
        names = ", ".join(what.get(k, k) for k in kinds)
        dense = " or write its dense form (svd --export-dense) and export that" if {"low_rank", "pivga"} & set(kinds) \
            else ""
        raise LmshrinkError(f"GGUF cannot express this model's structure ({names}); load it with "
                            f"lmshrink.load_compressed or transformers' trust_remote_code instead{dense}.")
    model_type = getattr(config, "model_type", None)
    if model_type not in LLAMA_MODEL_TYPES:
        raise LmshrinkError(f"GGUF export writes Llama-family models only; this model is {model_type!r}.")
    rope = _rope_type(config)
    if rope is not None:
        raise LmshrinkError(f"GGUF export does not write rope scaling {rope!r}; only plain rotary embeddings.")


def check_type(type_: str, fallback: str = "f16") -> None:
    """One sentence unless ``type_`` is "auto" or a :data:`GGUF_TYPES` name and ``fallback`` a name there."""
    if type_ != "auto" and type_ not in GGUF_TYPES:
        raise LmshrinkError(f"GGUF tensor type {type_!r} is not one of auto, {', '.join(GGUF_TYPES)}.")
    if fallback not in GGUF_TYPES:
        raise LmshrinkError(f"GGUF fallback type {fallback!r} is not one of {', '.join(GGUF_TYPES)}.")


# --- tensors -----------------------------------------------------------------------------------------------------


def interleave_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """The rows of a query/key projection (out = num_heads · d rows) reordered from transformers' rotary layout
    (the head's first d/2 rows pair with its last d/2) to llama.cpp's (rows 2j and 2j + 1 pair):
    row h·d/2 + j of a head (half h ∈ {0, 1}) goes to row 2j + h."""
    rows = weight.shape[0]
    d = rows // num_heads
    return weight.reshape(num_heads, 2, d // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _ggml(name: str) -> Any:
    return gguf.GGMLQuantizationType[name]


def _encode(data: np.ndarray, qtype: Any) -> tuple[np.ndarray, Any]:
    """``data`` (float32) in ``qtype``, as :mod:`gguf` writes it; F16 when the rows do not split into blocks."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if data.ndim < 2 or data.shape[-1] % block:
        qtype = _ggml("F16") if data.ndim >= 2 else _ggml("F32")
    if qtype == _ggml("F32"):
        return data.astype(np.float32), qtype
    if qtype == _ggml("F16"):
        return data.astype(np.float16), qtype
    return gguf.quants.quantize(data, qtype), qtype


@functools.lru_cache(maxsize=None)
def _writable(qtype: Any) -> bool:
    """Whether :func:`gguf.quants.quantize` writes ``qtype``."""
    try:
        gguf.quants.quantize(np.zeros((1, gguf.GGML_QUANT_SIZES[qtype][0]), np.float32), qtype)
    except (NotImplementedError, gguf.quants.QuantError, KeyError):
        return False
    return True


class _SourceTypes:
    """The GGML type each tensor had in the source GGUF: by name through ``layer_map`` (new block index → source
    block index), else the type most blocks of the source give that tensor."""

    def __init__(self, reader: Any | None, layer_map: Sequence[int] | None) -> None:
        self.by_name: dict[str, Any] = {}
        self.by_suffix: dict[str, Any] = {}
        self.layer_map = list(layer_map) if layer_map is not None else None
        if reader is None:
            return
        counts: dict[str, Counter] = {}
        for t in reader.tensors:
            self.by_name[t.name] = t.tensor_type
            if t.name.startswith("blk."):
                suffix = t.name.split(".", 2)[2]
                counts.setdefault(suffix, Counter())[t.tensor_type] += 1
        self.by_suffix = {s: c.most_common(1)[0][0] for s, c in counts.items()}

    def get(self, name: str) -> Any | None:
        if not name.startswith("blk."):
            return self.by_name.get(name)
        _, index, suffix = name.split(".", 2)
        if self.layer_map is not None and int(index) < len(self.layer_map):
            found = self.by_name.get(f"blk.{self.layer_map[int(index)]}.{suffix}")
            if found is not None:
                return found
        return self.by_suffix.get(suffix)


# --- metadata ----------------------------------------------------------------------------------------------------


def _write_hparams(writer: Any, config: Any, name: str) -> None:
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    writer.add_name(name)
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    if head_dim * heads != int(config.hidden_size):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _copy_tokenizer_fields(writer: Any, reader: Any) -> None:
    """Every ``tokenizer.*`` field of the source GGUF, with its GGUF value types."""
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)


def _pre_tokenizer(tokenizer_json: Path) -> str | None:
    """llama.cpp's name for the pre-tokenizer of ``tokenizer_json`` where it is one llama.cpp knows by shape: GPT-2's
    byte-level split (a lone ``ByteLevel`` with its regex, no prefix space, no normalizer) is "gpt-2"; None else."""
    try:
        spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pre = spec.get("pre_tokenizer") or {}
    plain = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    if spec.get("normalizer") is None and all(pre.get(k) == v for k, v in plain.items()):
        return "gpt-2"
    return None


def _write_hf_tokenizer(writer: Any, tokenizer: Any) -> None:
    """Tokens, types, merges, special ids and chat template of a byte-level BPE tokenizer (GGUF model "gpt2")."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        try:
            vocab = BpeVocab(Path(folder))
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise LmshrinkError(f"GGUF export writes byte-level BPE tokenizers only ({exc}); give the source "
                                "GGUF file to copy its tokenizer from.") from None
        tokens, types = [], []
        for text, _score, kind in vocab.all_tokens():
            tokens.append(text)
            types.append(int(kind))
        writer.add_tokenizer_model("gpt2")
        pre = _pre_tokenizer(Path(folder) / "tokenizer.json")
        if pre is not None:
            writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        SpecialVocab(folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


# --- the export --------------------------------------------------------------------------------------------------


def export_gguf(model: Any, path: str | Path, tokenizer: Any = None, *, type: str = "auto", fallback: str = "f16",
                source_gguf: str | Path | None = None, layer_map: Sequence[int] | None = None,
                source_dtype: str | None = None, name: str | None = None, progress: bool = False) -> Path:
    """Write ``model`` (a transformers Llama model, layers possibly removed) as the GGUF file ``path``.

    The tokenizer comes from ``source_gguf`` when given (its ``tokenizer.*`` fields copied), else from
    ``tokenizer`` (a byte-level BPE one); one of them is needed. ``type`` and ``fallback`` choose the tensor types
    (module docstring); ``layer_map[i]`` is the source block index of block i, to look up its tensors' types in
    ``source_gguf``; without a source GGUF, ``source_dtype`` ("float32", "bfloat16", "float16"; None: the model's
    own) is the source type of every matrix. The file is written next to ``path`` and renamed into place: an
    error leaves nothing.
    """
    check_type(type, fallback)
    check_gguf_exportable(model.config, transforms_of(model))
    reader = gguf.GGUFReader(str(source_gguf)) if source_gguf is not None else None
    if reader is None and tokenizer is None:
        raise LmshrinkError("GGUF export needs the tokenizer: a tokenizer or the source GGUF file.")
    config = model.config
    path = Path(path)
    sources = _SourceTypes(reader, layer_map)
    own_dtype = f"torch.{source_dtype}" if source_dtype else str(next(model.parameters()).dtype)
    own_type = _ggml(_TORCH_TO_GGML.get(own_dtype, "F32"))
    forced = _ggml(GGUF_TYPES[type]) if type != "auto" else None
    fallback_type = _ggml(GGUF_TYPES[fallback])
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(config.num_hidden_layers))

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the permissions of a file opened for writing, not mkstemp's 0600
    try:
        # encoded tensors spill to a temporary file past 256 MiB rather than all staying in memory
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], use_temp_file=True)
        _write_hparams(writer, config, name or getattr(config, "_name_or_path", "") or "lmshrink model")
        if reader is not None:
            _copy_tokenizer_fields(writer, reader)
        else:
            _write_hf_tokenizer(writer, tokenizer)
        state = model.state_dict()
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # llama.cpp reuses token_embd.weight when output.weight is absent
        matrix_types = set()
        for hf_name, tensor in tqdm(list(state.items()), desc="GGUF tensors", disable=not progress):
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise LmshrinkError(f"GGUF export has no llama.cpp name for tensor {hf_name}.")
            data = tensor.detach().to("cpu", torch.float32).numpy()
            if gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
                data = interleave_rotary_rows(data, heads)
            elif gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
                data = interleave_rotary_rows(data, kv_heads)
            if data.ndim < 2:
                qtype = _ggml("F32")
            elif forced is not None:
                qtype = forced
            else:
                qtype = sources.get(gguf_name) if reader is not None else own_type
                if qtype is None or not _writable(qtype):
                    qtype = fallback_type
            encoded, qtype = _encode(data, qtype)
            if data.ndim >= 2:
                matrix_types.add(qtype.name)
            writer.add_tensor(gguf_name, encoded, raw_dtype=qtype)
        if len(matrix_types) == 1 and next(iter(matrix_types)) in _FILE_TYPES:
            writer.add_file_type(int(gguf.LlamaFileType[_FILE_TYPES[next(iter(matrix_types))]]))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_model_dir(model_dir: str | Path) -> Any:
    """The config of the model directory ``model_dir`` after checking that GGUF can express it (reads
    ``config.json`` and ``lmshrink_config.json`` only: nothing is loaded)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LmshrinkError(f"{model_dir} is not a model directory.")
    check_model_source(str(model_dir))
    if (model_dir / LMSHRINK_CONFIG).exists():
        try:
            transforms = json.loads((model_dir / LMSHRINK_CONFIG).read_text()).get("transforms") or []
        except (ValueError, AttributeError):
            raise LmshrinkError(f"{model_dir / LMSHRINK_CONFIG} is not a valid lmshrink model record.") from None
        check_gguf_exportable(None, transforms or [{"type": "lmshrink format"}])
    config = AutoConfig.from_pretrained(model_dir)
    check_gguf_exportable(config)
    return config


def source_gguf_of(model: str | None) -> Path | None:
    """The GGUF file a ``--model`` name loads (the embedded default's, or a ``.gguf`` path), None for others."""
    if model is None or model == DEFAULT_MODEL:
        return default_gguf_path()
    return Path(model) if str(model).endswith(".gguf") else None


def check_gguf_source(model: str | None, granularity: str = "layer") -> None:
    """Refuse, before a prune run starts, a ``--save-format gguf`` that cannot succeed: sub-layer granularity, a
    GGUF source or model directory of an architecture other than Llama's (a Hub id is checked after loading)."""
    if granularity != "layer":
        raise LmshrinkError("--save-format gguf needs --granularity layer: GGUF cannot express a decoder layer "
                            "without its attention or MLP.")
    source = source_gguf_of(model)
    if source is not None:
        if not source.is_file():
            raise LmshrinkError(f"No GGUF file at {source}.")
        field = gguf.GGUFReader(str(source)).fields.get("general.architecture")
        arch = field.contents() if field is not None else None
        if arch not in LLAMA_MODEL_TYPES:
            raise LmshrinkError(f"GGUF export writes Llama-family models only; {source.name} is {arch!r}.")
    elif model is not None and Path(model).is_dir():
        check_model_dir(model)


def export_gguf_dir(model_dir: str | Path, path: str | Path, *, type: str = "auto", fallback: str = "f16",
                    source_gguf: str | Path | None = None, layer_map: Sequence[int] | None = None,
                    progress: bool = False) -> Path:
    """Write the transformers model directory ``model_dir`` as the GGUF file ``path`` (checked before loading)."""
    check_type(type, fallback)
    check_model_dir(model_dir)
    if source_gguf is not None and not Path(source_gguf).is_file():
        raise LmshrinkError(f"No GGUF file at {source_gguf}.")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    if model.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        model = model.float()
    tokenizer = AutoTokenizer.from_pretrained(model_dir) if source_gguf is None else None
    return export_gguf(model, path, tokenizer, type=type, fallback=fallback, source_gguf=source_gguf,
                       layer_map=layer_map, name=Path(model_dir).name, progress=progress)


__all__ = ["GGUF_TYPES", "check_gguf_exportable", "check_gguf_source", "check_model_dir", "check_type", "export_gguf",
           "export_gguf_dir", "interleave_rotary_rows", "source_gguf_of"]
