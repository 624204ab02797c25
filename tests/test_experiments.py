"""Experiment records, their replay and summary, and sweeps under a QPU-time budget, on D-Wave's mock sampler and
a fake IBM device (offline)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmshrink.core import LmshrinkError
from lmshrink.plugins import get_solver
from problems import brute_force, random_problem


def needs(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module)


MOCK = {"sampler": "mock-pegasus", "num_reads": 30, "mock_sweeps": 100}


@pytest.fixture
def problem_file(tmp_path):
    p = random_problem([(6, 2), (4, 1)], seed=5)
    return p, p.save(tmp_path / "problem.json")


# --- records --------------------------------------------------------------------------------------------------------
def test_dwave_record_holds_the_run_and_its_replay_reuses_the_chains(problem_file, tmp_path, capsys):
    needs("dwave.system", "dwave.samplers", "minorminer")
    import dimod

    from lmshrink.cli import main
    from lmshrink.experiments.record import load_record

    p, path = problem_file
    first = tmp_path / "first"
    argv = ["solve", str(path), "--solver", "dwave", "--seed", "1", "--record", str(first), "--option",
            "embedding=minorminer", "--option", "chain_strength=8", "--option", "annealing_time=50"]
    assert main(argv + [f"--option={k}={v}" for k, v in MOCK.items()]) == 0
    assert f"recorded in {first}" in capsys.readouterr().out
    record = load_record(first)
    assert record.meta["solver"]["options"]["embedding"] == "minorminer"
    hw = record.hardware
    assert hw["chain_strength"] == 8.0 and hw["annealing_time_us"] == 50.0 and hw["num_reads"] == 30
    assert hw["qpu_access_time_us"] > hw["qpu_programming_time_us"] > 0
    # the raw reads, as dimod's SampleSet: 30 reads with energies (of the penalty BQM) and chain-break fractions
    sampleset = record.sampleset()
    assert len(sampleset) == 30 and "chain_break_fraction" in sampleset.record.dtype.names
    bqm = dimod.BinaryQuadraticModel.from_serializable(record.artifacts["bqm"])
    np.testing.assert_allclose(sampleset.record.energy, bqm.energies(sampleset), rtol=1e-9)
    X, weights = record.raw_samples()
    assert X.shape == (30, p.num_variables) and weights.sum() == 30
    # the raw summary of the result is the record's sample set, seen by the problem
    feasible = [p.is_feasible(x) for x in X]
    assert record.meta["result"]["raw"]["num_feasible"] == sum(feasible)
    assert not any(f.endswith((".pkl", ".pickle", ".npy")) for f in record.meta["files"].values())

    # replay: the saved embedding with another seed gives the same chains; a fresh minorminer run does not
    chains = record.artifacts["embedding"]["chains"]
    replay = tmp_path / "replay"
    argv = ["solve", str(path), "--solver", "dwave", "--seed", "2", "--record", str(replay), "--option",
            f"embedding={first / 'embedding.json'}"]
    assert main(argv + [f"--option={k}={v}" for k, v in MOCK.items()]) == 0
    again = load_record(replay)
    assert again.artifacts["embedding"]["chains"] == chains
    assert again.hardware["embedding"] == "file"
    fresh = tmp_path / "fresh"
    argv = ["solve", str(path), "--solver", "dwave", "--seed", "2", "--record", str(fresh), "--option",
            "embedding=minorminer"]
    assert main(argv + [f"--option={k}={v}" for k, v in MOCK.items()]) == 0
    assert load_record(fresh).artifacts["embedding"]["chains"] != chains
    # the replay command of the record names the embedding file
    assert f"embedding={first / 'embedding.json'}" in record.meta["replay"]


def test_show_prints_the_summary_and_draws_the_plots(problem_file, tmp_path, capsys):
    needs("dwave.system", "dwave.samplers", "minorminer", "matplotlib")
    from lmshrink.cli import main

    p, path = problem_file
    out = tmp_path / "rec"
    assert main(["solve", str(path), "--solver", "dwave", "--record", str(out)]
                + [f"--option={k}={v}" for k, v in MOCK.items()]) == 0
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("solver: dwave", "chain-break fraction", "QPU access time (µs)", "annealing time (µs): 20",
                     "replay: lmshrink solve", "plot: "):
        assert expected in text
    plots = sorted(q.name for q in (out / "plots").iterdir())
    assert plots == ["chain_breaks.png", "energy_histogram.png"]
    assert all((out / "plots" / q).read_bytes()[:4] == b"\x89PNG" for q in plots)


def test_a_failed_run_writes_no_record_and_a_used_folder_is_refused(problem_file, tmp_path):
    needs("dwave.system", "dwave.samplers", "minorminer")
    from lmshrink.experiments.record import record_run

    p, _ = problem_file
    out = tmp_path / "rec"
    with pytest.raises(LmshrinkError, match="is neither clique nor minorminer nor an embedding file"):
        record_run(p, "dwave", out, options={**MOCK, "embedding": str(tmp_path / "missing.json")})
    assert not out.exists() and not list(tmp_path.glob(".rec.*"))
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(LmshrinkError, match="already exists and is not empty"):
        record_run(p, "dwave", out, options=MOCK)


def test_an_embedding_of_another_problem_is_refused_in_one_sentence(problem_file, tmp_path):
    needs("dwave.system", "dwave.samplers", "minorminer")
    from lmshrink.experiments.record import record_run

    p, _ = problem_file
    record_run(p, "dwave", tmp_path / "rec", options=MOCK)
    other = random_problem([(5, 2)], seed=1)
    with pytest.raises(LmshrinkError, match="embeds 10 variables, the problem has 5"):
        get_solver("dwave", other).solve(other, **MOCK, embedding=str(tmp_path / "rec" / "embedding.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(LmshrinkError, match="is not an embedding file"):
        get_solver("dwave", p).solve(p, **MOCK, embedding=str(bad))


def test_anneal_schedule_is_checked_and_recorded():
    needs("dwave.system", "dwave.samplers", "minorminer")
    p = random_problem([(5, 2)], seed=2)
    solver = get_solver("dwave", p)
    result = solver.solve(p, **MOCK, anneal_schedule=[0, 0, 10, 0.4, 30, 0.4, 40, 1])
    assert result.info["anneal_schedule"] == [[0, 0], [10, 0.4], [30, 0.4], [40, 1]]
    assert result.info["annealing_time_us"] == 40.0
    with pytest.raises(LmshrinkError, match="not both"):
        solver.solve(p, **MOCK, anneal_schedule=[0, 0, 40, 1], annealing_time=40.0)
    with pytest.raises(LmshrinkError, match="is not a forward schedule"):
        solver.solve(p, **MOCK, anneal_schedule=[0, 0, 40, 0.5])


# --- QPU timing and budgets ---------------------------------------------------------------------------------------
def fake_per_read_timing(per_read_us: float):
    """Timing data under which every read costs ``per_read_us`` of QPU access time and programming costs nothing:
    the 20 µs anneal plus a delay, no readout (a flat readout model at 0)."""
    from dwave.cloud.testing.mocks import qpu_problem_timing_data

    data = dict(qpu_problem_timing_data("advantage"))
    data.update(typical_programming_time=0.0, default_programming_thermalization=0.0,
                readout_time_model="pwl_linear", readout_time_model_parameters=[0.0, 1e6, 0.0, 0.0],
                qpu_delay_time_per_sample=per_read_us - data["default_annealing_time"])
    return lambda: data


def test_mock_timing_follows_the_timing_model_and_max_qpu_seconds_refuses_before_sampling(monkeypatch):
    needs("dwave.system", "dwave.samplers", "minorminer")
    import lmshrink.solvers.dwave as dwave
    from lmshrink.core.budget import BudgetExceededError

    monkeypatch.setattr(dwave, "mock_timing_data", fake_per_read_timing(10_000.0))
    p = random_problem([(5, 2)], seed=2)
    solver = get_solver("dwave", p)
    result = solver.solve(p, **{**MOCK, "num_reads": 40})
    assert result.info["qpu_seconds"] == pytest.approx(0.4)  # 40 reads × 10 ms
    assert solver.estimate_qpu_seconds(p, {**MOCK, "num_reads": 40})["seconds"] == pytest.approx(0.4)
    calls = []
    monkeypatch.setattr(dwave.DWaveAnnealer, "_child", _counting_child(dwave.DWaveAnnealer._child, calls))
    with pytest.raises(BudgetExceededError, match="nothing was submitted") as err:
        solver.solve(p, **{**MOCK, "num_reads": 40}, max_qpu_seconds=0.39)
    assert err.value.estimate_s == pytest.approx(0.4)
    assert calls and all(c.sampled == 0 for c in calls)  # the mock never sampled


def _counting_child(make, calls):
    def child(*args, **kwargs):
        sampler = make(*args, **kwargs)
        original = sampler.sample

        def sample(*a, **k):
            sampler.sampled += 1
            return original(*a, **k)

        sampler.sampled = 0
        sampler.sample = sample
        calls.append(sampler)
        return sampler

    return staticmethod(child)


def test_sweep_stops_before_the_point_that_would_exceed_the_budget(problem_file, tmp_path, monkeypatch, capsys):
    needs("dwave.system", "dwave.samplers", "minorminer", "matplotlib")
    import lmshrink.solvers.dwave as dwave
    from lmshrink.cli import main
    from lmshrink.experiments.record import load_record

    monkeypatch.setattr(dwave, "mock_timing_data", fake_per_read_timing(10_000.0))
    p, path = problem_file
    out = tmp_path / "sweep"
    # 100 reads × 10 ms = 1 s per point; 2.5 s pays for two points, the third would take 3 s
    argv = ["sweep", str(path), "--solver", "dwave", "--grid", "chain_strength=4,8,16,32", "--option",
            "sampler=mock-pegasus", "--option", "num_reads=100", "--option", "mock_sweeps=100",
            "--budget-qpu-seconds", "2.5", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "stopped before point 3: its estimate 1 s exceeds the 0.5 s left" in text
    summary = json.loads((out / "sweep.json").read_text())
    assert [r["point"] for r in summary["rows"]] == [1, 2]
    assert summary["spent_s"] == pytest.approx(2.0) and summary["spent_s"] <= 2.5
    assert sorted(q.name for q in out.iterdir() if q.is_dir()) == ["point-01", "point-02"]
    optimum = brute_force(p)[0]
    assert summary["target"] == pytest.approx(optimum) and summary["target_source"].startswith("proven")
    for row in summary["rows"]:
        record = load_record(row["record"])
        assert record.meta["solver"]["options"]["chain_strength"] == row["option.chain_strength"]
        # success: the fraction of the 100 raw reads that are feasible at the optimum, counted independently
        X, w = record.raw_samples()
        hits = sum(wi for x, wi in zip(X, w) if p.is_feasible(x) and p.energy(x) <= optimum + 1e-9)
        assert row["success_probability"] == pytest.approx(hits / 100)
        p_hit = row["success_probability"]
        expected = math.inf if p_hit == 0 else 0.01 if p_hit >= 0.99 else 0.01 * math.log(0.01) / math.log(1 - p_hit)
        assert row["tts99_s"] == pytest.approx(expected)
    assert main(["show", str(out)]) == 0
    assert (out / "plots" / "sweep.png").exists()


def test_dry_run_estimates_every_point_on_the_mock_and_submits_nothing(problem_file, tmp_path, capsys, monkeypatch):
    needs("dwave.system", "dwave.samplers", "minorminer")
    import lmshrink.solvers.dwave as dwave
    from lmshrink.cli import main

    monkeypatch.setattr(dwave, "mock_timing_data", fake_per_read_timing(1000.0))
    monkeypatch.delenv("DWAVE_API_TOKEN", raising=False)  # a dry run needs no credentials
    monkeypatch.setenv("DWAVE_CONFIG_FILE", str(tmp_path / "none.conf"))
    p, path = problem_file
    # sampler=qpu (the default) is replaced by the mock; a read costs 1 ms at 20 µs of anneal, 30 µs more at 50
    argv = ["sweep", str(path), "--solver", "dwave", "--grid", "num_reads=100,300,annealing_time=20,50",
            "--budget-qpu-seconds", "0.51", "--dry-run", "--json", "--quiet"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] and [r["estimate_s"] for r in data["rows"]] == pytest.approx([0.1, 0.103, 0.3, 0.309])
    assert [r["within_budget"] for r in data["rows"]] == [True, True, True, False]
    assert data["stopped"]["point"] == 4 and data["spent_s"] == pytest.approx(0.503)
    assert not list(tmp_path.glob("lmshrink-out*"))
    assert main(argv[:-2]) == 0
    assert "estimated QPU s" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--grid", "chain_strength"], "must look like KEY=V1,V2"),
    (["--grid", "chain_strength=1,chain_strength=2"], "is given twice"),
    (["--grid", "chain_strength="], "gives no value"),
    (["--grid", "chain_strenght=1,2"], "Did you mean 'chain_strength'"),
    (["--grid", "num_reads=10,x"], "num_reads"),
    (["--grid", "num_reads=10", "--option", "num_reads=5"], "both swept"),
    (["--grid", "num_reads=10", "--budget-qpu-seconds", "-1"], "≥ 0"),
])
def test_bad_sweeps_are_refused_in_one_sentence(problem_file, capsys, argv, message):
    needs("dwave.system")
    from lmshrink.cli import main

    _, path = problem_file
    assert main(["sweep", str(path), "--solver", "dwave", "--option", "sampler=mock-pegasus", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmshrink: error: ") and message in err and err.count("\n") == 1


def test_budgets_need_a_solver_that_estimates_its_qpu_time(problem_file, capsys):
    from lmshrink.cli import main

    _, path = problem_file
    assert main(["sweep", str(path), "--solver", "anneal", "--grid", "num_reads=4,8", "--dry-run"]) == 2
    assert "does not estimate its QPU time" in capsys.readouterr().err


def test_show_refuses_a_folder_that_is_no_record(tmp_path, capsys):
    from lmshrink.cli import main

    assert main(["show", str(tmp_path)]) == 2
    assert "is neither a record folder" in capsys.readouterr().err


# --- IBM runtime ----------------------------------------------------------------------------------------------------
def test_qaoa_on_a_fake_ibm_device_in_a_session_is_recorded_with_its_isa_circuit(tmp_path):
    needs("qiskit", "qiskit_optimization", "qiskit_aer", "qiskit_ibm_runtime", "matplotlib")
    from qiskit import qasm3

    from lmshrink.experiments.record import load_record, record_run
    from lmshrink.experiments.show import make_plots
    from lmshrink.solvers.ibm_runtime import fake_backend

    p = random_problem([(3, 1)], seed=3)
    result, path = record_run(p, "qaoa", tmp_path / "rec", num_solutions=2, seed=0,
                              options={"backend": "fake-ibm", "ibm_mode": "session", "maxiter": 4, "shots": 128})
    record = load_record(path)
    hw = record.hardware
    assert hw["execution_mode"] == "session" and "session mode" in hw["device"]
    # depth and two-qubit count are those of the circuit in the device's ISA
    circuit = qasm3.loads(record.artifacts["circuit"]["qasm3"])
    allowed = set(fake_backend(None).operation_names) | {"measure", "barrier"}
    assert set(circuit.count_ops()) <= allowed
    assert hw["circuit_depth"] == circuit.depth() and hw["shots"] == 128
    assert hw["two_qubit_gates"] == sum(1 for inst in circuit.data if inst.operation.num_qubits == 2) > 0
    trace = record.artifacts["optimizer_trace"]
    assert len(trace) == hw["optimizer_evals"] and all(len(t["parameters"]) == 2 for t in trace)
    estimate = hw["device_time_estimate"]
    assert estimate["seconds"] == pytest.approx(5 * 128 * (estimate["circuit_duration_s"] + estimate["rep_delay_s"]))
    assert hw["qpu_seconds"] <= estimate["seconds"]
    X, w = record.raw_samples()
    assert w.sum() == pytest.approx(1.0) and X.shape[1] == 3
    assert {q.name for q in make_plots(record)} == {"energy_histogram.png", "optimizer_trace.png"}


def test_qaoa_refuses_a_run_over_its_device_time_budget_before_running():
    needs("qiskit", "qiskit_optimization", "qiskit_aer", "qiskit_ibm_runtime")
    from lmshrink.core.budget import BudgetExceededError

    p = random_problem([(3, 1)], seed=3)
    with pytest.raises(BudgetExceededError, match="nothing was submitted") as err:
        get_solver("qaoa", p).solve(p, backend="fake-ibm", maxiter=4, shots=128, max_qpu_seconds=1e-6)
    assert err.value.estimate_s > 1e-6


def test_fake_device_names_follow_ibm_names():
    from lmshrink.solvers.ibm_runtime import fake_device_class

    assert fake_device_class(None) == "FakeGuadalupeV2"
    assert fake_device_class("ibm_sherbrooke") == "FakeSherbrooke"
    assert fake_device_class("FakeTorino") == "FakeTorino"


def test_solver_study_records_every_run(tmp_path):
    from benchmarks.common import Log
    from benchmarks.solvers import parse_args, run
    from lmshrink.experiments.record import load_record

    settings = parse_args(["--no-model", "--no-nemotron", "--sizes", "6", "--solvers", "anneal", "--repeats", "2",
                           "--reads", "4", "--out", str(tmp_path / "study"), "--record", str(tmp_path / "rec"),
                           "--quick"])
    run(settings, Log(quiet=True))
    runs = list((tmp_path / "rec" / "fisher-like-N6").iterdir())
    assert sorted(r.name for r in runs) == ["anneal-seed0", "anneal-seed1"]
    for folder in runs:
        record = load_record(folder)
        assert record.meta["solver"]["options"]["num_reads"] == 4
        assert record.meta["run"]["seed"] == int(folder.name[-1])


def test_qaoa_dry_run_estimates_device_time_on_the_fake_device(tmp_path, capsys, monkeypatch):
    needs("qiskit", "qiskit_optimization", "qiskit_aer", "qiskit_ibm_runtime")
    from lmshrink.cli import main

    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)  # a dry run needs no credentials
    monkeypatch.setenv("HOME", str(tmp_path))
    p = random_problem([(3, 1)], seed=3)
    path = p.save(tmp_path / "p.json")
    argv = ["sweep", str(path), "--solver", "qaoa", "--grid", "reps=1,2", "--option", "backend=ibm", "--option",
            "shots=1000", "--option", "maxiter=10", "--dry-run", "--json", "--quiet"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    one, two = (r["estimate_s"] for r in rows)
    # 11 executions × 1000 shots × (circuit + 250 µs repetition delay): a deeper circuit costs a little more
    assert 11 * 1000 * 250e-6 < one < two < 2 * one
