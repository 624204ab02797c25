"""The compressed variants of the inference benchmark, built with lmshrink's own pipelines and cached on disk.

Each variant is one ``lmshrink.prune`` or ``lmshrink.svd_compress`` run with few calibration samples and no
evaluation, written under ``OUT/variants/<name>/`` (the pipeline's ``model/`` folder is what is timed). A variant
whose folder holds a ``built.json`` with the same settings is loaded, not rebuilt, so a rerun only times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Variant:
    """One compressed model: the pipeline (``prune`` or ``svd``) and its settings."""

    name: str
    pipeline: str
    settings: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        s = self.settings
        if self.pipeline == "prune":
            what = "sub-layers" if s.get("granularity") == "sublayer" else "blocks"
            heal = f", healed ({s['heal']})" if s.get("heal") else ""
            return f"remove {s['remove']} {what}{heal}"
        if self.pipeline == "timed":
            return f"{s['base']}, matrices above the time break-even dense"
        return f"SVD ratio {s['ratio']}" + (" + PivGa" if s.get("pivga") else " (plain low rank)")


def default_variants(layers: int, quick: bool = False) -> list[Variant]:
    """Block removal (M = 6, a fifth of the layers when quick), sub-layer removal of a fifth of the 2·layers units,
    SVD at 0.8 and 0.6, plain low rank and PivGa."""
    blocks = max(1, layers // 5) if quick else 6
    units = max(2, round(2 * layers / 5))
    return [
        Variant("blocks-6" if not quick else f"blocks-{blocks}", "prune",
                {"remove": blocks, "heal": "linear"}),
        Variant(f"sublayers-{units}", "prune", {"remove": units, "granularity": "sublayer"}),
        Variant("svd-0.8", "svd", {"ratio": 0.8, "pivga": False}),
        Variant("svd-0.8-pivga", "svd", {"ratio": 0.8, "pivga": True}),
        Variant("svd-0.6", "svd", {"ratio": 0.6, "pivga": False}),
        Variant("svd-0.6-pivga", "svd", {"ratio": 0.6, "pivga": True}),
        Variant("svd-0.6-pivga-timed", "timed", {"base": "svd-0.6-pivga"}),
    ]


def build_settings(variant: Variant, samples: int, seq_len: int, data: Any, solver: str,
                   quick: bool = False) -> dict[str, Any]:
    """The keywords of the pipeline call that builds ``variant`` (cheap: few samples, no evaluation, no reload;
    ``quick``: the exact solver and one candidate for the removals)."""
    if variant.pipeline == "timed":
        import torch

        return {**variant.settings, "threads": torch.get_num_threads(), "dtype": "float32", "device": "cpu"}
    common = {"samples": samples, "seq_len": seq_len, "evaluate": False, "progress": False, "seed": 0,
              "device": "cpu", "dtype": "float32", "overwrite": True}
    if data is not None:
        common["data"] = data
    if variant.pipeline == "prune":
        removal = {"solver": "exact", "top_k": 1} if quick else {"solver": "anneal"}
        return {**common, "objective": "fisher", **removal, **variant.settings}
    return {**common, "solver": solver, "verify": False, **variant.settings}


def ensure_built(variant: Variant, root: Path, source: Any, settings: dict[str, Any], log: Any) -> Path:
    """The saved model folder of ``variant`` under ``root``, built (``source``: a model name/path, None for the
    embedded default) unless a build with the same settings is there."""
    folder = root / variant.name
    stamp = folder / "built.json"
    key = {"pipeline": variant.pipeline, "source": str(source), "settings": settings}
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key and (folder / "run" / "model").is_dir():
        log(f"{variant.name}: cached in {folder}")
        return folder / "run" / "model"
    import lmshrink

    log(f"{variant.name}: building ({variant.describe()})")
    run = folder / "run"
    folder.mkdir(parents=True, exist_ok=True)
    if variant.pipeline == "prune":
        lmshrink.prune(source, out=run, **settings)
    elif variant.pipeline == "timed":
        densify_slow_layers(root / settings["base"] / "run" / "model", run / "model", log)
    else:
        lmshrink.svd_compress(source, out=run, **settings)
    stamp.write_text(json.dumps({"key": key}, indent=1))
    return run / "model"


def densify_slow_layers(base: Path, target: Path, log: Any) -> list[str]:
    """The model at ``base`` with every factored layer whose rank is above the time break-even of its shape
    (:class:`~lmshrink.compress.break_even.TimeBreakEven`, on the CPU in float32 with this process's threads, one
    token per call) made a dense ``nn.Linear`` of the weight it applies, saved at ``target``; returns their names.

    For timing: ``apply_plan(break_even=...)`` keeps the *original* dense weight of such a matrix, which costs the
    same time as this product of its factors.
    """
    import torch

    from lmshrink.compress.break_even import TimeBreakEven
    from lmshrink.compress.io import load_compressed, save_compressed, set_transform, transforms_of
    from lmshrink.compress.low_rank import replace_module

    model, tokenizer = load_compressed(base, with_tokenizer=True)
    speed = TimeBreakEven("cpu", torch.float32, tokens=1)
    dense: list[str] = []
    for spec in transforms_of(model):
        if spec["type"] not in ("low_rank", "pivga"):
            continue
        kept = {}
        for path, rank in spec["layers"].items():
            layer = model.get_submodule(path)
            if speed.keeps_dense(layer.out_features, layer.in_features, rank):
                linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(layer.dense_weight())
                    if layer.bias is not None:
                        linear.bias.copy_(layer.bias)
                replace_module(model, path, linear)
                dense.append(path)
            else:
                kept[path] = rank
        set_transform(model, spec["type"], {**spec, "layers": kept} if kept else None)
    log(f"time break-even: {len(dense)} factored matrices made dense")
    save_compressed(model, target, tokenizer=tokenizer, info={"dense_for_speed": dense})
    return dense


def stored_dtype(folder: Path) -> str:
    """The dtype of the floating-point tensors in a saved model's ``model.safetensors`` (e.g. ``"bfloat16"``)."""
    from safetensors import safe_open

    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
    with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
        for key in f.keys():
            kind = f.get_slice(key).get_dtype()
            if kind in names:
                return names[kind]
    return "float32"


def save_dense(model: Any, tokenizer: Any, root: Path, dtype: str = "float32") -> Path:
    """The dense model saved once in ``dtype`` (lmshrink's format, no transforms), the size-on-disk reference of
    variants saved in that dtype (the pipelines save in the source model's dtype)."""
    import copy

    import torch

    from lmshrink.compress.io import save_compressed

    folder = root / f"dense-{dtype}" / "model"
    if not (folder / "model.safetensors").is_file():
        save_compressed(copy.deepcopy(model).to(getattr(torch, dtype)), folder, tokenizer=tokenizer)
    return folder


def disk_bytes(folder: Path) -> int:
    """Bytes of the weight files (``*.safetensors``) in a saved model folder."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


__all__ = ["Variant", "build_settings", "default_variants", "densify_slow_layers", "disk_bytes", "ensure_built",
           "save_dense", "stored_dtype"]
