"""benchmarks/scale: a tiny model through two stages, the table, the ratio line and the plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.scale.study import parse_args, render, run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_gradients_and_svd(tmp_path):
    args = parse_args(["--sizes", "tiny", "--samples", "2", "--seq-len", "32", "--batch-size", "2",
                       "--stages", "gradients,svd", "--in-process", "--quiet", "--out", str(tmp_path)])
    data = run(args)
    stages = [r["stage"] for r in data["rows"]]
    assert stages == ["forward", "gate gradients", "svd whitening"]
    grad = data["rows"][1]
    assert grad["tokens"] == 64 and grad["finite"] and grad["ratio_to_forward"] > 0
    assert all(r["peak_rss_gib"] >= r["rss_start_gib"] > 0 and r["model_rss_gib"] > 0 for r in data["rows"])
    assert data["rows"][2]["whitened_layers"] == 1 and data["rows"][2]["matrices"] == 7
    report = (tmp_path / "report.md").read_text()
    assert "| tiny | 5 | gate gradients | 64 |" in report
    assert "tiny (5 M parameters), 64 tokens, gate gradients: **" in report
    assert "what earlier stages left" in report
    assert (tmp_path / "scale.png").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert render(saved).startswith("# Scale benchmark")


def test_bad_stage_and_size_are_refused():
    for argv in (["--stages", "gradients,nope"], ["--sizes", "2b"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
