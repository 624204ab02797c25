"""The solver study's baseline row, its hard families and its equal-time budget (benchmarks/solvers)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("matplotlib")

from benchmarks.common import Log  # noqa: E402
from benchmarks.solvers.study import BASELINE, UNBOUNDED_EFFORT, budget, parse_args, run  # noqa: E402
from lmshrink.plugins import get_solver  # noqa: E402
from problems import brute_force  # noqa: E402


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    settings = parse_args(["--no-model", "--no-nemotron", "--sizes", "16", "--solvers", "exact,anneal",
                           "--repeats", "2", "--reads", "4", "--equal-time", "0.3", "--out", str(out), "--quick"])
    return run(settings, Log(quiet=True)), out


def test_every_family_gets_the_baseline_and_a_proven_target(summary):
    data, out = summary
    cases = {c["case"]: c for c in data["cases"]}
    assert set(cases) == {"fisher-like-N16", "low-spread-N16", "planted-N16"}
    assert cases["planted-N16"]["reference"] == "construction" and cases["planted-N16"]["target"] == 0.0
    from lmshrink import load_problem

    for name, case in cases.items():
        optimum, _ = brute_force(load_problem(out / "problems" / f"{name}.json"))
        assert case["proven"] and case["target"] == pytest.approx(optimum, abs=1e-9)
    rows = {(r["case"], r["solver"]): r for r in data["summary"]}
    # greedy + swap descent misses the optimum of the hard families, and the exact solver beats it there
    for name in ("low-spread-N16", "planted-N16"):
        assert rows[(name, BASELINE)]["success_p"] == 0.0 and rows[(name, "exact")]["vs_baseline"] == "better"
    assert rows[("fisher-like-N16", "exact")]["vs_baseline"] == "same"
    report = (out / "report.md").read_text()
    assert "## Best run against the baseline" in report and "**Equal time**" in report


def test_equal_time_runs_the_heuristic_until_the_limit(summary):
    data, _ = summary
    assert data["solvers"]["anneal"]["budget"] == {"num_reads": 4, "num_sweeps": UNBOUNDED_EFFORT}
    assert data["solvers"]["exact"]["budget"] == {}
    anneal = [r for r in data["summary"] if r["solver"] == "anneal"]
    assert all(r["time_per_run_s"] >= 0.3 for r in anneal)
    assert budget(get_solver("anneal"), 4) == {"num_reads": 4}


def test_the_baseline_is_greedy_then_swap_descent():
    from lmshrink.solvers.kernels.instances import planted_problem
    from lmshrink.solvers.repair import swap_descent
    from benchmarks.solvers.study import Case, baseline_run

    p = planted_problem(14, 4, seed=3)
    row = baseline_run(Case("p", "planted", p))
    diag = p.linear + np.diag(p.quadratic)
    start = np.zeros((1, 14), dtype=np.int8)
    start[0, np.argsort(diag, kind="stable")[:4]] = 1
    assert row["energy"] == pytest.approx(float(p.energies(swap_descent(p, start))[0]), abs=1e-9)


@pytest.mark.parametrize("args, words", [(["--families", "fisher-like,hard"], "unknown family hard"),
                                         (["--equal-time", "0"], "--equal-time must be a positive")])
def test_bad_study_arguments_are_refused(args, words, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(args)
    assert exc.value.code == 2 and words in capsys.readouterr().err
