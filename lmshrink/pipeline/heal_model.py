"""``lmshrink heal``: distill an already pruned model from its unpruned teacher (the KD step of ``--heal kd``, on
its own), with held-out perplexity before and after, written in one piece like a prune run's output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import LmshrinkError
from ..data import load_texts, make_calibration
from ..devices import check_save_dtype, memory_hint, placement_settings, resolve_placement, save_dtype_of
from ..heal.kd import KDConfig, distill, teacher_targets
from ..report import Timings, library_versions
from ..report import log as _log
from ..staging import StagedDir, check_output_dir
from .evaluation import held_out_ids

UNSET = object()


@dataclass
class HealResult:
    out: Path
    model: Any
    report: dict[str, Any]


def recorded_teacher(model_dir: str | Path) -> Any:
    """The model a prune run started from, read from the ``report.json`` next to its ``model/`` folder;
    :data:`UNSET` when there is no such record."""
    report = Path(model_dir).parent / "report.json"
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return UNSET
    return data.get("model_source") or UNSET


def heal_model(model_dir: str | Path, *, teacher: Any = UNSET, out: str | Path, overwrite: bool = False,
               data: Any = None, samples: int = 64, seq_len: int = 128, eval_tokens: int = 16384,
               eval_window: int = 512, seed: int = 0, kd_options: dict[str, Any] | None = None,
               progress: bool = True, device: str = "auto", dtype: str = "auto", device_map: str | None = None,
               save_dtype: str = "auto") -> HealResult:
    """Distill ``model_dir`` (transformers or lmshrink format) towards ``teacher`` (a name or path, "smollm2" or
    None for the embedded default; by default the model its prune run started from) on ``samples`` × ``seq_len`` calibration
    tokens, and save the healed model and a report under ``out``.

    Both models are loaded on ``device`` in ``dtype`` (or spread by ``device_map``); the healed model is saved in
    ``save_dtype`` ("auto": the precision ``model_dir`` was saved in)."""
    from ..models import check_model_source, load_model

    placement = resolve_placement(device, dtype, device_map)
    check_save_dtype(save_dtype)
    model_dir = Path(model_dir)
    check_model_source(str(model_dir))
    out = Path(out)
    check_output_dir(out, overwrite)
    if teacher is UNSET:
        teacher = recorded_teacher(model_dir)
        if teacher is UNSET:
            raise LmshrinkError(f"No prune report next to {model_dir} names the unpruned model; give it with "
                                "--teacher.")
    if isinstance(teacher, str):
        check_model_source(teacher)
    try:
        config = KDConfig(**{"seed": seed, **(kd_options or {})})
    except TypeError as exc:
        raise LmshrinkError(f"KD healing: {exc}.") from None
    timings = Timings()
    torch.manual_seed(seed)
    with timings("data"):
        texts = load_texts(data)
    with timings("load model"):
        _log(progress, f"loading {model_dir} and its teacher")
        where = dict(dtype=placement.dtype, device=placement.device, device_map=placement.device_map)
        student = load_model(str(model_dir), **where)
        teacher_model = load_model(teacher, **where)
    s_vocab, t_vocab = student.model.get_output_embeddings().weight.shape[0], \
        teacher_model.model.get_output_embeddings().weight.shape[0]
    if s_vocab != t_vocab:
        raise LmshrinkError(f"The teacher's vocabulary ({t_vocab} tokens) is not the pruned model's ({s_vocab}): "
                            "give the model it was pruned from with --teacher.")
    calibration = make_calibration(student.tokenizer, texts, samples, seq_len, seed)
    ids = held_out_ids(student.tokenizer, texts, eval_tokens)
    from ..evaluate.perplexity import perplexity

    precision = placement_settings(student.model, device_map, save_dtype_of(save_dtype, str(model_dir),
                                                                            student.model))
    lower = "--seq-len or --samples, or --heal-option batch_size"
    with timings("heal: teacher targets"), memory_hint(f"labelling with the teacher on {precision['device']}", lower):
        targets = teacher_targets(teacher_model.model, calibration.input_ids, top_k=config.top_k,
                                  temperature=config.temperature)
    del teacher_model
    with timings("perplexity before"):
        before = perplexity(student.model, ids, window=eval_window, progress=progress, desc="perplexity before")
    with timings("heal: distill"), memory_hint(f"distilling on {precision['device']}", lower):
        model, kd = distill(student.model, targets, config, progress=progress)
    with timings("perplexity after"):
        after = perplexity(model, ids, window=eval_window, progress=progress, desc="perplexity after")
    report = {"command": "heal", "model": str(model_dir), "teacher": teacher, "steps": ["kd"],
              "perplexity_before": before, "perplexity_after": after, "kd": kd.to_dict(),
              "calibration": {"source": texts.source, **calibration.info}, "settings": precision,
              "timings_s": dict(timings.seconds),
              "versions": library_versions()}
    with timings("save"), StagedDir(out, overwrite=overwrite) as stage:
        if (model_dir / "lmshrink_config.json").exists():
            from ..compress.io import save_compressed

            save_compressed(model, stage.path / "model", tokenizer=student.tokenizer, info={"healed": "kd"})
        else:
            model.save_pretrained(stage.path / "model")
            student.tokenizer.save_pretrained(stage.path / "model")
        from .outputs import save_in_dtype

        save_in_dtype(model, stage.path / "model", precision["save_dtype"])
        from ..report import write_json
        from ..report.prune import render_heal_markdown
        from ..staging import atomic_write_text

        write_json(stage.path / "report.json", report)
        atomic_write_text(stage.path / "report.md", render_heal_markdown(report))
        stage.commit()
    return HealResult(out, model, report)
