"""The SVD benchmark's method specs and its summary over calibration seeds, against hand-computed values."""

from __future__ import annotations

import csv

import pytest

from benchmarks.svd.run import split_method
from benchmarks.svd.seeds import main, read_seed, summarise


def test_method_specs_name_the_whitening_the_update_the_cost_model_and_the_healing():
    assert split_method("milp-fisher+seq+pivga") == ("milp-fisher", "sequential", "none", True, "none")
    assert split_method("fermigrad+seq+ls") == ("fermigrad", "sequential", "ls", False, "none")
    assert split_method("uniform+pivga") == ("uniform", "dense", "none", True, "none")
    spec = split_method("milp-aligned+seq+pivga+kd")
    assert (spec.allocation, spec.whitening, spec.pivga, spec.heal) == ("milp-aligned", "sequential", True, "kd")
    for bad in ("uniform+pivga+pivga", "milp+ls", "nope", "milp+fast", "milp+kd+kd"):
        with pytest.raises(SystemExit):
            split_method(bad)


def _row(method, ratio, ppl, second, solve=1.0):
    return {"method": method, "ratio": ratio, "perplexity": ppl, "heldout_perplexity": second, "solve_s": solve,
            "refit_s": 0.0, "kept_ratio": ratio}


def test_summary_gives_mean_range_ratio_to_dense_and_the_best_row():
    by_seed = {0: [_row("a", 1.0, 10.0, 40.0), _row("a", 0.8, 14.0, 60.0), _row("b", 0.8, 12.0, 64.0, 3.0),
                   _row("only-0", 0.8, 1.0, 1.0)],
               1: [_row("a", 1.0, 10.0, 40.0), _row("a", 0.8, 16.0, 56.0), _row("b", 0.8, 13.0, 62.0, 5.0)]}
    got = summarise(by_seed, ("pydoc", "literature"))
    assert got["dense"] == {"pydoc": 10.0, "literature": 40.0}
    rows = {(r["method"], r["text"]): r for r in got["rows"]}
    assert ("only-0", "pydoc") not in rows  # not run on every seed
    a = rows["a", "pydoc"]
    assert (a["mean"], a["min"], a["max"], a["per_seed"]) == (15.0, 14.0, 16.0, [14.0, 16.0])
    assert a["vs_dense"] == pytest.approx(1.5)
    assert rows["b", "literature"]["vs_dense"] == pytest.approx(63.0 / 40.0)
    best = {b["text"]: b["method"] for b in got["best"]}
    assert best == {"pydoc": "b", "literature": "a"}
    assert {c["method"]: c["solve_s"] for c in got["costs"]} == {"a": 1.0, "b": 4.0}


def test_a_seed_without_the_dense_row_is_refused():
    with pytest.raises(SystemExit, match="1.0"):
        summarise({0: [_row("a", 0.8, 14.0, 60.0)]}, ("pydoc", None))


def test_two_seeds_on_a_tiny_model_are_run_read_back_and_summarised(tiny_model_dir, tmp_path):
    out = tmp_path / "study"
    argv = ["--seeds", "0", "1", "--out", str(out), "--model", str(tiny_model_dir), "--ratios", "1.0", "0.6",
            "--methods", "uniform", "uniform+pivga", "--samples", "4", "--seq-len", "16", "--eval-tokens", "128"]
    assert main(argv) == 0
    seeds = {s: read_seed(out / f"seed-{s}") for s in (0, 1)}
    import json

    summary = json.loads((out / "summary.json").read_text())
    for row in summary["rows"]:
        values = [next(r["perplexity"] for r in seeds[s] if r["method"] == row["method"] and r["ratio"] == 0.6)
                  for s in (0, 1)]
        assert row["per_seed"] == pytest.approx(values) and row["mean"] == pytest.approx(sum(values) / 2)
    with open(out / "seed-0" / "results.csv", newline="") as fh:
        kept = {r["method"]: float(r["kept_ratio"]) for r in csv.DictReader(fh) if float(r["ratio"]) < 1.0}
    assert kept["uniform"] <= 0.6 + 1e-3 and kept["uniform+pivga"] <= 0.6 + 1e-3
    # a second call reads the seed folders instead of running them again
    before = (out / "seed-0" / "results.csv").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "seed-0" / "results.csv").stat().st_mtime_ns == before
    assert "uniform+pivga" in (out / "report.md").read_text()


@pytest.mark.usefixtures("one_thread")
def test_a_kd_row_heals_the_factored_model_its_sibling_row_scores(tmp_path, tiny_model_dir, text_file):
    """``+kd`` shares the allocation and the sequential factors of its un-healed sibling and distils the result."""
    import json

    from benchmarks.svd.run import main as run_main

    out = tmp_path / "run"
    assert run_main(["--model", str(tiny_model_dir), "--data", str(text_file), "--heldout-data", str(text_file),
                     "--ratios", "1.0", "0.6", "--methods", "uniform+seq+pivga", "uniform+seq+pivga+kd",
                     "--samples", "4", "--seq-len", "24", "--eval-tokens", "96",
                     "--kd-option", "steps=3", "batch_size=2", "lr=0.01", "--out", str(out)]) == 0
    rows = {r["method"]: r for r in read_seed(out) if r["ratio"] == 0.6}
    plain, healed = rows["uniform+seq+pivga"], rows["uniform+seq+pivga+kd"]
    assert plain["kept_ratio"] == healed["kept_ratio"] and plain["heal_s"] == 0.0 < healed["heal_s"]
    assert healed["refit_s"] == plain["refit_s"]  # one sequential refit for both rows
    assert healed["perplexity"] != plain["perplexity"]
    runs = {r["method"]: r for r in json.loads((out / "runs.json").read_text())}
    assert runs["uniform+seq+pivga+kd"]["kd"]["config"]["steps"] == 3
    assert "kd" not in runs["uniform+seq+pivga"]
