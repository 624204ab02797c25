"""The typed run records (lmshrink.report.schema): report.json keeps the keys it always had, plus a schema version;
records round-trip through JSON; report.json files written before the schema version still load; the measurements
(lmshrink.evaluate) never import the healing layer."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import lmshrink
from lmshrink.core import LmshrinkError
from lmshrink.report import (SCHEMA_VERSION, CompressReport, HealingSummary, HealReport, PruneReport, SvdReport,
                             load_report, report_from_json)
from lmshrink.report.prune import prune_summary, render_prune_markdown

#: the keys report.json had, in order, before the records were typed
PRUNE_KEYS = ["command", "status", "errors", "model", "model_source", "architecture", "adapter", "granularity",
              "num_blocks", "removed", "plan", "candidates", "reranked", "selection", "healing", "perplexity_before",
              "perplexity_after", "parameters_before", "parameters_after", "budget", "notes", "saved_format",
              "saved_format_reason", "problem", "solver", "method", "sources", "lm_eval", "settings", "calibration",
              "timings_s", "versions"]
SVD_KEYS = ["command", "model", "architecture", "adapter", "ratio", "solver", "pivga", "params", "perplexity_before",
            "perplexity_after", "energy", "whitening", "verify", "problem", "plan", "per_matrix", "settings",
            "calibration", "timings_s", "versions"]
COMPRESS_KEYS = ["command", "settings", "data", "params", "removed_branches", "factored", "dense_matrices",
                 "estimated_loss_increase", "solver", "measurements", "perplexity_before", "perplexity_after",
                 "timings_s"]
HEAL_KEYS = ["command", "model", "teacher", "steps", "perplexity_before", "perplexity_after", "kd", "calibration",
             "settings", "timings_s", "versions"]


def _prune_report() -> PruneReport:
    ppl = {"nll": 2.5, "perplexity": 12.18, "tokens": 64}
    return PruneReport(
        status="complete", model="tiny", model_source="tiny-dir", architecture="LlamaForCausalLM", adapter="llama",
        num_blocks=6, removed=[{"index": 2, "name": "model.layers.2", "kind": "layer", "layer": 2},
                               {"index": 4, "name": "model.layers.4", "kind": "layer", "layer": 4}],
        plan={"indices": [2, 4]},
        candidates=[{"indices": [2, 4], "source": "fisher", "energy": 0.5, "score": None, "loss": None,
                     "chosen": True, "delta": None, "delta_se": None}],
        selection={"validated": False, "candidates": 0, "windows": 0, "tokens": 0, "heal_aware": False,
                   "finalists": None, "note": None},
        healing=HealingSummary(["linear"], linear=[{"layers": [2, 2], "folded_into": "model.layers.1.mlp.down_proj",
                                                    "error_removed": 0.3, "error_healed": 0.1, "reason": None}],
                               perplexity_unhealed={"nll": 3.0, "perplexity": 20.09, "tokens": 64}),
        perplexity_before={"nll": 2.0, "perplexity": 7.39, "tokens": 64}, perplexity_after=ppl,
        parameters_before=1000, parameters_after=800, saved_format="transformers", saved_format_reason="whole",
        solver={"name": "exact", "time_s": 0.01}, settings={"remove": "2"}, timings_s={"solve": 0.01},
        versions={"python": "3.11"})


@pytest.mark.parametrize("record, keys", [(PruneReport(), PRUNE_KEYS), (SvdReport(), SVD_KEYS),
                                          (CompressReport(), COMPRESS_KEYS), (HealReport(), HEAL_KEYS)])
def test_to_json_has_the_old_keys_and_a_schema_version(record, keys):
    assert list(record.to_json()) == ["schema_version", *keys]
    assert record.to_json()["schema_version"] == SCHEMA_VERSION


def test_compress_report_writes_verify_only_when_checked():
    assert "verify" not in CompressReport().to_json()
    assert CompressReport(verify={"identical": True}).to_json()["verify"] == {"identical": True}


@pytest.mark.parametrize("record", [_prune_report(), SvdReport(model="m", verify={"identical": True}),
                                   CompressReport(factored={"a": 3}), HealReport(model="m", teacher=None)])
def test_record_round_trips_through_json(record):
    text = json.dumps(record.to_json())
    back = report_from_json(json.loads(text))
    assert type(back) is type(record)
    assert back.to_json() == record.to_json()
    assert back == record


def test_record_reads_as_its_dictionary():
    report = _prune_report()
    assert report["perplexity_after"] == report.perplexity_after
    assert report.get("healing")["steps"] == ["linear"] and report.get("absent") is None
    assert dict(report) == report.to_json() and report == report.to_json()
    assert report.removed_indices == [2, 4]


def test_old_report_json_without_schema_version_loads(tmp_path):
    old = _prune_report().to_json()
    del old["schema_version"]
    (tmp_path / "report.json").write_text(json.dumps(old))
    loaded = load_report(tmp_path / "report.json")
    assert isinstance(loaded, PruneReport) and isinstance(loaded.healing, HealingSummary)
    assert loaded.to_json() == {"schema_version": SCHEMA_VERSION, **old}
    assert render_prune_markdown(old) == render_prune_markdown(loaded)


def test_newer_schema_or_unknown_command_is_refused():
    with pytest.raises(LmshrinkError, match="schema version 99"):
        report_from_json({"schema_version": 99, "command": "prune"})
    with pytest.raises(LmshrinkError, match="'shrink'"):
        report_from_json({"command": "shrink"})


def test_prune_summary_reads_the_record():
    lines = prune_summary(_prune_report())
    assert lines == ["removed 2/6 blocks: 2:model.layers.2, 4:model.layers.4",
                     "perplexity 7.390 -> 20.090 removed -> 12.180 healed (linear) on 64 held-out tokens"]


def test_evaluate_imports_no_heal():
    """The measurements sit below the healing layer: no module of lmshrink.evaluate imports lmshrink.heal, not even
    inside a function (healing maps reach a meter as objects that hook themselves in)."""
    root = Path(lmshrink.__file__).parent / "evaluate"
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{'.' * node.level}{node.module or ''}"] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {n}" for n in names
                      if n.startswith("lmshrink.heal") or n.lstrip(".").split(".")[0] == "heal" and n.startswith("..")]
    assert found == []


def test_healed_fitness_old_path_is_a_deprecated_alias():
    from lmshrink.heal.fitness import HealedFitness

    with pytest.warns(DeprecationWarning, match="lmshrink.heal.fitness"):
        from lmshrink.evaluate.healed import HealedFitness as old
    assert old is HealedFitness


def test_command_summaries_read_the_records():
    from lmshrink.report.compress import compress_summary
    from lmshrink.report.prune import heal_summary
    from lmshrink.report.svd import svd_summary

    before, after = {"perplexity": 10.0, "tokens": 64}, {"perplexity": 12.5, "tokens": 64}
    svd = SvdReport(params={"kept_stored": 7500, "decomposed_dense": 10000, "kept_ratio_stored": 0.75,
                            "kept_ratio_plain": 0.8, "kept_ratio_pivga": 0.75, "dense_matrices": ["a"]},
                    perplexity_before=before, perplexity_after=after)
    assert svd_summary(svd) == ["kept 7,500 of 10,000 decomposed parameters (0.7500; plain low-rank 0.8000, PivGa "
                                "0.7500); 1 matrices kept dense", "perplexity 10.000 -> 12.500 on 64 held-out tokens"]
    joint = CompressReport(params={"kept": 750, "dense": 1000, "kept_ratio": 0.75}, removed_branches=["x"],
                           factored={"a": 2, "b": 3})
    assert compress_summary(joint) == ["kept 750 of 1,000 decomposed decoder parameters (0.7500); removed 1 branches, "
                                       "factored 2 matrices"]
    assert heal_summary(HealReport(perplexity_before=before, perplexity_after=after)) == [
        "perplexity 10.000 -> 12.500 on 64 held-out tokens"]
