"""Modeling code written into a directory saved in lmshrink's format, so that plain transformers loads it:
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``, with no lmshrink installed.

:func:`write_remote_code` copies ``modeling_lmshrink.py`` (self-contained: torch and transformers only) into the
directory, with its base class set to the saved model's transformers class, and adds to ``config.json`` an
``auto_map`` naming it and ``lmshrink_transforms``, the transforms it replays (the list of
``lmshrink_config.json``, which stays the record :func:`lmshrink.compress.io.load_compressed` reads; that loader
ignores both keys). The modeling code knows the transforms of lmshrink itself (``remove_sublayers``, ``low_rank``,
``pivga``); a model with another one (a plugin's) or of a class transformers does not ship gets no modeling code,
and is loaded by lmshrink only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import transformers

#: the file written into the model directory
MODELING_FILE = "modeling_lmshrink.py"
#: the class it defines
CLASS_NAME = "LmshrinkForCausalLM"
#: the config.json keys written (and dropped again by load_compressed)
CONFIG_KEYS = ("auto_map", "lmshrink_transforms")
#: the transforms the modeling code replays
SUPPORTED_TRANSFORMS = frozenset({"remove_sublayers", "low_rank", "pivga"})
_TEMPLATE = Path(__file__).with_name(MODELING_FILE)
_BASE_LINE = 'BASE_CLASS = "LlamaForCausalLM"'


def transformers_base_class(model: Any) -> str | None:
    """The name of the first class in ``model``'s hierarchy that transformers itself defines and exports."""
    for klass in type(model).__mro__:
        if klass.__module__.startswith("transformers.") and getattr(transformers, klass.__name__, None) is klass:
            return klass.__name__
    return None


def remote_code_supports(transforms: Sequence[dict[str, Any]]) -> bool:
    """Whether the modeling code replays every one of ``transforms``."""
    return all(t.get("type") in SUPPORTED_TRANSFORMS for t in transforms)


def write_remote_code(path: str | Path, model: Any, transforms: Sequence[dict[str, Any]]) -> bool:
    """Write ``modeling_lmshrink.py`` into the saved model directory ``path`` and point its ``config.json`` at it
    (``config.json`` must be there already). Returns False, writing nothing, when the modeling code cannot
    express the model (see the module docstring)."""
    path = Path(path)
    base = transformers_base_class(model)
    if base is None or not transforms or not remote_code_supports(transforms):
        return False
    template = _TEMPLATE.read_text(encoding="utf-8")
    if _BASE_LINE not in template:  # pragma: no cover - the template and this writer disagree
        raise RuntimeError(f"{_TEMPLATE} has no line {_BASE_LINE!r}.")
    (path / MODELING_FILE).write_text(template.replace(_BASE_LINE, f'BASE_CLASS = "{base}"'), encoding="utf-8")
    config_file = path / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForCausalLM": f"{Path(MODELING_FILE).stem}.{CLASS_NAME}"}
    config["lmshrink_transforms"] = [dict(t) for t in transforms]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return True


def drop_remote_code_keys(config: Any) -> None:
    """Remove the keys :func:`write_remote_code` adds from a loaded transformers ``config``, so the stock model is
    built from it and a later ``save_pretrained`` does not point at modeling code it does not write."""
    for key in CONFIG_KEYS:
        if hasattr(config, key):
            delattr(config, key)


__all__ = ["CLASS_NAME", "MODELING_FILE", "drop_remote_code_keys", "remote_code_supports",
           "transformers_base_class", "write_remote_code"]
