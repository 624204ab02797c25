"""The prune pipeline's candidate portfolio, validation choice and healing, on a tiny Llama.

Checked against independent computations: the chosen candidate's validation loss is recomputed with a fresh
RemovalLoss, the saved healed model's perplexity with a reloaded copy, and the folded maps against the maps applied
as hooks to the gated full model.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from lmshrink.cli import main
from lmshrink.pipeline.config import DEFAULT_PIPELINE, PruneConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(samples=8, seq_len=32, eval_tokens=256, eval_window=64, validation=6, progress=False)


def _ppl(model, ids, window=64):
    from lmshrink.evaluate.perplexity import perplexity

    return perplexity(model, ids, window=window, progress=False)["perplexity"]


def test_default_pipeline_is_the_portfolio_with_linear_healing():
    config = PruneConfig().resolved()
    assert config.objective == DEFAULT_PIPELINE["objective"]
    assert config.candidates == DEFAULT_PIPELINE["candidates"] and config.heal_steps == DEFAULT_PIPELINE["heal"]
    assert config.chooses and config.heal_aware()
    # naming an objective runs it alone: the paper's method
    paper = PruneConfig(objective="fisher").resolved()
    assert not paper.chooses and paper.heal_steps == [] and paper.candidates is None
    # sub-layer removal has no linear healing by default
    assert PruneConfig(granularity="sublayer").resolved().heal_steps == []


def test_portfolio_chooses_the_lowest_validation_loss_and_heals(tiny_model_dir, text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from lmshrink.data import evaluation_ids, load_texts, make_calibration
    from lmshrink.evaluate.measured import RemovalLoss
    from lmshrink.heal.linear import LinearHeal
    from lmshrink.models import load_model
    from lmshrink.pipeline import prune as prune_module
    from lmshrink.plugins import find_adapter

    result = prune_module.prune(str(tiny_model_dir), remove=2, data=str(text_file), objective="fisher",
                                solver="exact", rerank=3, candidates=["norm-ratio", "angular:2"], heal="linear",
                                heal_options={"aware": False}, out=tmp_path / "run", **SMALL)
    report = result.report
    validated = [c for c in report["candidates"] if c["loss"] is not None]
    assert len(validated) >= 3 and report["selection"]["validated"] and not report["selection"]["heal_aware"]
    chosen = next(c for c in report["candidates"] if c["chosen"])
    assert chosen["loss"] == min(c["loss"] for c in validated)
    assert any("norm-ratio" in s for c in report["candidates"] for s in c["sources"])
    # every candidate carries its energy under the objectives that built problems
    assert all("fisher" in c["energies"] for c in report["candidates"])

    # the validation loss is what a fresh meter on the same windows gives
    loaded = load_model(str(tiny_model_dir))
    adapter = find_adapter(loaded.model)
    texts = load_texts(str(text_file))
    calib = make_calibration(loaded.tokenizer, texts, 8, 32, 0, validation=6)
    meter = RemovalLoss(loaded.model, adapter, calib.validation.input_ids)
    assert meter(chosen["indices"]).mean == pytest.approx(chosen["loss"], rel=1e-6)

    # the saved model is the pruned model with the maps folded in: plain transformers, same perplexity
    healing = report["healing"]
    assert healing["steps"] == ["linear"] and healing["perplexity_unhealed"] is not None
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model").eval()
    ids = evaluation_ids(loaded.tokenizer, texts, 256)
    assert _ppl(saved, ids) == pytest.approx(report["perplexity_after"]["perplexity"], rel=1e-5)
    runs = LinearHeal().fit(loaded.model, adapter, chosen["indices"], calib.input_ids)
    expected = adapter.remove(copy.deepcopy(loaded.model), chosen["indices"])
    LinearHeal().fold(runs, expected, adapter)
    with torch.no_grad():
        a = saved(ids[None, :64]).logits
        b = expected(ids[None, :64]).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert "## Healing" in (tmp_path / "run" / "report.md").read_text()


def test_heal_aware_choice_compares_healed_losses(tiny_model_dir, text_file, tmp_path):
    from lmshrink.pipeline.prune import prune

    report = prune(str(tiny_model_dir), remove=2, data=str(text_file), objective="fisher", solver="exact", rerank=3,
                   heal="linear", save=False, evaluate=False, out=tmp_path / "run", **SMALL).report
    assert report["selection"]["heal_aware"]
    chosen = next(c for c in report["candidates"] if c["chosen"])
    assert chosen["loss"] == min(c["loss"] for c in report["candidates"] if c["loss"] is not None)
    others = [c for c in report["candidates"] if c["loss"] is not None and not c["chosen"]]
    assert all(c["delta"] >= 0 for c in others)


def test_heal_aware_finalists_are_the_lowest_unhealed(tiny_model_dir, text_file, tmp_path):
    from lmshrink.pipeline.prune import prune

    report = prune(str(tiny_model_dir), remove=2, data=str(text_file), objective="fisher", solver="exact", rerank=4,
                   heal="linear", heal_options={"aware_top": 2}, save=False, evaluate=False, out=tmp_path / "run",
                   **SMALL).report
    measured = [c for c in report["candidates"] if c.get("loss_unhealed") is not None]
    healed = [c for c in measured if c["loss"] is not None]
    assert len(measured) == 4 and len(healed) == 2 and report["selection"]["finalists"] == 2
    cutoff = sorted(c["loss_unhealed"] for c in measured)[1]
    assert all(c["loss_unhealed"] <= cutoff for c in healed)
    assert next(c for c in report["candidates"] if c["chosen"])["loss"] == min(c["loss"] for c in healed)


@pytest.mark.parametrize("fit", [0, 4])
def test_heal_aware_maps_are_fitted_on_the_samples_asked_for(tiny_model_dir, text_file, tmp_path, fit):
    from lmshrink.data import load_texts, make_calibration
    from lmshrink.evaluate.measured import RemovalLoss
    from lmshrink.heal.linear import LinearHeal
    from lmshrink.models import load_model
    from lmshrink.pipeline.prune import prune
    from lmshrink.plugins import find_adapter

    report = prune(str(tiny_model_dir), remove=2, data=str(text_file), objective="fisher", solver="exact", rerank=3,
                   heal="linear", heal_options={"aware_samples": fit}, save=False, evaluate=False,
                   out=tmp_path / "run", **SMALL).report
    chosen = next(c for c in report["candidates"] if c["chosen"])
    # the chosen candidate's healed validation loss is that of maps fitted on all samples (0) or the first 4
    loaded = load_model(str(tiny_model_dir))
    adapter = find_adapter(loaded.model)
    calib = make_calibration(loaded.tokenizer, load_texts(str(text_file)), 8, 32, 0, validation=6)
    runs = LinearHeal().fit(loaded.model, adapter, chosen["indices"], calib.input_ids[: fit or None])
    meter = RemovalLoss(loaded.model, adapter, calib.validation.input_ids)
    assert meter.healed(chosen["indices"], runs).mean == pytest.approx(chosen["loss"], rel=1e-5)


def test_kd_healing_and_the_heal_command(tiny_model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["prune", "--model", str(tiny_model_dir), "--data", str(text_file), "--remove", "2", "--samples", "8",
                 "--seq-len", "32", "--objective", "fisher", "--solver", "exact", "--heal", "kd", "--heal-option",
                 "steps=3", "--heal-option", "batch_size=2", "--heal-option", "top_k=16", "--eval-tokens", "256",
                 "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    kd = report["healing"]["kd"]
    assert len(kd["losses"]) == 3 and all(math.isfinite(v) for v in kd["losses"])
    assert report["model_source"] == str(tiny_model_dir)
    assert "healed (kd)" in capsys.readouterr().out

    # lmshrink heal reads the teacher from the prune report and writes a healed copy with a report
    healed = tmp_path / "healed"
    code = main(["heal", str(out / "model"), "--out", str(healed), "--data", str(text_file), "--samples", "8",
                 "--seq-len", "32", "--eval-tokens", "256", "--heal-option", "steps=2", "--heal-option",
                 "batch_size=2", "--heal-option", "top_k=16", "--quiet"])
    assert code == 0
    heal_report = json.loads((healed / "report.json").read_text())
    assert heal_report["teacher"] == str(tiny_model_dir) and len(heal_report["kd"]["losses"]) == 2
    assert heal_report["perplexity_before"]["perplexity"] == pytest.approx(
        report["perplexity_after"]["perplexity"], rel=1e-5)
    assert "before healing" in (healed / "report.md").read_text()


def test_heal_command_needs_a_teacher_without_a_report(tiny_model_dir, tmp_path, capsys):
    code = main(["heal", str(tiny_model_dir), "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2 and "give it with --teacher" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
