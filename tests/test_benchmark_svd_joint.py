"""benchmarks/svd/joint.py on a tiny Llama: every (ratio, mode, truncation term) row, feasible and scored."""

from __future__ import annotations

import json

import pytest

from benchmarks.svd.joint import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_joint_benchmark_writes_every_row(tmp_path, tiny_model_dir, text_file):
    out = tmp_path / "out"
    assert main(["--model", str(tiny_model_dir), "--data", str(text_file), "--heldout", str(text_file),
                 "--ratios", "0.6", "--samples", "4", "--seq-len", "24", "--loss-windows", "2", "--probe-layers", "1",
                 "--grid-step", "4", "--eval-tokens", "96", "--unseen-samples", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert [(r["mode"], r["term"]) for r in rows] == [
        ("removal", "-"), ("svd", "probes"), ("joint", "probes"), ("svd", "fisher"), ("joint", "fisher"),
        ("svd", "fisher-unseen"), ("joint", "fisher-unseen"), ("svd", "fisher-scaled"), ("joint", "fisher-scaled")]
    for r in rows:
        assert r["kept"] <= r["budget"] and r["ppl_" + str(text_file)] > 0
    svd_fisher, scaled = rows[3], rows[7]
    assert all(r["real_unseen"] is not None for r in rows)
    assert scaled["kappa"] == pytest.approx(max(svd_fisher["real"], 0) / svd_fisher["estimate"])
    assert rows[0]["factored"] == 0 and rows[1]["removed"] == 0
    assert "| 0.6 | joint | fisher-scaled |" in (out / "report.md").read_text()
