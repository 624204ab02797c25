"""lm-eval on in-memory models with the shipped offline task: the API, ``lmshrink eval`` and ``prune --eval-tasks``."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")

from lmshrink.evaluate.lm_eval import LOCAL_TASK, parse_tasks, run_lm_eval  # noqa: E402
from lmshrink.evaluate.tasks import TASKS_DIR  # noqa: E402


def test_local_task_items_are_well_formed():
    rows = [json.loads(line) for line in (TASKS_DIR / "pydoc_cloze.jsonl").read_text().splitlines()]
    assert len(rows) >= 300
    from pydoc_data.topics import topics

    for row in rows[:50]:
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        assert 0 <= row["label"] < 4
        true = row["context"] + " " + row["choices"][row["label"]]
        assert true in " ".join(topics[row["topic"]].split())  # a real sentence of that topic
    assert (TASKS_DIR / "pydoc_cloze.yaml").exists()


def test_parse_tasks():
    assert parse_tasks("hellaswag,arc_easy") == ["hellaswag", "arc_easy"]
    assert parse_tasks(["local", "mmlu arc_easy", "mmlu"]) == [LOCAL_TASK, "mmlu", "arc_easy"]


def test_run_lm_eval_in_memory():
    from lmshrink.core import LmshrinkError

    from tiny import tiny_llama, tiny_tokenizer

    model, tok = tiny_llama(2), tiny_tokenizer()
    result = run_lm_eval(model, tok, [LOCAL_TASK], limit=6, batch_size=4)
    metrics = {r["metric"]: r for r in result["scores"]}
    assert set(metrics) == {"acc", "acc_norm"}
    assert all(0 <= r["value"] <= 1 and r["task"] == LOCAL_TASK for r in metrics.values())
    assert result["n_samples"][LOCAL_TASK]["effective"] == 6
    with pytest.raises(LmshrinkError, match="Unknown lm-eval task 'lmshrink_pydoc_clze'. Did you mean 'lmshrink_pydoc_cloze'"):
        run_lm_eval(model, tok, ["lmshrink_pydoc_clze"], limit=2)


def test_eval_cli_on_transformers_and_lmshrink_dirs(tiny_model_dir, tmp_path, capsys):
    import lmshrink
    from lmshrink.cli import main

    assert main([
        "eval", str(tiny_model_dir), "--tasks", LOCAL_TASK, "--limit", "4", "--out", str(tmp_path / "e1"), "--json",
    ]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {r["metric"] for r in printed["scores"]} == {"acc", "acc_norm"}
    assert (tmp_path / "e1" / "lm_eval.json").exists() and (tmp_path / "e1" / "lm_eval.md").exists()

    # a sub-layer removal is saved in lmshrink's own format; lm-eval runs on it too, and prune --eval-tasks
    # puts the scores of the pruned model into its report
    run = tmp_path / "pruned"
    result = lmshrink.prune(str(tiny_model_dir), remove=1, granularity="sublayer", kinds=["attention"], samples=4,
                            seq_len=32, eval_tokens=128, out=run, progress=False, eval_tasks="local", eval_limit=4)
    assert result.report["saved_format"] == "lmshrink"
    assert {r["metric"] for r in result.report["lm_eval"]["scores"]} == {"acc", "acc_norm"}
    assert "## lm-eval (pruned model)" in (run / "report.md").read_text()
    assert main(["eval", str(run / "model"), "--tasks", "local", "--limit", "4"]) == 0
    assert "acc_norm" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "lmshrink_pydoc_clze"], "Unknown lm-eval task 'lmshrink_pydoc_clze'. Did you mean "
                                         "'lmshrink_pydoc_cloze'?"),
    (["--batch-size", "x"], "--batch-size must be 'auto' or a whole number of at least 1, not 'x'."),
    (["--limit", "0"], "--limit must be a count or a fraction above 0, not 0.0."),
])
def test_eval_cli_refuses_bad_input_before_loading(argv, message, tiny_model_dir, capsys, monkeypatch):
    import lmshrink.models
    from lmshrink.cli import main

    monkeypatch.setattr(lmshrink.models, "load_model", lambda *a, **k: pytest.fail("loaded before refusing"))
    assert main(["eval", str(tiny_model_dir), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lmshrink: error: {message}")
