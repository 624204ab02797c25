"""benchmarks/inference --quick: a tiny random model, three variants timed against it, the report, and a rerun
that finds the built variants instead of building them again."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.inference.study import parse_args, render, run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = "blocks-1,svd-0.6-pivga,svd-0.6-pivga-timed"


def _args(out: Path) -> list[str]:
    return ["--quick", "--variants", VARIANTS, "--dtypes", "float32", "--devices", "cpu", "--batches", "1,2",
            "--threads", "1", "--quiet", "--out", str(out)]


def _matrix_macs(m: int, n: int, rank: int | None, kind: str) -> int:
    if rank is None:
        return m * n
    return rank * (m + n) - (rank * rank if kind == "pivga" and rank * (m + n) > m * n else 0)


def test_quick_run_reports_ratios_beside_the_multiply_add_share(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSHRINK_CACHE", str(tmp_path / "cache"))
    data = run(parse_args(_args(tmp_path)))
    rows = {r["variant"]: r for r in data["rows"]}
    assert list(rows) == VARIANTS.split(",")
    # the tiny model: 5 layers of hidden 64 (4 heads, 2 KV heads of 16), MLP 160, vocab 320, tied head
    layer = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 160
    head = 320 * 64
    assert rows["blocks-1"]["dense_macs"] == {"decoder": 5 * layer, "head": head}
    assert math.isclose(rows["blocks-1"]["mac_share"]["decode"], (4 * layer + head) / (5 * layer + head))
    # the SVD variant's share from the ranks its saved model records
    saved = tmp_path / "variants" / "svd-0.6-pivga" / "run" / "model" / "lmshrink_config.json"
    ranks = next(t for t in json.loads(saved.read_text())["transforms"] if t["type"] == "pivga")["layers"]
    shapes = {"q_proj": (64, 64), "k_proj": (32, 64), "v_proj": (32, 64), "o_proj": (64, 64),
              "gate_proj": (160, 64), "up_proj": (160, 64), "down_proj": (64, 160)}
    macs = 0
    for k in range(5):
        for part, names in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                            ("mlp", ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                macs += _matrix_macs(*shapes[name], ranks.get(f"model.layers.{k}.{part}.{name}"), "pivga")
    assert ranks and rows["svd-0.6-pivga"]["macs"]["decoder"] == macs
    for r in rows.values():
        for key in ("prefill_b1", "prefill_b2", "decode_b1", "decode_b2"):
            assert r[key]["speedup"] > 0 and math.isfinite(r[key]["speedup"])
        assert r["device"].startswith("cpu") and r["threads"] == 1 and r["dtype"] == "float32"
        assert 0 < r["disk_bytes"] and 0 < r["weight_bytes"]
    assert rows["blocks-1"]["disk_bytes"] < rows["blocks-1"]["dense_disk_bytes"]
    report = (tmp_path / "report.md").read_text()
    assert "## cpu" in report and "float32, 1 thread" in report
    assert "| blocks-1 (remove 1 blocks, healed (linear)) | 0.817 | 0.817 | 1.22× |" in report
    assert render(json.loads((tmp_path / "results.json").read_text())) == report

    # a rerun finds every variant built and only times
    import lmshrink

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a cached variant")

    monkeypatch.setattr(lmshrink, "prune", no_build)
    monkeypatch.setattr(lmshrink, "svd_compress", no_build)
    again = run(parse_args(_args(tmp_path) + ["--reps", "1"]))
    assert [r["variant"] for r in again["rows"]] == VARIANTS.split(",")


def test_bad_arguments_are_refused():
    for argv in (["--dtypes", "float8"], ["--reps", "0"]):
        with pytest.raises(SystemExit):
            parse_args(argv)


@pytest.mark.parametrize("folder,quoting", [("", ("benchmarks/README.md", "docs/guide/inference.md")),
                                            ("bfloat16", ("docs/guide/inference.md",)),
                                            ("batch8", ("docs/guide/inference.md",))])
def test_quoted_inference_tables_are_the_reference_run(folder, quoting):
    """The tables in benchmarks/README.md and docs/guide/inference.md are the ones the reference results render."""
    reference = ROOT / "benchmarks" / "reference" / "inference" / folder
    data = json.loads((reference / "results.json").read_text())
    rendered = render(data)
    assert rendered == (reference / "report.md").read_text()
    rows = [line for line in rendered.splitlines() if line.startswith("| ") and "×" in line]
    assert len(rows) == len(data["rows"])
    for path in quoting:
        text = (ROOT / path).read_text()
        assert all(row in text for row in rows), path


def test_variants_are_timed_each_in_a_fresh_process_unless_asked():
    assert parse_args([]).isolate and not parse_args(["--in-process"]).isolate
    assert not parse_args(["--quick"]).isolate  # CI: seconds, one process
