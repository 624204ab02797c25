"""``lmshrink prune --remove 25%``: a budget in parameters end to end, and bad budgets refused in one sentence."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lmshrink.cli import main
from lmshrink.core import LmshrinkError
from lmshrink.pipeline.config import PruneConfig
from lmshrink.pipeline.request import budget_solver
from lmshrink.core.removal import parse_remove


def _prune(model, text, out, remove, *extra):
    return ["prune", "--model", str(model), "--data", str(text), "--remove", remove, "--samples", "4", "--seq-len",
            "16", "--eval-tokens", "64", "--quiet", "--out", str(out), *extra]


@pytest.fixture
def no_loading(monkeypatch):
    """Fail if the run gets as far as loading the model."""
    import lmshrink.pipeline.prune as prune_module

    def refuse(*args, **kwargs):
        raise AssertionError("the request should have been refused before loading the model")

    monkeypatch.setattr(prune_module, "load_inputs", refuse)


def test_a_quarter_of_the_decoder_by_whole_layers_with_sleb(tiny_model_dir, text_file, tmp_path, capsys):
    from transformers import AutoConfig

    out = tmp_path / "run"
    assert main(_prune(tiny_model_dir, text_file, out, "25%", "--method", "sleb", "--method-option",
                       "samples=2")) == 0
    report = json.loads((out / "report.json").read_text())
    budget = report["budget"]
    # 6 equal layers: 25% is 1.5 layers, so the band [1.5, 2.5] layers holds exactly two
    assert len(report["removed"]) == 2
    layer = budget["decoder_parameters"] / 6
    assert budget["parameters_removed"] == pytest.approx(2 * layer)
    assert budget["share_of_decoder"] == pytest.approx(1 / 3)
    assert report["parameters_before"] - report["parameters_after"] == budget["parameters_removed"]
    saved = AutoConfig.from_pretrained(out / "model")
    assert saved.num_hidden_layers == 4 and saved.lmshrink_budget["parameters_removed"] == budget["parameters_removed"]
    printed = capsys.readouterr().out
    assert f"Removed {budget['parameters_removed']:,} parameters, 33.33% of the decoder's" in printed
    assert "Removed " in (out / "report.md").read_text() and "--remove 25%" in (out / "report.md").read_text()


@pytest.mark.parametrize("remove, message", [
    ("0%", "strictly between 0 and 100"),
    ("100%", "strictly between 0 and 100"),
    ("150%", "strictly between 0 and 100"),
    ("0.5p", "at least 1"),
])
def test_a_share_outside_0_100_is_refused_before_loading(remove, message, tiny_model_dir, text_file, tmp_path,
                                                         capsys, no_loading):
    assert main(_prune(tiny_model_dir, text_file, tmp_path / "x", remove, "--method", "sleb")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_method_that_counts_blocks_is_refused_before_loading(tiny_model_dir, text_file, tmp_path, capsys,
                                                               no_loading):
    assert main(_prune(tiny_model_dir, text_file, tmp_path / "x", "25%", "--method", "angular")) == 2
    err = capsys.readouterr().err
    assert "Method 'angular' removes a number of blocks, not a budget in parameters" in err
    assert "blockpruner" in err and "evopress" in err and "sleb" in err


@pytest.mark.parametrize("remove, message", [
    ("99%", "removing them all is not allowed; ask for at most"),
    ("10p", "less than the smallest removable unit"),
])
def test_a_budget_the_model_cannot_meet_is_refused_in_one_sentence(remove, message, tiny_model_dir, text_file,
                                                                   tmp_path, capsys):
    assert main(_prune(tiny_model_dir, text_file, tmp_path / "x", remove, "--method", "sleb",
                       "--granularity", "sublayer")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def _honours(monkeypatch, names):
    """Make exactly the solvers ``names`` declare weighted bands."""
    from lmshrink.plugins import registry

    solvers = registry("solver")
    for name in solvers.names():
        cls = solvers._entries[name].obj
        caps = cls.capabilities
        kinds = ("cardinality", "weighted") if name in names else ("cardinality",)
        monkeypatch.setattr(cls, "capabilities", dataclasses.replace(caps, constraint_kinds=kinds))
    # composite stacks (tabu) declare their capabilities per instance: leave them out of the fallback list
    import lmshrink.pipeline.request as request

    monkeypatch.setattr(request, "BUDGET_SOLVERS", tuple(n for n in request.BUDGET_SOLVERS if n != "tabu"))


def test_the_pipeline_picks_a_solver_that_honours_the_band(monkeypatch):
    spec = parse_remove("25%")
    config = PruneConfig(remove="25%", objective="fisher", solver="anneal")
    _honours(monkeypatch, {"anneal", "exact"})
    assert budget_solver(config, spec) == (config, None)  # the configured one honours it
    _honours(monkeypatch, {"exact"})
    fallback, note = budget_solver(config, spec)
    assert fallback.solver == "exact" and "'anneal' does not honour" in note and "'exact' solved it" in note
    with pytest.raises(LmshrinkError, match="name a solver that does"):  # options of anneal do not fit exact
        budget_solver(dataclasses.replace(config, solver_options={"num_reads": 4}), spec)
    _honours(monkeypatch, set())
    with pytest.raises(LmshrinkError, match="no installed solver honours its weighted band"):
        budget_solver(config, spec)
    method = dataclasses.replace(config, method="sleb", objective=None)
    assert budget_solver(method, spec) == (method, None)  # a removal method needs no solver


def test_the_default_pipeline_with_a_budget_is_refused_or_served_before_loading(tiny_model_dir, text_file, tmp_path,
                                                                             capsys, monkeypatch, no_loading):
    _honours(monkeypatch, set())
    assert main(_prune(tiny_model_dir, text_file, tmp_path / "x", "25%")) == 2
    assert "use a removal method that does (--method sleb, blockpruner or evopress)" in capsys.readouterr().err
