"""The solver study on a local two-worker Ray cluster gives the serial study's tables, seed for seed
(benchmarks/solvers, ``--ray``)."""

from __future__ import annotations

import csv
import sys

import pytest

from benchmarks.common import Log, write_csv
from benchmarks.executor import RAY_MISSING, Serial
from benchmarks.solvers.study import binary_solvers, generated_cases, parse_args, run, run_all, summarise

#: the columns that measure time: the only ones a run on other processes may change
TIMING = {"time_s", "time_per_run_s", "time_to_target_s", "tts99_s", "raw_tts99_s", "reference_s"}
#: two problems × two seed-dependent solvers × two seeds, small budgets
ARGS = ["--no-model", "--no-nemotron", "--sizes", "10", "--families", "fisher-like,low-spread",
        "--solvers", "anneal,tabu", "--repeats", "2", "--reads", "4", "--quick"]


def untimed(rows: list[dict]) -> list[dict]:
    """The rows without their timing columns."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_study_on_two_ray_workers_reproduces_the_serial_tables(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("matplotlib")
    settings = parse_args([*ARGS, "--out", str(tmp_path / "serial")])
    cases = generated_cases(settings)
    runs, refs, skips = run_all(cases, binary_solvers(settings.solvers), settings, Serial(), Log(quiet=True))
    serial = summarise(cases, refs, runs)
    write_csv(tmp_path / "serial-runs.csv", runs, ["case", "solver", "seed", "energy", "time_s", "indices",
                                                   "raw_energy", "raw_feasible_fraction", "error"])

    out = tmp_path / "ray"
    rec = tmp_path / "records"
    data = run(parse_args([*ARGS, "--out", str(out), "--ray", "--ray-workers", "2", "--record", str(rec)]),
               Log(quiet=True))
    assert data["executor"] == "ray, 2 CPUs of a local cluster"
    assert len(runs) == 2 * (1 + 2 * 2) and not skips and data["case_skips"] == []
    assert untimed(data["summary"]) == untimed(serial)
    assert untimed(read_csv(out / "runs.csv")) == untimed(read_csv(tmp_path / "serial-runs.csv"))
    assert [c["target"] for c in data["cases"]] == [refs[c.name]["energy"] for c in cases]
    # the workers wrote every run's record where the study was asked to
    assert sorted(p.name for p in (rec / "low-spread-N10").iterdir()) == [
        "anneal-seed0", "anneal-seed1", "tabu-seed0", "tabu-seed1"]


def test_ray_without_the_extra_is_refused_in_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SystemExit) as exc:
        run(parse_args([*ARGS, "--out", str(tmp_path), "--ray"]), Log(quiet=True))
    assert str(exc.value) == RAY_MISSING == "--ray needs the ray extra: pip install 'lmshrink[ray]'"
