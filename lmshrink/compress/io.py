"""lmshrink's own model format, for models that plain transformers cannot express (low-rank or gauge-fixed
factors, a decoder layer without its attention, ...).

A directory holds the (rewritten) transformers ``config.json``, ``lmshrink_config.json`` listing the structural
transforms applied to the stock architecture, in order, ``model.safetensors`` with the final weights, and the
tokenizer. :func:`load_compressed` builds the stock model from the config, replays the transforms to get the same
module shapes, then loads the weights. Where it can, :func:`save_compressed` also writes ``modeling_lmshrink.py``
and an ``auto_map`` in ``config.json`` (:mod:`lmshrink.compress.remote`), so that transformers alone loads the
directory with ``trust_remote_code=True``; :func:`load_compressed` ignores them.

A transform is a dict with a ``type`` key. Code that changes a model's structure calls :func:`record_transform`
(or :func:`set_transform` for a record it keeps up to date) and makes its :class:`TransformType` known: modules of
:mod:`lmshrink.compress` register theirs with :func:`register_transform` when imported; an architecture adapter
lists its own in :meth:`~lmshrink.core.ArchitectureAdapter.transforms`, which :func:`transform_type` asks through
the plugin registry when a saved model names a type not registered yet.

``lmshrink_config.json`` is untrusted input: before anything is built, every transform is checked against the
model its ``config.json`` describes, on a skeleton of that model with no memory behind its weights (the ``meta``
device): module paths must name existing child modules (:func:`resolve_module`), indices and ranks must be in
range (each type's ``validate``), and the weight file must hold tensors of the shapes the transforms produce.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..core.errors import LmshrinkError
from ..plugins import registry
from .remote import drop_remote_code_keys, write_remote_code

FORMAT = "lmshrink.compressed/1"
CONFIG_FILE = "lmshrink_config.json"
WEIGHTS_FILE = "model.safetensors"
#: the attribute of a model that holds its recorded transforms
TRANSFORMS_ATTR = "_lmshrink_transforms"
_ATTR = TRANSFORMS_ATTR  # the older private name; use transforms_of / set_transform / clear_transforms

Replay = Callable[[Any, dict[str, Any]], None]
Validate = Callable[[Any, dict[str, Any]], None]
#: lmshrink.compress modules that register transform types when imported
_COMPRESS_MODULES = ("lmshrink.compress.svd", "lmshrink.compress.pivga")
#: one part of a module path: a child's name (no leading underscore, so no private or dunder names) or an index
_PATH_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*|[0-9]+")


@dataclass(frozen=True)
class TransformType:
    """How to replay and check one type of structural transform.

    ``replay(model, spec)`` changes a freshly built stock model the way the transform changed the original
    (shapes only: the weights are loaded afterwards). ``validate(model, spec)`` raises
    :class:`~lmshrink.core.LmshrinkError` with one sentence when ``spec``, read from an untrusted file, does not
    fit ``model`` (the stock model, with the earlier transforms replayed); it must check every key ``replay``
    reads, resolving module paths with :func:`resolve_module` only.
    """

    name: str
    replay: Replay
    validate: Validate | None = None


_TRANSFORMS: dict[str, TransformType] = {}


def register_transform(kind: str, *, validate: Validate | None = None) -> Callable[[Replay], Replay]:
    """Decorator: ``fn(model, spec)`` replays a transform of type ``kind`` on a freshly built stock model;
    ``validate(model, spec)`` checks a spec read from a file (see :class:`TransformType`)."""

    def deco(fn: Replay) -> Replay:
        _TRANSFORMS[kind] = TransformType(kind, fn, validate or _DEFAULT_VALIDATORS.get(kind))
        return fn

    return deco


def transform_type(kind: str) -> TransformType:
    """The :class:`TransformType` called ``kind``: registered by its module, or declared by an installed
    architecture adapter's ``transforms()``; one sentence naming the known types if there is none."""
    if kind not in _TRANSFORMS:
        _discover()
    if kind not in _TRANSFORMS:
        raise LmshrinkError(f"Transform {kind!r} is unknown to this lmshrink (known: {sorted(_TRANSFORMS)}).")
    return _TRANSFORMS[kind]


def _discover() -> None:
    """Register the transform types of lmshrink.compress and of every installed architecture adapter."""
    for module in _COMPRESS_MODULES:
        importlib.import_module(module)

    for entry in registry("adapter"):
        declare = getattr(entry.obj(), "transforms", None)
        for name, declared in (declare() if declare else {}).items():
            _TRANSFORMS.setdefault(name, declared)


