"""The save stage of a prune run: ``model/``, ``problem.json``, ``report.json`` and ``report.md`` are written
into a temporary directory next to ``--out`` and renamed into place together, so ``--out`` holds a complete
result or nothing (an interrupted save leaves nothing; a killed one leaves a temporary directory that the next
run removes). The report is rewritten, atomically, once the pruned model has been evaluated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core import BinaryQuadraticProblem, LmshrinkError, RemovalPlan
from ..devices import cast_saved, model_dtype
from ..report import write_json
from ..report.prune import render_prune_markdown
from ..report.schema import PruneReport
from ..staging import StagedDir, atomic_write_text, checkpoint


def save_outputs(out: Path, *, overwrite: bool, model: Any, tokenizer: Any, save_format: str | None,
                 plan: RemovalPlan, problem: BinaryQuadraticProblem | None, report: PruneReport,
                 save_dtype: str | None = None) -> Path:
    """Write the run's files and move them to ``out`` in one rename; ``model`` None saves no model. The saved
    model holds ``save_dtype`` ("bfloat16", "float16", "float32"; None: the model's own dtype)."""
    with StagedDir(out, overwrite=overwrite) as stage:
        if problem is not None:
            problem.save(stage.path / "problem.json")
        if model is not None:
            save_model(model, tokenizer, stage.path / "model", save_format, plan)
            if save_dtype is not None:
                save_in_dtype(model, stage.path / "model", save_dtype)
        write_report(stage.path, report)
        return stage.commit()


def save_model(model: Any, tokenizer: Any, path: Path, save_format: str | None, plan: RemovalPlan) -> None:
    """The pruned model (and its tokenizer) in plain transformers format, or lmshrink's own."""
    if save_format == "transformers":
        model.save_pretrained(path)
    elif save_format == "lmshrink":
        from ..compress.io import save_compressed

        save_compressed(model, path, info={"removed": plan.to_dict()})
    else:
        raise LmshrinkError(f"Unknown save format {save_format!r}.")
    checkpoint("save")
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def save_in_dtype(model: Any, path: Path, save_dtype: str) -> None:
    """Rewrite the model saved at ``path`` in ``save_dtype`` unless ``model`` already has it; the model in memory
    is left as it is (the file is rewritten, one safetensors file at a time)."""
    if str(model_dtype(model)).removeprefix("torch.") != save_dtype:
        cast_saved(path, save_dtype)


def write_gguf(out: Path, model: Any, tokenizer: Any, model_source: str | None, removed_layers: list[int],
               num_layers: int, *, type: str = "auto", fallback: str = "f16", progress: bool = True) -> Path:
    """``out/model.gguf`` beside the saved ``out/model/`` of a prune run that removed whole layers, written from
    the pruned ``model`` in memory. The tokenizer and the tensor types of ``type="auto"`` come from the source GGUF
    when the model was loaded from one (block i of the file is source block ``layer_map[i]``, the layers kept in
    order), else from ``tokenizer`` and the dtype ``out/model`` was saved in."""
    from ..compress.gguf_export import export_gguf, source_gguf_of
    from ..models import DEFAULT_MODEL

    gone = set(removed_layers)
    layer_map = [i for i in range(num_layers) if i not in gone]
    source = source_gguf_of(model_source)
    saved = json.loads((out / "model" / "config.json").read_text())
    saved_dtype = saved.get("dtype") or saved.get("torch_dtype")
    name = "SmolLM2-135M-Instruct" if model_source in (None, DEFAULT_MODEL) else Path(model_source).name
    return export_gguf(model, out / "model.gguf", None if source else tokenizer, type=type, fallback=fallback,
                       source_gguf=source, layer_map=layer_map,
                       source_dtype=saved_dtype if isinstance(saved_dtype, str) else None, name=name,
                       progress=progress)


def gguf_source_of_run(model_dir: str | Path) -> tuple[Path | None, list[int] | None]:
    """(source GGUF, kept layers) of the prune run whose ``model/`` is ``model_dir``, read from the
    ``report.json`` beside it: the GGUF file the run loaded (None when it loaded something else or the file is
    gone) and the source index of each layer kept (None without a record of whole-layer removal)."""
    from ..compress.gguf_export import source_gguf_of

    try:
        report = json.loads((Path(model_dir).parent / "report.json").read_text())
        source = report.get("model_source")
        gguf_file = source_gguf_of(source) if source else None
    except (OSError, ValueError, AttributeError, LmshrinkError):
        return None, None
    layer_map = None
    if report.get("granularity") == "layer" and isinstance(report.get("num_blocks"), int):
        gone = {b.get("index") for b in report.get("removed") or [] if isinstance(b, dict)}
        layer_map = [i for i in range(report["num_blocks"]) if i not in gone]
    return (gguf_file if gguf_file is not None and gguf_file.is_file() else None), layer_map


def format_reason(save_format: str | None) -> str:
    """Why the model is saved in ``save_format``."""
    if save_format == "transformers":
        return "every removed unit is a whole block the architecture's config can express"
    return "a removed unit is part of a layer, which the stock config cannot express"


def write_report(folder: Path, report: PruneReport) -> None:
    """report.json and report.md, each replaced atomically."""
    write_json(folder / "report.json", report.to_json())
    atomic_write_text(folder / "report.md", render_prune_markdown(report))
