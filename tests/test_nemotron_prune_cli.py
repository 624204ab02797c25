"""End to end: ``lmshrink prune --remove moe=2`` on a tiny Nemotron-H with the Nemotron-3-Nano pattern, solved by
``exact`` and by ``milp``; and ``--granularity sublayer`` on a tiny Llama, saved in lmshrink's format."""

from __future__ import annotations

import importlib
import json

import pytest

from lmshrink.testing import NEMOTRON_3_NANO_PATTERN, single_thread, tiny_llama, tiny_nemotron_h, tiny_tokenizer


def _require_pipeline(solvers=()):
    try:
        importlib.import_module("lmshrink.pipeline.prune")
    except ImportError as exc:
        pytest.skip(f"lmshrink.pipeline.prune is not importable yet: {exc}")
    from lmshrink.plugins import registry

    for name in solvers:
        if name not in registry("solver"):
            pytest.skip(f"solver {name!r} is not registered yet")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


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


def test_prune_moe_exact_and_milp_agree_and_reload(nano_dir, calibration_text, tmp_path):
    _require_pipeline(["exact", "milp"])
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
    _require_pipeline(["exact"])
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