# --- the transforms recorded on a model --------------------------------------------------------------------------


def record_transform(model: Any, spec: dict[str, Any]) -> None:
    """Note on ``model`` that the structural transform ``spec`` was applied (saved by :func:`save_compressed`)."""
    if "type" not in spec:
        raise LmshrinkError("A transform needs a 'type'.")
    transforms = getattr(model, TRANSFORMS_ATTR, None)
    if transforms is None:
        transforms = []
        object.__setattr__(model, TRANSFORMS_ATTR, transforms)
    transforms.append(dict(spec))


def set_transform(model: Any, kind: str, spec: dict[str, Any] | None) -> None:
    """Make the record of type ``kind`` on ``model`` equal ``spec``, in place among the other transforms
    (appended when there was none); ``spec=None`` drops it. For a transform that describes the model's current
    structure and is refreshed after every change."""
    transforms = getattr(model, TRANSFORMS_ATTR, None) or []
    position = next((k for k, t in enumerate(transforms) if t.get("type") == kind), None)
    rest = [t for t in transforms if t.get("type") != kind]
    if spec is not None:
        if spec.get("type") != kind:
            raise LmshrinkError(f"A {kind!r} record must have type {kind!r}.")
        rest.insert(len(rest) if position is None else position, dict(spec))
    if rest or hasattr(model, TRANSFORMS_ATTR):
        object.__setattr__(model, TRANSFORMS_ATTR, rest)


def transforms_of(model: Any) -> list[dict[str, Any]]:
    """The structural transforms recorded on ``model``."""
    return list(getattr(model, TRANSFORMS_ATTR, []) or [])


def clear_transforms(model: Any) -> None:
    """Forget every transform recorded on ``model`` (e.g. on a copy whose layers were made dense again)."""
    if hasattr(model, TRANSFORMS_ATTR):
        object.__delattr__(model, TRANSFORMS_ATTR)


# --- checking specs read from a file -----------------------------------------------------------------------------


def resolve_module(model: Any, path: Any) -> Any:
    """The child module of ``model`` at the dotted ``path``, following child modules only (no attributes, no
    private or dunder names); one sentence when ``path`` names none."""
    if not isinstance(path, str) or not all(_PATH_PART.fullmatch(part) for part in path.split(".")):
        raise LmshrinkError(f"{path!r} is not a module path (dot-separated names and indices).")
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise LmshrinkError(f"{path!r} is not a module of the {type(model).__name__} its config builds.") from None


def check_keys(spec: dict[str, Any], required: Iterable[str], optional: Iterable[str] = ()) -> None:
    """One sentence when ``spec`` lacks a ``required`` key or has one that is neither required nor optional."""
    required = {"type", *required}
    missing = sorted(required - set(spec))
    if missing:
        raise LmshrinkError(f"The transform has no {missing[0]!r}.")
    unknown = sorted(set(spec) - required - set(optional))
    if unknown:
        raise LmshrinkError(f"The transform has an unknown key {unknown[0]!r}.")


