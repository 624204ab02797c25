"""End to end: ``lmshrink prune --remove moe=2`` on a tiny Nemotron-H with the Nemotron-3-Nano pattern, solved by
``exact`` and by ``milp``; and ``--granularity sublayer`` on a tiny Llama, saved in lmshrink's format."""

from __future__ import annotations

import json

import pytest

from lmshrink.testing import NEMOTRON_3_NANO_PATTERN, tiny_llama, tiny_nemotron_h, tiny_tokenizer
from tiny import needs_transformers


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nano_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-nemotron-nano")
    tiny_nemotron_h(NEMOTRON_3_NANO_PATTERN).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def calibration_text(tmp_path_factory):
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("text") / "docs.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics)[:10]))
    return path


def _prune(model_dir, text, out, *extra):
    from lmshrink.cli import main

    argv = ["prune", "--model", str(model_dir), "--data", str(text), "--samples", "8", "--seq-len", "32",
            "--no-eval", "--quiet", "--out", str(out), *extra]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text())


@needs_transformers("nemotron_h")
def test_prune_moe_exact_and_milp_agree_and_reload(nano_dir, calibration_text, tmp_path):
    from transformers import AutoModelForCausalLM

    from lmshrink.adapters.nemotron_h import pattern_of

    removed = {}
    for solver in ("exact", "milp"):
        report = _prune(nano_dir, calibration_text, tmp_path / solver, "--remove", "moe=2", "--solver", solver)
        removed[solver] = report["removed"]
        assert [b["kind"] for b in report["removed"]] == ["moe", "moe"]
        assert all(NEMOTRON_3_NANO_PATTERN[b["index"]] == "E" for b in report["removed"])
        config = json.loads((tmp_path / solver / "model" / "config.json").read_text())
        assert len(config["layers_block_type"]) == 50
    assert removed["exact"] == removed["milp"]

    gone = {b["index"] for b in removed["exact"]}
    left = "".join(c for i, c in enumerate(NEMOTRON_3_NANO_PATTERN) if i not in gone)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "exact" / "model")
    assert len(model.model.layers) == 50 and pattern_of(model.config) == left
    assert model.config.hybrid_override_pattern == left


def test_prune_sublayer_saves_lmshrink_format(calibration_text, tmp_path):
    import lmshrink
    from lmshrink.adapters.sublayer import RemovedAttention

    model_dir = tmp_path / "llama"
    tiny_llama().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    report = _prune(model_dir, calibration_text, tmp_path / "out", "--granularity", "sublayer",
                    "--remove", "attention=1", "--solver", "exact")
    assert [b["kind"] for b in report["removed"]] == ["attention"]
    saved = tmp_path / "out" / "model"
    assert (saved / "lmshrink_config.json").exists()
    model = lmshrink.load_compressed(saved)
    layer = report["removed"][0]["layer"]
    assert isinstance(model.model.layers[layer].self_attn, RemovedAttention)


@needs_transformers("nemotron_h")
def test_a_request_the_architecture_cannot_run_is_refused_before_solving(nano_dir, calibration_text, tmp_path, capsys):
    from lmshrink.cli import main

    out = tmp_path / "all-attention"
    argv = ["prune", "--model", str(nano_dir), "--data", str(calibration_text), "--samples", "4", "--seq-len", "16",
            "--no-eval", "--quiet", "--out", str(out), "--remove", "attention=6", "--solver", "exact"]
    assert main(argv) == 2
    assert "Keep at least one attention block" in capsys.readouterr().err
    assert not (out / "problem.json").exists()  # refused before the gradients were taken


@needs_transformers("nemotron_h")
def test_candidates_the_architecture_cannot_run_are_skipped(nano_dir, calibration_text, tmp_path):
    # "M*E*" with 2 of {attention, moe} removed: 3 candidates, one of which ({1, 3}) drops every attention block
    model_dir = tmp_path / "tiny"
    tiny_nemotron_h("M*E*").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    report = _prune(model_dir, calibration_text, tmp_path / "out", "--remove", "2", "--kinds", "attention,moe",
                    "--solver", "exact", "--top-k", "3")
    removed = {b["index"] for b in report["removed"]}
    assert removed != {1, 3}  # both attention blocks: never chosen
    skipped = [c for c in report["candidates"] if c["error"]]
    assert [set(c["indices"]) for c in skipped] == [{1, 3}]
    valid = [c for c in report["candidates"] if not c["error"]]
    assert report["plan"]["energy"] == valid[0]["energy"]
