"""The benchmark harness: its statistics, and small versions of both studies end to end."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import hits, rankdata, spearman, tts  # noqa: E402


def test_tts_arithmetic():
    assert tts(2.0, 0.0) == math.inf
    assert tts(2.0, 1.0) == 2.0
    assert tts(2.0, 0.99) == 2.0  # one run already reaches 99 %
    assert tts(2.0, 0.5) == pytest.approx(2.0 * math.log(0.01) / math.log(0.5))  # 13.29 s: 6.64 runs
    assert tts(1.0, 0.1) == pytest.approx(43.7086, rel=1e-5)
    assert tts(3.0, 0.9, confidence=0.9) == 3.0
    with pytest.raises(ValueError):
        tts(1.0, 1.5)


def test_hits_relative_tolerance():
    assert hits([1.0, 1.0 + 5e-10, 1.0 + 2e-9], 1.0).tolist() == [True, True, False]
    assert hits([1000.0 + 5e-7, 1000.0 + 2e-6], 1000.0).tolist() == [True, False]
    assert hits([1e-12, 2e-9], 0.0).tolist() == [True, False]  # absolute near zero


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for k in range(20):
        x = rng.normal(size=12)
        y = x + rng.normal(size=12) * (k / 5)
        if k % 3 == 0:  # ties on both sides
            x, y = np.round(x, 0), np.round(y, 0)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    np.testing.assert_allclose(rankdata([3, 1, 3, 2]), stats.rankdata([3, 1, 3, 2]))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_removal_study_small(tiny_model_dir, tmp_path):
    stats = pytest.importorskip("scipy.stats")
    pytest.importorskip("matplotlib")
    from benchmarks.common import Log
    from benchmarks.removal import parse_args, run

    out = tmp_path / "removal"
    settings = parse_args(["--model", str(tiny_model_dir), "--quick", "--remove", "1,2", "--samples", "6",
                           "--seq-len", "32", "--loss-samples", "2", "--eval-tokens", "256", "--top-k", "4",
                           "--pairs", "on", "--out", str(out)])
    summary = run(settings, Log(quiet=True))
    for name in ("report.md", "results.csv", "states.csv", "spearman.csv", "summary.json", "perplexity_vs_m.png",
                 "energy_vs_loss.png", "removal_maps.png", "method_choices.png", "problems/fisher_M2.json"):
        assert (out / name).exists(), name
    rows = _read_csv(out / "results.csv")
    methods = {r["method"] for r in rows}
    assert {"fisher", "fisher+rerank", "fisher-fo", "pairs", "pairs+rerank", "block-influence", "norm-ratio",
            "block-influence-iterative", "angular", "sleb"} <= methods
    assert all(len(r["removed"].split()) == int(r["M"]) for r in rows)
    # every model is scored on the same tokens
    assert len({r["tokens"] for r in rows}) == 1
    # the Spearman figure is the rank correlation of states.csv's energies and losses
    states = _read_csv(out / "states.csv")
    for s in summary["spearman"]:
        st = [r for r in states if r["objective"] == s["objective"] and int(r["M"]) == s["M"]]
        e, loss = [float(r["energy"]) for r in st], [float(r["loss"]) for r in st]
        expected = stats.spearmanr(e, loss).statistic
        if math.isnan(expected):
            assert math.isnan(s["spearman"])
        else:
            assert s["spearman"] == pytest.approx(expected, abs=1e-12)
    # the re-ranked choice has the lowest measured loss among the K lowest states
    for m in (1, 2):
        st = [r for r in states if r["objective"] == "fisher" and int(r["M"]) == m]
        rer = next(r for r in rows if r["method"] == "fisher+rerank" and int(r["M"]) == m)
        assert float(rer["calibration_loss"]) == pytest.approx(min(float(r["loss"]) for r in st))
    # pairs is exact for one removal: its choice is sleb's first step
    p1 = next(r for r in rows if r["method"] == "pairs" and r["M"] == "1")
    s1 = next(r for r in rows if r["method"] == "sleb" and r["M"] == "1")
    assert p1["removed"] == s1["removed"]
    report = (out / "report.md").read_text()
    assert "## Held-out perplexity" in report and "| fisher |" in report and "Spearman" in report


def test_solver_study_small(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.common import Log
    from benchmarks.solvers import parse_args, run
    from lmshrink import load_problem

    out = tmp_path / "solvers"
    settings = parse_args(["--no-model", "--no-nemotron", "--sizes", "6,10", "--solvers", "exact,anneal",
                           "--repeats", "2", "--reads", "4", "--out", str(out), "--quick"])
    summary = run(settings, Log(quiet=True))
    for name in ("report.md", "runs.csv", "summary.csv", "cases.csv", "summary.json", "tts99.png", "success.png"):
        assert (out / name).exists(), name
    rows = {(r["case"], r["solver"]): r for r in summary["summary"]}
    for n in (6, 10):
        case = f"fisher-like-N{n}"
        exact = rows[(case, "exact")]
        assert exact["runs"] == 1 and exact["success_p"] == 1.0 and exact["target_proven"]
        assert exact["tts99_s"] == exact["time_per_run_s"]
        ann = rows[(case, "anneal")]
        assert ann["runs"] == 2
        assert ann["tts99_s"] == pytest.approx(tts(ann["time_per_run_s"], ann["success_p"]))
        problem = load_problem(out / "problems" / f"{case}.json")
        assert problem.num_variables == n and problem.constraints[0].equals == n // 4
    runs = _read_csv(out / "runs.csv")
    assert len(runs) == 2 * (1 + 2)
    assert "## TTS99" in (out / "report.md").read_text()
    data = json.loads((out / "summary.json").read_text())
    assert data["solvers"]["anneal"]["budget"] == {"num_reads": 4}


def test_nemotron_pattern_problem():
    from benchmarks.common import Log
    from benchmarks.solvers.study import NEMOTRON_PATTERN, NEMOTRON_REMOVE, Settings, nemotron_case

    pytest.importorskip("lmshrink.adapters.nemotron_h")
    cases, notes = nemotron_case(Settings(), Log(quiet=True), samples=4, seq_len=16)
    if notes:
        pytest.skip(str(notes))
    (case,) = cases
    p = case.problem
    assert p.num_variables == len(NEMOTRON_PATTERN) == 52
    sizes = {c.name: (len(c.indices), c.equals) for c in p.constraints}
    assert sizes["remove:mamba"] == (23, NEMOTRON_REMOVE["mamba"])
    assert sizes["remove:moe"] == (23, NEMOTRON_REMOVE["moe"])
    assert sizes["remove:attention"] == (6, NEMOTRON_REMOVE["attention"])