def check_int(value: Any, what: str, low: int, high: int) -> int:
    """``value`` as an int in ``low..high`` (JSON integers only: no booleans, floats or strings)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LmshrinkError(f"{what} is {value!r}, not an integer.")
    if not low <= value <= high:
        raise LmshrinkError(f"{what} is {value}, outside {low}..{high}.")
    return value


def validate_layer_ranks(model: Any, spec: dict[str, Any]) -> None:
    """Validator of the factored-layer transforms (``{"type", "layers": {module path: rank}}``, the shape of
    ``low_rank`` and ``pivga``): every path names an ``nn.Linear`` of ``model`` and every rank is in
    0..min(out, in) of that matrix."""
    check_keys(spec, ["layers"])
    layers = spec["layers"]
    if not isinstance(layers, dict):
        raise LmshrinkError(f"'layers' is a {type(layers).__name__}, not an object of module paths and ranks.")
    for path, rank in layers.items():
        module = resolve_module(model, path)
        if not isinstance(module, nn.Linear):
            raise LmshrinkError(f"{path} ({type(module).__name__}) is not a linear layer.")
        check_int(rank, f"The rank of {path}", 0, min(module.in_features, module.out_features))


#: validators of types registered without one (lmshrink.compress.svd, .pivga)
_DEFAULT_VALIDATORS: dict[str, Validate] = {"low_rank": validate_layer_ranks, "pivga": validate_layer_ranks}


# --- saving and loading ------------------------------------------------------------------------------------------


def save_compressed(model: Any, path: str | Path, *, tokenizer: Any = None, info: dict[str, Any] | None = None) -> Path:
    """Save ``model`` in lmshrink's format under ``path``, with the modeling code that lets plain transformers load
    it (``trust_remote_code=True``) where :mod:`lmshrink.compress.remote` can express it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    meta = {"format": FORMAT, "transforms": transforms_of(model), "info": info or {}}
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=1, default=str))
    write_remote_code(path, model, meta["transforms"])
    save_model(model, str(path / WEIGHTS_FILE))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def read_transforms(path: str | Path) -> list[dict[str, Any]]:
    """The transforms listed in ``path/lmshrink_config.json``, after checking the file's format and that each
    transform is an object of a known type; one sentence naming the file for anything else."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise LmshrinkError(f"{path} holds no {CONFIG_FILE}: not a model saved in lmshrink's format.")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LmshrinkError(f"{file} is not valid JSON ({exc}).") from None
    if not isinstance(meta, dict):
        raise LmshrinkError(f"{file} holds a JSON {type(meta).__name__}, not an object.")
    if meta.get("format") != FORMAT:
        raise LmshrinkError(f"{file} has format {meta.get('format')!r}, expected {FORMAT!r}.")
    transforms = meta.get("transforms")
    if not isinstance(transforms, list):
        raise LmshrinkError(f"{file} has no list of 'transforms'.")
    for k, spec in enumerate(transforms):
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise LmshrinkError(f"{file}: transform {k} is not an object with a string 'type'.")
        try:
            transform_type(spec["type"])
        except LmshrinkError as exc:
            raise LmshrinkError(f"{file}: {exc}") from None
    return transforms


def _stock_model(config: Any, meta: bool = False) -> Any:
    dtype = getattr(config, "dtype", None) or torch.float32
    if meta:  # shapes without memory: for checking untrusted specs before anything real is built
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=dtype)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def validate_transforms(path: str | Path, config: Any, transforms: list[dict[str, Any]]) -> None:
    """Check ``transforms`` (from ``path/lmshrink_config.json``) and the weight file against the model ``config``
    builds, on a skeleton without memory: each spec is validated, then replayed, in order; finally every tensor
    of ``model.safetensors`` must be one of the skeleton's, with its shape."""
    path = Path(path)
    skeleton = _stock_model(config, meta=True)
    for k, spec in enumerate(transforms):
        kind = transform_type(spec["type"])
        where = f"{path / CONFIG_FILE}, transform {k} ({kind.name})"
        try:
            if kind.validate is not None:
                kind.validate(skeleton, spec)
            with torch.device("meta"):
                kind.replay(skeleton, spec)
        except LmshrinkError as exc:
            raise LmshrinkError(f"{where}: {exc}") from None
        except Exception as exc:  # a spec the validator let through but the model cannot take
            raise LmshrinkError(f"{where} does not apply to the model its config builds ({exc}).") from None
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    weights = path / WEIGHTS_FILE
    try:
        with safe_open(str(weights), "pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:
        raise LmshrinkError(f"{weights} cannot be read as safetensors ({exc}).") from None
    for name, shape in sorted(shapes.items()):
        if name not in expected:
            raise LmshrinkError(f"{weights} holds {name}, which the model described by its configs does not have.")
        if shape != expected[name]:
            raise LmshrinkError(
                f"{weights} holds {name} of shape {list(shape)}, but the model described by its configs expects "
                f"{list(expected[name])}."
            )


def load_compressed(path: str | Path, *, with_tokenizer: bool = False) -> Any:
    """Rebuild a model saved by :func:`save_compressed`; with ``with_tokenizer`` returns (model, tokenizer).

    Everything read from ``path`` is checked first (:func:`read_transforms`, :func:`validate_transforms`).
    """
    path = Path(path)
    transforms = read_transforms(path)
    if not (path / "config.json").is_file():
        raise LmshrinkError(f"{path} holds no config.json.")
    config = AutoConfig.from_pretrained(path)
    drop_remote_code_keys(config)  # the stock model is built here; lmshrink_config.json is the record replayed
    validate_transforms(path, config, transforms)
    model = _stock_model(config)
    for spec in transforms:
        transform_type(spec["type"]).replay(model, spec)
        record_transform(model, spec)
    load_model(model, str(path / WEIGHTS_FILE), strict=True)
    model.eval()
    if with_tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
        return model, tokenizer
    return model
