"""``lmshrink heal``: distill an already pruned model from its unpruned teacher (the KD step of ``--heal kd``, on
its own), with held-out perplexity before and after, written in one piece like a prune run's output. A model
``lmshrink svd`` factored stays factored (:mod:`lmshrink.heal.factored`) and is saved in lmshrink's format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import LmshrinkError
from ..core.options import parse_option_strings
from ..devices import memory_hint, placement_settings, save_dtype_of
from ..report import Timings, library_versions, write_json
from ..report import log as _log
from ..report.prune import render_heal_markdown
from ..report.schema import HealReport
from ..staging import StagedDir, atomic_write_text, check_output_dir
from .config import kd_config, kd_option_specs
from .evaluation import OtherTexts, held_out_ids
from .outputs import save_in_dtype
from .settings import (DataSettings, OutputSettings, PerplexitySettings, PlacementSettings, ProgressSettings,
                       SavedModelSettings, like, setting)

UNSET = object()


@dataclass
class HealResult:
    out: Path
    model: Any
    report: HealReport


def recorded_teacher(model_dir: str | Path) -> Any:
    """The model a prune or svd run started from, read from the ``report.json`` next to its ``model/`` folder;
    :data:`UNSET` when there is no such record."""
    report = Path(model_dir).parent / "report.json"
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return UNSET
    return data.get("model_source") or UNSET


@dataclass
class HealConfig(DataSettings, PerplexitySettings, OutputSettings, ProgressSettings, PlacementSettings,
                 SavedModelSettings):
    """The settings of a heal run (``lmshrink heal`` flags, :func:`heal_model` keywords): the teacher, the
    calibration windows it labels, KD healing's options (:class:`~lmshrink.heal.kd.KDConfig` fields, e.g.
    ``steps``, ``lr``), held-out perplexity, placement and output. ``save_dtype`` "auto" saves in the precision the
    pruned model was saved in."""

    command = "heal_model"

    teacher: str | None = setting(None, "the unpruned model: directory, hub id, .gguf, or 'smollm2' for the "
                                        "embedded default (default: the model the prune or svd run's report.json "
                                        "names)")
    kd_options: dict[str, Any] = setting(help="KD option: steps, lr, temperature, method (lora|full), lora_rank, "
                                              "batch_size, top_k", flag="--heal-option", options=True,
                                         default_factory=dict)
    out: str | Path | None = like(OutputSettings, "out", help="output directory, absent or empty", required=True)
    samples: int = like(DataSettings, "samples", help="calibration windows the teacher labels (default %(default)s)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.kd_options, list):
            self.kd_options = parse_option_strings("KD healing", kd_option_specs(), self.kd_options)

    def check(self) -> None:
        """Refuse settings no run can use: no output directory, a calibration or evaluation too small, an unknown
        placement or KD option."""
        if self.out is None:
            raise LmshrinkError("heal_model writes the healed model to out; give an output directory (--out).")
        self.check_data()
        self.check_perplexity()
        self.placement()
        self.check_save_dtype()
        self.kd_config()

    def kd_config(self) -> Any:
        """The :class:`~lmshrink.heal.kd.KDConfig` of ``kd_options``, seeded by ``seed`` unless given."""
        return kd_config(self.seed, self.kd_options)


def heal_model(model_dir: str | Path | None = None, config: HealConfig | None = None, **settings: Any) -> HealResult:
    """Distill ``model_dir`` (transformers or lmshrink format: pruned, or factored by ``lmshrink svd``) towards the
    ``teacher`` (a name or path, "smollm2" for the embedded default; by default the model its prune or svd run
    started from) on ``samples`` × ``seq_len`` calibration tokens, and save the healed model and a report under
    ``out``.

    Settings are :class:`HealConfig`'s, as ``config``, as keywords, or both (keywords replace the config's
    fields). Both models are loaded on ``device`` in ``dtype`` (or spread by ``device_map``); the healed model is
    saved in ``save_dtype`` ("auto": the precision ``model_dir`` was saved in)."""
    import torch

    from ..data import load_texts, make_calibration
    from ..heal.kd import distill, teacher_targets
    from ..models import check_model_source, load_model

    if settings.get("teacher", None) is UNSET:  # the former spelling of "the recorded teacher"
        del settings["teacher"]
    config = HealConfig.from_settings(config, **settings)
    config.check()
    if model_dir is None:
        raise LmshrinkError("heal_model heals a pruned model: give its directory (the model/ of a prune run).")
    placement = config.placement()
    model_dir = Path(model_dir)
    check_model_source(str(model_dir))
    out = Path(config.out)
    check_output_dir(out, config.overwrite)
    teacher = config.teacher if config.teacher is not None else recorded_teacher(model_dir)
    if teacher is UNSET:
        raise LmshrinkError(f"No prune or svd report next to {model_dir} names the model it came from; give it with "
                            "--teacher.")
    if isinstance(teacher, str):
        check_model_source(teacher)
    distillation = config.kd_config()
    data, samples, seq_len, seed, progress = (config.calibration_text(), config.samples, config.seq_len, config.seed,
                                              config.progress)
    device_map, save_dtype = config.device_map, config.save_dtype
    timings = Timings()
    torch.manual_seed(seed)
    with timings("data"):
        texts = load_texts(data)
        others = OtherTexts.read(config.eval_data)
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
    ids = held_out_ids(student.tokenizer, texts, config.eval_tokens)
    others.tokenize(student.tokenizer, config.eval_tokens)
    from ..evaluate.perplexity import perplexity

    precision = placement_settings(student.model, device_map, save_dtype_of(save_dtype, str(model_dir),
                                                                            student.model))
    lower = "--seq-len or --samples, or --heal-option batch_size"
    with timings("heal: teacher targets"), memory_hint(f"labelling with the teacher on {precision['device']}", lower):
        targets = teacher_targets(teacher_model.model, calibration.input_ids, top_k=distillation.top_k,
                                  temperature=distillation.temperature)
    del teacher_model
    with timings("perplexity before"):
        before = perplexity(student.model, ids, window=config.eval_window, progress=progress,
                            desc="perplexity before")
    others.measure(student.model, "before", window=config.eval_window, timings=timings, progress=progress)
    with timings("heal: distill"), memory_hint(f"distilling on {precision['device']}", lower):
        model, kd = distill(student.model, targets, distillation, progress=progress)
    with timings("perplexity after"):
        after = perplexity(model, ids, window=config.eval_window, progress=progress, desc="perplexity after")
    others.measure(model, "after", window=config.eval_window, timings=timings, progress=progress)
    report = HealReport(model=str(model_dir), teacher=teacher, perplexity_before=before, perplexity_after=after,
                        kd=kd.to_dict(), calibration={"source": texts.source, **calibration.info},
                        settings=precision, timings_s=dict(timings.seconds), versions=library_versions(),
                        other_texts=others.scores or None)
    with timings("save"), StagedDir(out, overwrite=config.overwrite) as stage:
        if (model_dir / "lmshrink_config.json").exists():
            from ..compress.io import save_compressed

            save_compressed(model, stage.path / "model", tokenizer=student.tokenizer, info={"healed": "kd"})
        else:
            model.save_pretrained(stage.path / "model")
            student.tokenizer.save_pretrained(stage.path / "model")
        save_in_dtype(model, stage.path / "model", precision["save_dtype"])
        write_json(stage.path / "report.json", report.to_json())
        atomic_write_text(stage.path / "report.md", render_heal_markdown(report))
        stage.commit()
    return HealResult(out, model, report)
