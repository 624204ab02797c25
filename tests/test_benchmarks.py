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
    pytest.importorskip("matplotlib")
    import copy
    import json

    import torch

    from benchmarks.common import Log
    from benchmarks.removal import parse_args, run
    from lmshrink.data import evaluation_ids, load_texts
    from lmshrink.evaluate.loss import per_sample_loss
    from lmshrink.models import load_model
    from lmshrink.plugins import find_adapter

    out = tmp_path / "removal"
    settings = parse_args(["--model", str(tiny_model_dir), "--quick", "--remove", "1,2", "--samples", "6",
                           "--seq-len", "32", "--search-samples", "4", "--validation", "4", "--eval-tokens", "256",
                           "--eval-window", "64", "--top-k", "3", "--kd", "2", "--kd-steps", "2", "--out", str(out)])
    summary = run(settings, Log(quiet=True))
    for name in ("report.md", "results.csv", "kd.csv", "summary.json", "perplexity_vs_m.png", "seed-0.json",
                 "seed-1.json"):
        assert (out / name).exists(), name
    rows = _read_csv(out / "results.csv")
    keys = {(r["seed"], r["method"], r["M"], r["healed"]) for r in rows}
    methods = {"fisher", "fisher-fo", "pairs", "block-influence", "norm-ratio", "block-influence-iterative",
               "angular", "sleb", "portfolio", "portfolio (heal-aware)", "surrogate", "surrogate@half",
               "portfolio+surrogate", "portfolio+surrogate (heal-aware)", "default", "default (--heal none)"}
    assert {(s, m, M, h) for s in "01" for m in methods for M in "12" for h in ("none", "linear")} <= keys
    assert all(len(r["removed"].split()) == int(r["M"]) for r in rows)

    # a row's held-out perplexity is that of a really pruned copy on the same windows
    loaded = load_model(str(tiny_model_dir))
    adapter = find_adapter(loaded.model)
    ids = evaluation_ids(loaded.tokenizer, load_texts(None), 256).reshape(-1, 64)
    row = next(r for r in rows if r["method"] == "sleb" and r["M"] == "2" and r["healed"] == "none")
    pruned = adapter.remove(copy.deepcopy(loaded.model), [int(v) for v in row["removed"].split()])
    with torch.no_grad():
        expected = math.exp(float(per_sample_loss(pruned, ids).double().mean()))
    assert float(row["perplexity"]) == pytest.approx(expected, rel=1e-5)

    # the portfolio's choice has the lowest validation loss among its candidates
    seed0 = json.loads((out / "seed-0.json").read_text())
    for m, candidates in seed0["portfolio_tables"].items():
        chosen = next(r for r in seed0["rows"] if r["method"] == "portfolio+surrogate" and r["M"] == int(m))
        assert chosen["validation_loss"] == pytest.approx(min(c["loss"] for c in candidates))
    # the default rows are lmshrink.prune's choice: heal-aware, and without healing the lowest unhealed loss
    import lmshrink

    chosen = lmshrink.prune(str(tiny_model_dir), remove=2, seed=1, samples=6, seq_len=32, validation=4,
                            evaluate=False, save=False, progress=False, out=tmp_path / "p")
    row = next(r for r in rows if r["method"] == "default" and r["M"] == "2" and r["seed"] == "1")
    assert [int(v) for v in row["removed"].split()] == sorted(chosen.plan.indices)
    cands = [c for c in chosen.report["candidates"] if c["error"] is None and c.get("loss_unhealed") is not None]
    plain = min(cands, key=lambda c: c["loss_unhealed"])
    row = next(r for r in rows if r["method"] == "default (--heal none)" and r["M"] == "2" and r["seed"] == "1")
    assert [int(v) for v in row["removed"].split()] == sorted(plain["indices"])
    # pairs is exact for one removal and measures the same first samples as sleb: the same choice
    for s in "01":
        p1 = next(r for r in rows if r["method"] == "pairs" and r["M"] == "1" and r["seed"] == s)
        s1 = next(r for r in rows if r["method"] == "sleb" and r["M"] == "1" and r["seed"] == s)
        assert p1["removed"] == s1["removed"]
    # ratios are ratios of the seed means
    for r in summary["ratios"]:
        plain = r["plain"]
        assert plain["ratio"] == pytest.approx(plain["ours"] / plain["baseline"])
    report = (out / "report.md").read_text()
    assert "## lmshrink against the best baseline" in report and "| sleb |" in report and "KD healing" in report
    assert "| default (--heal none) |" in report
    # surrogate search against SLEB: the search loss each found (mean over seeds) and the held-out ratio
    section = report.split("## Surrogate search against SLEB")[1].split("##")[0]
    line = next(row for row in section.splitlines() if row.startswith("| 2 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    pick = lambda method, healed="none": [r for r in rows if r["method"] == method and r["M"] == "2"  # noqa: E731
                                          and r["healed"] == healed]
    assert cells[1] == "0, 1"
    for col, method in ((3, "sleb"), (4, "surrogate"), (5, "surrogate@half")):
        assert float(cells[col]) == pytest.approx(np.mean([float(r["search_loss"]) for r in pick(method)]), abs=1e-4)
    sleb, ours = (np.mean([float(r["perplexity"]) for r in pick(m)]) for m in ("sleb", "surrogate"))
    assert float(cells[6]) == pytest.approx(sleb, abs=0.01)
    assert float(cells[7].split()[1].strip("(")) == pytest.approx(ours / sleb, abs=1e-3)


def test_removal_study_skip(tiny_model_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.common import Log
    from benchmarks.removal import parse_args, run

    with pytest.raises(SystemExit):
        parse_args(["--skip", "surogate"])
    out = tmp_path / "removal"
    argv = ["--model", str(tiny_model_dir), "--quick", "--remove", "2", "--seeds", "0", "--samples", "6",
            "--seq-len", "32", "--search-samples", "4", "--validation", "4", "--eval-tokens", "256", "--eval-window",
            "64", "--top-k", "2", "--skip", "surrogate,default,sleb", "--no-pairs", "--out", str(out)]
    settings = parse_args(argv)
    assert settings.skip == ["default", "pairs", "sleb", "surrogate"]
    summary = run(settings, Log(quiet=True))
    methods = {r["method"] for s in summary["seeds"] for r in s["rows"]}
    assert methods == {"fisher", "fisher-fo", "block-influence", "norm-ratio", "block-influence-iterative",
                       "angular", "portfolio", "portfolio (heal-aware)"}
    assert summary["ratios"][0]["plain"]["row"] == "portfolio"
    assert "`sleb`: left out (--skip)" in (out / "report.md").read_text()

    # --refresh chooses the pipeline rows again from the stored candidates: with the same code, the same rows
    first = {(r["method"], r["M"], r["healed"]): r for r in summary["seeds"][0]["rows"]}
    refreshed = run(parse_args([*argv, "--refresh"]), Log(quiet=True))
    again = {(r["method"], r["M"], r["healed"]): r for r in refreshed["seeds"][0]["rows"]}
    assert again.keys() == first.keys()
    for key, row in first.items():
        assert again[key]["removed"] == row["removed"], key
        assert again[key]["perplexity"] == pytest.approx(row["perplexity"], rel=1e-6), key
    assert refreshed["seeds"][0]["refreshed"]["rows"] == ["portfolio", "portfolio (heal-aware)"]
    assert "`--refresh`" in (out / "report.md").read_text()


def test_removal_study_grows_by_rows_and_m_values(tiny_model_dir, tmp_path, monkeypatch):
    """Rows and M values added later (to a finished folder, or by merging two folders) give the rows of one run."""
    pytest.importorskip("matplotlib")
    import json
    import shutil

    from benchmarks.common import Log
    from benchmarks.removal import parse_args, run
    from benchmarks.removal.combine import CombineError, merge_seeds
    from benchmarks.removal.study import main

    def argv(out, remove, skip, kd=""):
        return ["--model", str(tiny_model_dir), "--quick", "--remove", remove, "--seeds", "0", "--samples", "6",
                "--seq-len", "32", "--search-samples", "4", "--validation", "4", "--eval-tokens", "256",
                "--eval-window", "64", "--top-k", "2", "--skip", skip, "--kd", kd, "--out", str(out)]

    def rows(summary):
        return {(r["method"], r["M"], r["healed"]): (r["removed"], r["perplexity"])
                for sd in summary["seeds"] for r in sd["rows"]}

    whole_run = run(parse_args(argv(tmp_path / "whole", "1,2", "default", kd="1")), Log(quiet=True))
    whole = rows(whole_run)
    first = run(parse_args(argv(tmp_path / "grown", "2", "default,pairs,surrogate")), Log(quiet=True))
    assert not any(m in ("pairs", "surrogate") for m, _, _ in rows(first))
    tables = json.loads((tmp_path / "grown" / "seed-0.json").read_text())["portfolio_tables"]["2"]
    for c in tables:  # every candidate keeps its per-window validation losses
        assert len(c["loss_windows"]) == 4 and np.mean(c["loss_windows"]) == pytest.approx(c["loss"], rel=1e-12)
    shutil.copytree(tmp_path / "grown", tmp_path / "merged")
    # adds pairs and surrogate search at M = 2 (the portfolios drawing on them chosen again), then runs M = 1;
    # the validation meter measures none of the candidates the seed kept
    from lmshrink.evaluate.measured import RemovalLoss

    remembered, measured = [], []
    real_remember, real_measure = RemovalLoss.remember, RemovalLoss._measure

    def remember(meter, removed, estimate):
        remembered.append((meter, frozenset(removed)))
        return real_remember(meter, removed, estimate)

    def measure(meter, removed, runs):
        measured.append((meter, frozenset(removed), runs is None))
        return real_measure(meter, removed, runs)

    monkeypatch.setattr(RemovalLoss, "remember", remember)
    monkeypatch.setattr(RemovalLoss, "_measure", measure)
    grown = run(parse_args(argv(tmp_path / "grown", "1,2", "default")), Log(quiet=True))
    monkeypatch.undo()
    assert {s for _, s in remembered} == {frozenset(c["indices"]) for c in tables}
    (valid,) = {meter for meter, _ in remembered}
    assert not {s for meter, s, plain in measured if meter is valid and plain} & {s for _, s in remembered}
    got = rows(grown)
    assert got.keys() == whole.keys()
    for key, (removed, ppl) in whole.items():
        assert got[key][0] == removed, key
        assert got[key][1] == pytest.approx(ppl, rel=1e-6), key
    seed = json.loads((tmp_path / "grown" / "seed-0.json").read_text())
    assert seed["settings"]["remove"] == [1, 2] and seed["settings"]["skip"] == ["default"]
    assert [p["remove"] for p in seed["parts"]] == [[2], [2], [1]] and "pairs" in seed["parts"][1]["rows"]
    assert "rows " in (tmp_path / "grown" / "report.md").read_text()
    # KD healing added to the finished seed: the row a run with --kd makes
    grown = run(parse_args(argv(tmp_path / "grown", "1,2", "default", kd="1")), Log(quiet=True))
    (kd,), (want,) = grown["seeds"][0]["kd"], whole_run["seeds"][0]["kd"]
    assert kd["removed"] == want["removed"] and grown["seeds"][0]["settings"]["kd"] == [1]
    for key in ("perplexity_linear", "perplexity_kd"):
        assert kd[key] == pytest.approx(want[key], rel=1e-5), key
    assert grown["seeds"][0]["parts"][-1]["rows"] == ["kd"]

    # rows added to a seed with several M values, one M at a time: a growth stopped after M = 1 resumes at M = 2
    import benchmarks.removal.study as study

    run(parse_args(argv(tmp_path / "steps", "1,2", "default,pairs,surrogate")), Log(quiet=True))
    real_add_rows = study.add_rows

    def stop_at_m2(settings, *args, **kwargs):
        if settings.remove == [2]:
            raise KeyboardInterrupt
        return real_add_rows(settings, *args, **kwargs)

    monkeypatch.setattr(study, "add_rows", stop_at_m2)
    with pytest.raises(KeyboardInterrupt):
        run(parse_args(argv(tmp_path / "steps", "1,2", "default")), Log(quiet=True))
    monkeypatch.undo()
    stopped = json.loads((tmp_path / "steps" / "seed-0.json").read_text())
    assert {r["M"] for r in stopped["rows"] if r["method"] == "pairs"} == {1}
    assert stopped["settings"]["skip"] == ["default", "pairs", "surrogate"]
    steps = run(parse_args(argv(tmp_path / "steps", "1,2", "default")), Log(quiet=True))
    assert rows(steps).keys() == whole.keys() - {k for k in whole if k[0].startswith("default")}
    for key, (removed, ppl) in rows(steps).items():
        assert removed == whole[key][0] and ppl == pytest.approx(whole[key][1], rel=1e-6), key
    seed = steps["seeds"][0]
    assert [p["remove"] for p in seed["parts"]] == [[1, 2], [1], [2]] and seed["settings"]["skip"] == ["default"]

    # surrogate search added alone: the portfolio rows stay as saved (nothing new in their pool), the
    # portfolio+surrogate rows are those of the whole run
    run(parse_args(argv(tmp_path / "surrogate", "1,2", "default,surrogate")), Log(quiet=True))
    saved = json.loads((tmp_path / "surrogate" / "seed-0.json").read_text())
    added = run(parse_args(argv(tmp_path / "surrogate", "1,2", "default")), Log(quiet=True))["seeds"][0]
    assert rows({"seeds": [added]}).keys() == whole.keys() - {k for k in whole if k[0].startswith("default")}
    for key, (removed, ppl) in rows({"seeds": [added]}).items():
        assert removed == whole[key][0] and ppl == pytest.approx(whole[key][1], rel=1e-6), key
    kept = [r for r in saved["rows"] if r["method"].startswith("portfolio")]
    assert kept and all(r in added["rows"] for r in kept)
    assert {label for p in added["parts"][1:] for label in p["rows"]} == {
        "surrogate", "surrogate@half", "portfolio+surrogate", "portfolio+surrogate (heal-aware)"}

    # M = 1 run apart, merged: its rows are those of the whole run (M = 2 still without pairs and surrogate)
    run(parse_args(argv(tmp_path / "other", "1", "default")), Log(quiet=True))
    assert main(["--merge", str(tmp_path / "other"), str(tmp_path / "merged")]) == 0
    merged = rows(json.loads((tmp_path / "merged" / "summary.json").read_text()))
    assert {k for k in whole if k[1] == 1} | set(rows(first)) == merged.keys()
    for key, (removed, ppl) in merged.items():
        assert removed == whole[key][0] and ppl == pytest.approx(whole[key][1], rel=1e-6), key
    assert "(M = 2) +" in (tmp_path / "merged" / "report.md").read_text()
    # the report says which seeds stand behind an M that not every seed has
    from benchmarks.removal.report import _coverage

    other_seed = {"seed": 5, "rows": [r for r in seed["rows"] if r["M"] == 2]}
    assert _coverage([seed, other_seed], [1, 2]) == (" Not every seed has every M: M = 1 from seed 0 (means, spreads "
                                                     "and ratios there are over those seeds).")
    assert _coverage([seed], [1, 2]) == ""
    # results of different draws or overlapping M values do not combine
    with pytest.raises(CombineError, match="both runs have M"):
        merge_seeds(seed, seed)
    with pytest.raises(CombineError, match="settings differ"):
        merge_seeds(seed, {**seed, "settings": {**seed["settings"], "remove": [3], "samples": 7}})


def test_solver_study_small(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.common import Log
    from benchmarks.solvers import parse_args, run
    from lmshrink import load_problem

    out = tmp_path / "solvers"
    settings = parse_args(["--no-model", "--no-nemotron", "--sizes", "6,10", "--solvers", "exact,anneal",
                           "--repeats", "2", "--reads", "4", "--out", str(out), "--quick", "--families", "fisher-like"])
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
    assert len(runs) == 2 * (1 + 2 + 1)  # exact, two anneal seeds, the baseline
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


def test_removal_plot_takes_seeds_that_agree(tmp_path):
    """Three seeds with the same perplexity: their mean rounds above the max, and the error bars stay ≥ 0."""
    pytest.importorskip("matplotlib")
    from benchmarks.removal.report import _plots, aggregate

    x = 23.43261545011135
    rows = [{"seed": s, "method": "sleb", "M": 4, "healed": h, "perplexity": x, "search_evaluations": 114,
             "validation_evaluations": 0, "seconds": 1.0} for s in range(3) for h in ("none", "linear")]
    agg = aggregate(rows)
    assert agg[("sleb", 4, "none")]["max"] < agg[("sleb", 4, "none")]["mean"]  # the rounding the plot must take
    assert _plots(tmp_path, agg, [4], {"held_out": {"perplexity": 14.05, "tokens": 8192}})


def test_removal_report_names_rows_priced_without_their_measurement():
    from benchmarks.removal.report import _unpriced

    rows = [{"seed": s, "method": m, "M": 4, "cached_unpriced": m == "pairs" and s > 0} for s in (0, 1, 2)
            for m in ("pairs", "fisher")]
    assert _unpriced({"seeds": [{"rows": rows}]}) == [
        "Seconds without the measurement (read from a disk-cache entry of an earlier run that did not keep what it "
        "cost): `pairs` on seeds 1, 2.", ""]
    assert _unpriced({"seeds": [{"rows": rows[:2]}]}) == []


def test_removal_ratio_compares_the_seeds_both_rows_have():
    from benchmarks.removal.report import _compare

    grown_on_one = {"per_seed": {0: 10.0}}
    every_seed = {"per_seed": {0: 8.0, 1: 12.0, 2: 13.0}}
    c = _compare(grown_on_one, every_seed)
    assert (c["ours"], c["baseline"], c["ratio"], c["seeds"], c["ours_sd"]) == (10.0, 8.0, 1.25, [0], 0.0)
    c = _compare({"per_seed": {0: 9.0, 2: 13.0}}, every_seed)
    assert c["ratio"] == pytest.approx(22.0 / 21.0) and c["baseline_sd"] == pytest.approx(np.std([8.0, 13.0], ddof=1))
    assert (c["per_seed_min"], c["per_seed_max"]) == (1.0, 1.125)
    assert _compare({"per_seed": {5: 1.0}}, every_seed) is None


def test_removal_report_says_which_seeds_a_partial_comparison_covers():
    from benchmarks.removal.report import _compare, _mean_sd, _ratio, _subset

    every_seed = {"per_seed": {0: 8.0, 1: 12.0, 2: 13.0}}
    one = _compare({"per_seed": {0: 10.0}}, every_seed)
    assert (_ratio(one), _mean_sd(one["ours"], one["ours_sd"], one["seeds"])) == ("1.250", "10.00")
    assert _subset(one["seeds"], [0, 1, 2]) == " (seed 0)"
    two = _compare({"per_seed": {0: 9.0, 2: 13.0}}, every_seed)
    assert _ratio(two) == "1.048 [1.000–1.125]" and _subset(two["seeds"], [0, 1, 2]) == " (seeds 0, 2)"
    assert _mean_sd(two["baseline"], two["baseline_sd"], two["seeds"]) == "10.50 ± 3.54"
    assert _subset([0, 1, 2], [0, 1, 2]) == ""


def test_removal_study_prices_a_shared_cached_measurement_once(tiny_model_dir, tmp_path, monkeypatch):
    """An objective read from the disk cache is priced at what its measurement cost when made, and two objectives
    built on one entry (fisher and fisher-fo; block-influence and norm-ratio) count it once."""
    from benchmarks.common import Log
    from benchmarks.removal import parse_args
    from benchmarks.removal.seed_run import SeedMeasures, run_sources
    from lmshrink.cache import SECONDS, cache_dir
    from lmshrink.data import load_texts
    from lmshrink.models import load_model
    from lmshrink.plugins import find_adapter

    monkeypatch.setenv("LMSHRINK_CACHE", str(tmp_path / "cache"))
    settings = parse_args(["--model", str(tiny_model_dir), "--quick", "--remove", "1", "--samples", "6",
                           "--seq-len", "32", "--search-samples", "4", "--validation", "4", "--top-k", "2"])
    loaded = load_model(settings.model)
    model, adapter, texts = loaded.model.eval(), find_adapter(loaded.model), load_texts(settings.data)
    labels = ["fisher", "fisher-fo", "block-influence", "norm-ratio"]

    def sources():
        measures = SeedMeasures(settings, 0, model, adapter, loaded.tokenizer, texts)
        return measures, run_sources(settings, measures, labels, Log(quiet=True))

    _, made = sources()
    entries = {label: made.problems[label].metadata["measurement"] for label in labels}
    assert entries["fisher"] == entries["fisher-fo"] != entries["block-influence"] == entries["norm-ratio"]
    for entry in set(entries.values()):  # what each measurement "cost" when made: far above any build from the cache
        path = cache_dir() / f"{entry}.npz"
        with np.load(path) as npz:
            arrays = dict(npz)
        np.savez(path, **{**arrays, SECONDS: np.asarray(1000.0)})
    measures, read = sources()
    assert all(read.problems[label].metadata["cached_measurement"] for label in labels)
    seconds = measures.clock.seconds
    assert seconds["fisher"] > 1000 > seconds["fisher-fo"] and seconds["block-influence"] > 1000 > seconds["norm-ratio"]
    # each row on its own still says what its choice cost, measurement included
    assert all(read.choices[(label, 1)].seconds > 1000 for label in labels)
