"""Held-out texts of other domains (``--eval-data``): scored at every stage of prune, svd and heal runs, recorded
in the report, printed, and equal to a direct perplexity of the saved model."""

from __future__ import annotations

import json

import pytest
import torch

from lmshrink import prune
from lmshrink.cli import main
from lmshrink.compress.io import load_compressed
from lmshrink.data import evaluation_ids, load_texts
from lmshrink.evaluate.perplexity import perplexity
from lmshrink.pipeline.svd import svd_compress
from lmshrink.report.prune import prune_summary
from lmshrink.report.schema import load_report
from lmshrink.report.svd import svd_summary

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(samples=4, seq_len=16, validation=4, eval_tokens=160, eval_window=32, progress=False)


@pytest.fixture(scope="module")
def other_text(tmp_path_factory):
    """A text of another domain than the calibration's: English sentences, not Python documentation."""
    words = ("the river ran past the old mill and the children sang of summer while the baker "
             "closed his shop at noon because the weather had turned").split()
    lines = [" ".join(words[(k * 7) % len(words):] + words[:(k * 7) % len(words)]) + "." for k in range(120)]
    path = tmp_path_factory.mktemp("other") / "story.txt"
    path.write_text("\n\n".join(lines))
    return path


def _direct(model, tokenizer, path, tokens=160, window=32):
    ids = evaluation_ids(tokenizer, load_texts(str(path)), tokens)
    with torch.no_grad():
        return perplexity(model, ids, window=window, progress=False)


def test_prune_scores_the_other_text_before_removed_and_healed(tiny_model_dir, text_file, other_text, tmp_path):
    result = prune(str(tiny_model_dir), remove=2, data=str(text_file), objective="fisher", solver="exact",
                   heal="linear", heal_options={"aware": False}, eval_data=[str(other_text)], out=tmp_path / "run",
                   **SMALL)
    scores = result.report.other_texts[str(other_text)]
    assert list(scores) == ["before", "unhealed", "after"]
    # the healed score is the saved model's perplexity on that text's held-out part, computed directly
    after = _direct(result.model, result.tokenizer, other_text)
    assert scores["after"]["perplexity"] == pytest.approx(after["perplexity"], rel=1e-6)
    assert scores["after"]["tokens"] == after["tokens"]
    assert len({round(s["perplexity"], 6) for s in scores.values()}) == 3
    # written to report.json (read back as it was), report.md and the printed summary
    assert load_report(result.out / "report.json").other_texts == result.report.other_texts
    assert "## Held-out perplexity on other texts" in (result.out / "report.md").read_text()
    line = prune_summary(result.report)[-1]
    assert line.startswith(f"{other_text}: perplexity ") and " removed -> " in line and line.endswith(
        f"healed on {after['tokens']} held-out tokens")


def test_without_other_texts_the_report_has_no_such_key(tiny_model_dir, text_file, tmp_path):
    result = prune(str(tiny_model_dir), remove=1, data=str(text_file), objective="fisher", solver="exact",
                   out=tmp_path / "run", **SMALL)
    assert "other_texts" not in json.loads((result.out / "report.json").read_text())


def test_svd_and_heal_score_the_other_text(tiny_model_dir, text_file, other_text, tmp_path):
    run = svd_compress(str(tiny_model_dir), out=tmp_path / "svd", ratio=0.6, solver="uniform",
                       data=[str(text_file)], samples=4, seq_len=16, eval_tokens=160, eval_window=32,
                       progress=False, eval_data=[str(other_text)])
    scores = run.report.other_texts[str(other_text)]
    assert list(scores) == ["before", "after"]
    reloaded = load_compressed(run.out / "model")
    assert scores["after"]["perplexity"] == pytest.approx(
        _direct(reloaded, run.tokenizer, other_text)["perplexity"], rel=1e-5)
    assert svd_summary(run.report)[-1].startswith(f"{other_text}: perplexity ")
    code = main(["heal", str(run.out / "model"), "--data", str(text_file), "--samples", "4", "--seq-len", "16",
                 "--eval-tokens", "160", "--eval-window", "32", "--heal-option", "steps=2", "--heal-option",
                 "batch_size=2", "--eval-data", str(other_text), "--out", str(tmp_path / "healed"), "--quiet"])
    assert code == 0
    healed = load_report(tmp_path / "healed" / "report.json").other_texts[str(other_text)]
    assert healed["before"]["perplexity"] == pytest.approx(scores["after"]["perplexity"], rel=1e-5)
    assert list(healed) == ["before", "after"]


@pytest.mark.parametrize("args, message", [
    (["--eval-data", "missing.txt", "--remove", "1"], "No such file: missing.txt"),
    (["--eval-data", "prose", "--no-eval", "--remove", "1"], "--eval-data scores held-out texts, which --no-eval"),
])
def test_bad_other_texts_are_refused_in_one_sentence(tiny_model_dir, tmp_path, capsys, args, message):
    code = main(["prune", "--model", str(tiny_model_dir), *args, "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_compress_scores_the_other_text(tiny_model_dir, text_file, other_text, tmp_path):
    from lmshrink.pipeline.compress import compress_model
    from lmshrink.report.compress import compress_summary

    result = compress_model(str(tiny_model_dir), ratio=0.6, samples=6, seq_len=32, loss_windows=4, probe_layers=1,
                            data=str(text_file), eval_tokens=160, eval_window=32, eval_data=[str(other_text)],
                            out=tmp_path / "out", progress=False, solver_options={"grid_step": 4})
    scores = result.report.other_texts[str(other_text)]
    assert list(scores) == ["before", "after"]
    assert scores["after"]["perplexity"] == pytest.approx(
        _direct(result.model, result.tokenizer, other_text)["perplexity"], rel=1e-6)
    assert compress_summary(result.report)[-1].startswith(f"{other_text}: perplexity ")
    assert "## Held-out perplexity on other texts" in (result.out / "report.md").read_text()
