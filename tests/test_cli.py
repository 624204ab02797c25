import json

import pytest

from lmshrink.cli import main
from lmshrink.core import load_problem
from test_problem import random_problem


def test_solve_prints_json_without_loading_a_model(tmp_path, capsys):
    path = random_problem(n=10, m=3).save(tmp_path / "p.json")
    assert main(["solve", str(path), "--solver", "exact", "--top-k", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solver"] == "exact" and isinstance(out["time_s"], float)
    assert len(out["solutions"]) == 4 and all(len(s["indices"]) == 3 for s in out["solutions"])
    p = load_problem(path)
    for s in out["solutions"]:
        assert s["energy"] == pytest.approx(p.energy(p.state(s["indices"])))
    assert [s["energy"] for s in out["solutions"]] == sorted(s["energy"] for s in out["solutions"])


def test_solve_with_options_and_bad_input(tmp_path, capsys):
    path = random_problem(n=10, m=3).save(tmp_path / "p.json")
    assert main(["solve", str(path), "--solver", "anneal", "--option", "num_reads=4", "--option", "num_sweeps=50"]) == 0
    assert "energy" in capsys.readouterr().out
    assert main(["solve", str(path), "--solver", "anneal", "--option", "num_read=4"]) == 2
    assert "Did you mean 'num_reads'" in capsys.readouterr().err
    assert main(["solve", str(tmp_path / "missing.json")]) == 2
    assert "No problem file" in capsys.readouterr().err
    assert main(["solve", str(path), "--solver", "exakt"]) == 2
    assert "Did you mean 'exact'" in capsys.readouterr().err


def test_prune_on_a_model_directory(tiny_model_dir, text_file, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    code = main(["prune", "--model", str(tiny_model_dir), "--data", str(text_file), "--remove", "2", "--samples", "8",
                 "--seq-len", "32", "--objective", "fisher", "--solver", "exact", "--rerank", "3", "--eval-tokens", "512",
                 "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["removed"]) == 2 and report["num_blocks"] == 6
    assert report["saved_format"] == "transformers"
    assert set(report["timings_s"]) >= {"load model", "objective", "solve", "validate candidates", "perplexity before",
                                         "save"}
    reranked = [c for c in report["candidates"] if c["loss"] is not None]
    assert len(reranked) == 3
    assert report["plan"]["loss"] == min(c["loss"] for c in reranked)
    assert report["perplexity_after"]["tokens"] == report["perplexity_before"]["tokens"]
    problem = load_problem(out / "problem.json")
    assert problem.num_variables == 6 and problem.constraints[0].equals == 2
    best = report["candidates"][0]
    assert best["energy"] == pytest.approx(problem.energy(problem.state(best["indices"])))
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 4
    assert "## Held-out perplexity" in (out / "report.md").read_text()
    assert "removed 2/6 blocks" in capsys.readouterr().out


def test_prune_refuses_bad_requests_before_loading(tmp_path, capsys):
    assert main(["prune", "--solver", "anneel", "--out", str(tmp_path / "x")]) == 2
    assert "Did you mean 'anneal'" in capsys.readouterr().err
    assert main(["prune", "--remove", "six", "--out", str(tmp_path / "y")]) == 2
    assert "expected a count" in capsys.readouterr().err


def test_option_strings_are_typed_and_checked_against_choices():
    from lmshrink.core import LmshrinkError, Option
    from lmshrink.core.options import parse_option_strings

    declared = {"mode": Option("a", "", str, choices=("a", "b")), "reads": Option(4, ""), "fast": Option(False, "")}
    assert parse_option_strings("S", declared, ["mode=b", "reads=7", "fast=yes"]) == {"mode": "b", "reads": 7, "fast": True}
    with pytest.raises(LmshrinkError, match=r"must be one of \['a', 'b'\]"):
        parse_option_strings("S", declared, ["mode=c"])
    with pytest.raises(LmshrinkError, match="Did you mean 'reads'"):
        parse_option_strings("S", declared, ["read=1"])


def _small_prune(model, text, out, *extra):
    return ["prune", "--model", str(model), "--data", str(text), "--remove", "2", "--samples", "4", "--seq-len", "16",
            "--eval-tokens", "64", "--solver", "exact", "--quiet", "--out", str(out), *extra]


def test_prune_refuses_a_used_out_and_overwrite_replaces_it_whole(tiny_model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)  # an earlier run's output with a stale file that would break the new model
    (out / "model" / "lmshrink_config.json").write_text("{}")
    (out / "report.json").write_text("{}")
    assert main(_small_prune(tiny_model_dir, text_file, out)) == 2
    assert "already holds files (model, report.json); pass --overwrite" in capsys.readouterr().err
    assert main(_small_prune(tiny_model_dir, text_file, out, "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model", "problem.json", "report.json", "report.md"]
    assert not (out / "model" / "lmshrink_config.json").exists()
    assert json.loads((out / "report.json").read_text())["status"] == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary directory left next to it


def test_a_failing_evaluation_is_recorded_and_the_saved_model_kept(tiny_model_dir, text_file, tmp_path, capsys,
                                                                   monkeypatch):
    pytest.importorskip("lm_eval")
    import lmshrink.pipeline.evaluation as evaluation
    from lmshrink.core import LmshrinkError

    out = tmp_path / "run"

    def offline(model, *args, **kwargs):
        assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()
        status = json.loads((out / "report.json").read_text())["status"]
        assert status == "evaluating"  # saved, and the report says the evaluation is under way
        raise LmshrinkError("lm-eval failed on hellaswag: ConnectionError: the Hub cannot be reached.")

    monkeypatch.setattr(evaluation, "run_lm_eval", offline)
    code = main(_small_prune(tiny_model_dir, text_file, out, "--eval-tasks", "lmshrink_pydoc_cloze"))
    captured = capsys.readouterr()
    assert code == 1
    assert ("lmshrink: lm-eval failed: lm-eval failed on hellaswag: ConnectionError: the Hub cannot be reached. "
            "(recorded in the report; the model is saved)") in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["lm_eval"] is None
    assert report["errors"] == [{"stage": "lm-eval", "error": "lm-eval failed on hellaswag: ConnectionError: the "
                                                              "Hub cannot be reached."}]
    assert report["perplexity_after"]["tokens"] == report["perplexity_before"]["tokens"] > 0
    assert "**lm-eval failed:** lm-eval failed on hellaswag" in (out / "report.md").read_text()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "model").config.num_hidden_layers == 4


def test_an_interrupted_evaluation_keeps_the_saved_model(tiny_model_dir, text_file, tmp_path, capsys, monkeypatch):
    import lmshrink.pipeline.prune as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "evaluate_pruned", interrupted)
    out = tmp_path / "run"
    assert main(_small_prune(tiny_model_dir, text_file, out)) == 130
    assert "lmshrink: interrupted" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "interrupted" and report["perplexity_after"] is None
    assert report["errors"] == [{"stage": "evaluation", "error": "interrupted; the pruned model is saved"}]
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()


def test_overwrite_never_replaces_what_is_not_an_earlier_run(tmp_path, monkeypatch, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(notes)
    for out in (notes, tmp_path, notes / "."):
        assert main(["prune", "--out", str(out), "--overwrite", "--quiet"]) == 2
        assert "--overwrite replaces only an earlier run's output directory" in capsys.readouterr().err
    assert (notes / "thesis.tex").read_text() == "years of work"
