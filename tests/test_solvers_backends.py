"""Backend-specific checks of the binary solvers: milp's proof, dwave's mock QPUs, QAOA's circuits, fermigrad's
gradient, the greedy repair, dimod samplers, missing extras and credentials, and the CLI."""

from __future__ import annotations

import importlib
import json
import re
import sys

import numpy as np
import pytest

from lmshrink.core import (
    BinaryQuadraticProblem,
    Constraint,
    LmshrinkError,
    MissingCredentialsError,
    MissingDependencyError,
    ProblemTooLargeError,
)
from lmshrink.plugins import get_solver
from problems import brute_force, fisher_problem, random_problem


def needs(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module)


def one_sentence(message: str) -> bool:
    """One sentence: no sentence end before the last character (dots inside names like a.b() are fine)."""
    return len(re.findall(r"[.!?](?=\s+[A-Z])", message.strip())) == 0 and "\n" not in message


# --- repair -------------------------------------------------------------------------------------------------------
def test_greedy_repair_makes_every_row_feasible_and_leaves_free_variables_alone():
    from lmshrink.solvers.repair import repair, swap_descent

    p = random_problem([(6, 2), (5, 3)], free=3, seed=1)
    X = np.random.default_rng(0).integers(0, 2, (60, p.num_variables))
    R, changed = repair(p, X)
    assert all(p.is_feasible(r) for r in R)
    feasible_before = np.array([p.is_feasible(x) for x in X])
    assert (changed == ~feasible_before).all()
    free = list(p.free_indices)
    assert (R[:, free] == X[:, free]).all()
    assert (repair(p, X)[0] == R).all()  # deterministic
    D = swap_descent(p, R)
    assert all(p.is_feasible(d) for d in D)
    assert (p.energies(D) <= p.energies(R) + 1e-12).all()


def test_greedy_repair_takes_the_cheapest_flip():
    # too many ones: the one whose removal lowers the energy most goes first
    p = BinaryQuadraticProblem(
        ["a", "b", "c"], [1.0, 5.0, 3.0], np.zeros((3, 3)), constraints=[Constraint((0, 1, 2), 1)]
    )
    from lmshrink.solvers.repair import repair

    R, _ = repair(p, np.array([[1, 1, 1]]))
    assert R.tolist() == [[1, 0, 0]]
    R, _ = repair(p, np.array([[0, 0, 0]]))
    assert R.tolist() == [[1, 0, 0]]


# --- milp ---------------------------------------------------------------------------------------------------------
def test_milp_proves_a_fisher_problem_n80_m8_and_anneal_agrees():
    needs("pyomo.environ", "highspy")
    p = fisher_problem(80, 8, seed=0)
    milp = get_solver("milp", p).solve(p, seed=0)
    assert milp.info["optimal"] is True
    assert milp.info["gap"] == pytest.approx(0.0, abs=1e-6)
    assert milp.time_s < 60
    anneal = get_solver("anneal", p).solve(p, seed=0)
    assert anneal.best.energy >= milp.best.energy - 1e-9 * abs(milp.best.energy)
    assert anneal.best.energy == pytest.approx(milp.best.energy, rel=1e-9)


def test_milp_sparse_couplings_use_valid_rlt_rows():
    needs("pyomo.environ", "highspy")
    p = random_problem([(7, 3), (5, 2)], free=2, seed=21)
    Q = p.quadratic.copy()
    mask = np.random.default_rng(0).random(Q.shape) < 0.6
    mask = mask | mask.T
    Q[mask] = 0.0
    sparse = BinaryQuadraticProblem(p.variables, p.linear, Q, p.offset, p.constraints)
    result = get_solver("milp", sparse).solve(sparse, num_solutions=4)
    _, energies = brute_force(sparse)
    np.testing.assert_allclose(result.energies, energies[:4], rtol=1e-9, atol=1e-9)
    assert result.info["num_products"] < 14 * 13 / 2


def test_milp_time_limit_returns_the_best_found_with_its_gap():
    needs("pyomo.environ", "highspy")
    p = fisher_problem(80, 8, seed=1, spread=0.2)
    result = get_solver("milp", p).solve(p, time_limit=0.5)
    assert p.is_feasible(result.best.x)
    assert result.info["optimal"] is False
    assert result.info["gap"] is None or result.info["gap"] > 0


# --- dwave --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["mock-pegasus", "mock-zephyr"])
def test_dwave_mock_topologies_report_qpu_facts(sampler):
    needs("dwave.system", "dwave.samplers", "minorminer")
    p = random_problem([(6, 2), (5, 2)], free=1, seed=5)
    # a weak penalty leaves infeasible reads for the greedy repair
    result = get_solver("dwave", p).solve(p, num_solutions=3, seed=1, sampler=sampler, num_reads=30,
                                          mock_sweeps=200, penalty=0.05)
    info = result.info
    assert info["topology"]["type"] == sampler.split("-")[1]
    assert info["num_repaired"] > 0
    assert all(p.is_feasible(s.x) for s in result)
    assert info["qpu_access_time_us"] > 0 and info["qpu_anneal_time_per_sample_us"] > 0
    assert 0.0 <= info["chain_break_fraction"] <= 1.0
    assert info["max_chain_length"] >= 2  # a 12-clique needs chains
    assert result.best.energy == pytest.approx(brute_force(p)[0])


def test_dwave_minorminer_embedding_and_size_limit():
    needs("dwave.system", "dwave.samplers", "minorminer")
    p = random_problem([(8, 3)], seed=6)
    result = get_solver("dwave", p).solve(p, sampler="mock-zephyr", embedding="minorminer", seed=2, num_reads=20)
    assert result.info["embedding"] == "minorminer"
    assert result.best.energy == pytest.approx(brute_force(p)[0])
    big = fisher_problem(60, 6, seed=0)
    with pytest.raises(ProblemTooLargeError, match="clique-embed at most"):
        get_solver("dwave", big).solve(big, sampler="mock-pegasus", mock_shape=[4])
    # without a mock_shape the mock graph grows (P4 → P8) until the problem's clique fits
    grown = get_solver("dwave", big).solve(big, sampler="mock-pegasus", num_reads=4, mock_sweeps=20, seed=0)
    assert grown.info["topology"] == {"type": "pegasus", "shape": [8]}
    assert all(big.is_feasible(s.x) for s in grown)


@pytest.fixture
def no_dwave_credentials(monkeypatch, tmp_path):
    empty = tmp_path / "dwave.conf"
    empty.write_text("")
    monkeypatch.delenv("DWAVE_API_TOKEN", raising=False)
    monkeypatch.setenv("DWAVE_CONFIG_FILE", str(empty))


@pytest.mark.parametrize("name", ["dwave", "dwave-hybrid"])
def test_dwave_without_credentials_says_so_in_one_sentence_before_importing_ocean(name, no_dwave_credentials,
                                                                                   monkeypatch):
    needs("dwave.cloud")
    for module in ("dimod", "dwave.system", "dwave.samplers"):
        monkeypatch.setitem(sys.modules, module, None)  # importing any of them would fail
    p = random_problem([(6, 2)], seed=0)
    with pytest.raises(MissingCredentialsError) as err:
        get_solver(name, p).solve(p)
    assert "DWAVE_API_TOKEN" in str(err.value)
    assert one_sentence(str(err.value))


@pytest.mark.parametrize("name, factory", [("dwave", "DWaveSampler"), ("dwave-hybrid", "LeapHybridCQMSampler")])
@pytest.mark.parametrize("error, expected", [
    ("SolverAuthenticationError", "The token was refused by D-Wave Leap"),
    ("RequestTimeout", "D-Wave Leap could not be reached"),
])
def test_dwave_with_a_refused_token_says_so_in_one_sentence(name, factory, error, expected, monkeypatch):
    needs("dwave.system", "dwave.cloud")
    import dwave.cloud.exceptions as exceptions
    import dwave.system

    def refuse(*args, **kwargs):
        raise getattr(exceptions, error)("Invalid token or access denied")

    monkeypatch.setenv("DWAVE_API_TOKEN", "not-a-valid-token")
    monkeypatch.setattr(dwave.system, factory, refuse)
    p = random_problem([(6, 2)], seed=0)
    with pytest.raises(MissingCredentialsError) as err:
        get_solver(name, p).solve(p)
    assert str(err.value).startswith(expected) and error in str(err.value)
    assert one_sentence(str(err.value))


# --- qaoa ---------------------------------------------------------------------------------------------------------
def test_dicke_state_and_xy_mixer_keep_the_hamming_weight():
    needs("qiskit")
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Statevector

    from lmshrink.solvers.qaoa import dicke_state, xy_circuits

    for n in range(2, 7):
        for k in range(0, n + 1):
            qc = QuantumCircuit(n)
            dicke_state(qc, list(range(n)), k)
            probs = Statevector(qc).probabilities()
            weight = np.array([bin(i).count("1") for i in range(2**n)])
            np.testing.assert_allclose(probs, (weight == k) / (weight == k).sum(), atol=1e-10)
    p = random_problem([(4, 2), (3, 1)], seed=0)
    for mixer in ("ring", "complete"):
        init, mix = xy_circuits(p, mixer)
        state = Statevector(init.compose(mix.assign_parameters([0.37])))
        probs = state.probabilities()
        ok = [i for i in range(2**7) if p.is_feasible([(i >> q) & 1 for q in range(7)])]
        assert probs[ok].sum() == pytest.approx(1.0, abs=1e-10)


def test_restrict_keeps_energies():
    from lmshrink.solvers.qaoa import restrict

    p = random_problem([(5, 2), (4, 2)], free=2, seed=3)
    fixed = {0: 1, 3: 0, p.free_indices[0]: 1}
    sub, keep = restrict(p, fixed)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, sub.num_variables)
        x = np.zeros(p.num_variables, dtype=int)
        x[keep] = y
        for i, v in fixed.items():
            x[i] = v
        assert sub.energy(y) == pytest.approx(p.energy(x))
        assert sub.is_feasible(y) == p.is_feasible(x)


def test_qaoa_xy_is_always_feasible_and_reports_circuit_facts():
    needs("qiskit", "qiskit_optimization")
    p = random_problem([(4, 2), (3, 1)], free=1, seed=7)
    result = get_solver("qaoa", p).solve(p, num_solutions=3, seed=0, maxiter=20, backend="statevector")
    info = result.info
    assert info["measured_feasible_fraction"] == pytest.approx(1.0)
    assert info["num_repaired"] == 0
    assert info["circuit_depth"] > 0 and info["two_qubit_gates"] > 0 and info["optimizer_evals"] > 0
    assert 0 < info["p_optimal"] <= 1
    assert info["num_fixed"] == 0
    assert result.best.energy == pytest.approx(brute_force(p)[0])


def test_qaoa_penalty_formulation_repairs_and_reduction_reports_fixed_variables():
    needs("qiskit", "qiskit_optimization")
    p = random_problem([(10, 3)], seed=8)
    result = get_solver("qaoa", p).solve(p, num_solutions=3, seed=0, formulation="penalty", max_qubits=6,
                                         maxiter=20, backend="statevector")
    info = result.info
    assert info["num_fixed"] == 4 and info["num_qubits"] == 6
    assert set(info["fixed_variables"]) <= set(p.variables)
    assert info["num_repaired"] > 0
    assert all(p.is_feasible(s.x) for s in result)


def test_qaoa_aer_backend():
    needs("qiskit", "qiskit_optimization", "qiskit_aer")
    p = random_problem([(5, 2)], seed=9)
    result = get_solver("qaoa", p).solve(p, seed=0, backend="aer", maxiter=15)
    assert result.info["device"] == "AerSimulator"
    assert result.best.energy == pytest.approx(brute_force(p)[0])


def _small_hardware_run(p):
    return get_solver("qaoa", p).solve(p, num_solutions=2, seed=0, backend="fake-ibm", maxiter=6, shots=256)


def test_qaoa_fake_ibm_hardware_path_is_noisy_but_repaired():
    needs("qiskit", "qiskit_optimization", "qiskit_aer")
    p = random_problem([(4, 2)], seed=10)
    result = _small_hardware_run(p)
    info = result.info
    expected = "FakeGuadalupeV2" if importlib.util.find_spec("qiskit_ibm_runtime") else "GenericBackendV2"
    assert expected in info["device"]
    assert all(p.is_feasible(s.x) for s in result)
    assert info["measured_feasible_fraction"] < 1.0  # noise leaves the Hamming-weight subspace
    assert info["two_qubit_gates"] > 0


def test_qaoa_fake_ibm_falls_back_to_generic_backend_without_runtime(monkeypatch):
    needs("qiskit", "qiskit_optimization", "qiskit_aer")
    monkeypatch.setitem(sys.modules, "qiskit_ibm_runtime", None)
    p = random_problem([(4, 2)], seed=10)
    result = _small_hardware_run(p)
    assert "GenericBackendV2" in result.info["device"]
    assert all(p.is_feasible(s.x) for s in result)


def test_qaoa_ibm_without_credentials_says_so_in_one_sentence_before_importing_qiskit(monkeypatch, tmp_path):
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.qiskit/qiskit-ibm.json
    for module in ("qiskit", "qiskit_optimization", "qiskit_ibm_runtime"):
        monkeypatch.setitem(sys.modules, module, None)  # importing any of them would fail
    p = random_problem([(4, 2)], seed=0)
    with pytest.raises(MissingCredentialsError) as err:
        get_solver("qaoa", p).solve(p, backend="ibm")
    assert "QISKIT_IBM_TOKEN" in str(err.value)
    assert one_sentence(str(err.value))
    # a saved account counts as credentials
    (tmp_path / ".qiskit").mkdir()
    (tmp_path / ".qiskit" / "qiskit-ibm.json").write_text('{"default-ibm-quantum": {"token": "t"}}')
    from lmshrink.solvers.qaoa import has_ibm_credentials

    assert has_ibm_credentials()


@pytest.mark.parametrize("error, expected", [
    ("InvalidAccountError", "The token was refused by IBM Quantum"),
    ("IBMNotAuthorizedError", "The token was refused by IBM Quantum"),
])
def test_qaoa_ibm_with_a_refused_token_says_so_in_one_sentence(error, expected, monkeypatch):
    needs("qiskit", "qiskit_optimization", "qiskit_ibm_runtime")
    import qiskit_ibm_runtime
    import qiskit_ibm_runtime.accounts as accounts
    import qiskit_ibm_runtime.exceptions as exceptions

    cls = getattr(accounts, error, None) or getattr(exceptions, error)

    def refuse(**kwargs):
        raise cls("Unable to retrieve instances. Check that you are using a valid API token.")

    monkeypatch.setenv("QISKIT_IBM_TOKEN", "not-a-valid-token")
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", refuse)
    p = random_problem([(4, 2)], seed=0)
    with pytest.raises(MissingCredentialsError) as err:
        get_solver("qaoa", p).solve(p, backend="ibm", maxiter=2)
    assert str(err.value).startswith(expected) and error in str(err.value)
    assert one_sentence(str(err.value))


# --- fermigrad ----------------------------------------------------------------------------------------------------
def test_fermigrad_occupations_keep_particle_number_and_have_the_implicit_gradient():
    torch = pytest.importorskip("torch")
    from lmshrink.solvers.fermigrad import FermiGradRelaxation

    p = random_problem([(6, 2), (5, 3)], free=2, seed=4)
    groups = [(torch.as_tensor(c.indices), c.equals) for c in p.constraints]
    free = torch.as_tensor(p.free_indices)
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(3, p.num_variables, generator=gen, dtype=torch.float64, requires_grad=True)
    T = 0.3

    def occ(e):
        return FermiGradRelaxation._occupations(torch, e, T, groups, free, p.num_variables, 60)

    n = occ(eps)
    for idx, m in groups:
        np.testing.assert_allclose(n[:, idx].sum(dim=1).detach().numpy(), m, atol=1e-9)
    # d/dε of a linear functional through μ(ε), against central finite differences
    w = torch.randn(p.num_variables, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((occ(eps) @ w).sum(), eps)
    h = 1e-6
    fd = torch.zeros(eps.shape[1], dtype=torch.float64)
    with torch.no_grad():
        for i in range(eps.shape[1]):  # first row; the rows are independent
            e1, e2 = eps.clone(), eps.clone()
            e1[0, i] += h
            e2[0, i] -= h
            fd[i] = ((occ(e1) @ w).sum() - (occ(e2) @ w).sum()) / (2 * h)
    np.testing.assert_allclose(grad[0].numpy(), fd.numpy(), rtol=1e-5, atol=1e-7)


# --- missing extras -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, module, extra, options",
    [
        ("milp", "pyomo.environ", "milp", {}),
        ("dwave", "dwave.system", "dwave", {"sampler": "mock-pegasus"}),
        ("dwave-hybrid", "dimod", "dwave", {"sampler": "mock"}),
        ("tabu", "dwave.samplers", "dwave", {}),
        ("qaoa", "qiskit_optimization.minimum_eigensolvers", "qaoa", {"backend": "statevector"}),
        ("qaoa", "numba", "qaoa", {}),
        ("qaoa", "qiskit_ibm_runtime", "ibm", {"backend": "ibm"}),
    ],
)
def test_missing_extra_names_the_pip_extra_in_one_sentence(name, module, extra, options, monkeypatch):
    if extra == "ibm":
        needs("qiskit", "qiskit_optimization")  # the IBM backend is looked for once the qaoa extra is there
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "a-token")  # credentials are checked first; here they are set
    p = random_problem([(5, 2)], seed=0)
    with pytest.raises(MissingDependencyError) as err:
        get_solver(name, p).solve(p, **options)
    message = str(err.value)
    assert f"pip install 'lmshrink[{extra}]'" in message
    assert one_sentence(message)


def test_fermigrad_without_torch_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    p = random_problem([(5, 2)], seed=0)
    with pytest.raises(MissingDependencyError, match="pip install torch") as err:
        get_solver("fermigrad", p).solve(p)
    assert one_sentence(str(err.value))


# --- dimod samplers -------------------------------------------------------------------------------------------------
def test_dimod_samplers_pass_dimods_own_checks():
    dimod = pytest.importorskip("dimod")
    needs("pyomo.environ", "highspy")
    from lmshrink.solvers.dimod_samplers import LmshrinkAnnealSampler, LmshrinkExactSampler, LmshrinkMilpSampler

    bqm = dimod.generators.gnp_random_bqm(8, 0.7, "SPIN", random_state=3)
    ground = dimod.ExactSolver().sample(bqm).first.energy
    for sampler in (LmshrinkExactSampler(), LmshrinkAnnealSampler(num_sweeps=200), LmshrinkMilpSampler()):
        dimod.testing.assert_sampler_api(sampler)
        sampleset = sampler.sample(bqm, num_reads=3, seed=1)
        assert sampleset.vartype is dimod.SPIN
        dimod.testing.assert_sampleset_energies(sampleset, bqm)
        assert sampleset.first.energy == pytest.approx(ground)
        qubo = sampler.sample_qubo({(0, 0): -1.0, (0, 1): 2.0, (1, 1): -1.0}, seed=0)
        assert qubo.first.energy == pytest.approx(-1.0)


def test_dimod_sampler_takes_a_cardinality_cqm():
    dimod = pytest.importorskip("dimod")
    needs("pyomo.environ", "highspy")
    from lmshrink.solvers.dimod_samplers import LmshrinkSampler

    p = random_problem([(5, 2), (4, 1)], free=2, seed=2)
    cqm = p.to_cqm()
    for name in ("exact", "anneal", "milp"):
        sampleset = LmshrinkSampler(name).sample_cqm(cqm, num_reads=4, seed=0)
        dimod.testing.assert_sampleset_energies_cqm(sampleset, cqm)
        assert sampleset.record.is_feasible.all()
        assert sampleset.first.energy == pytest.approx(brute_force(p)[0])
    x = list(dimod.Binaries("abc"))
    other = dimod.ConstrainedQuadraticModel()
    other.set_objective(x[0] * x[1])
    other.add_constraint(x[0] + 2 * x[1] + x[2] == 2)  # a weighted band: {x1} or {x0, x2}
    sampleset = LmshrinkSampler("exact").sample_cqm(other, num_reads=4)
    assert sampleset.record.is_feasible.all() and len(sampleset) == 2 and sampleset.first.energy == 0
    quadratic = dimod.ConstrainedQuadraticModel()
    quadratic.set_objective(x[0] * x[1])
    quadratic.add_constraint(x[0] * x[1] + x[2] == 1)
    with pytest.raises(LmshrinkError, match="not linear"):
        LmshrinkSampler("exact").sample_cqm(quadratic)


# --- CLI ------------------------------------------------------------------------------------------------------------
def test_cli_solve_with_milp_prints_json(tmp_path, capsys):
    needs("pyomo.environ", "highspy")
    from lmshrink.cli import main

    p = random_problem([(6, 2), (5, 2)], free=1, seed=4)
    path = p.save(tmp_path / "problem.json")
    assert main(["solve", str(path), "--solver", "milp", "--top-k", "3", "--json", "--option", "rlt=true"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solver"] == "milp"
    assert out["info"]["optimal"] is True
    _, energies = brute_force(p)
    np.testing.assert_allclose([s["energy"] for s in out["solutions"]], energies[:3], rtol=1e-9, atol=1e-9)


def test_cli_solve_without_dwave_credentials_is_one_line(tmp_path, capsys, no_dwave_credentials):
    needs("dwave.system", "dwave.cloud")
    from lmshrink.cli import main

    path = random_problem([(5, 2)], seed=4).save(tmp_path / "problem.json")
    assert main(["solve", str(path), "--solver", "dwave"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmshrink: error:") and "DWAVE_API_TOKEN" in err and "\n" not in err


def test_cli_passes_typed_options_to_the_mock_annealer(tmp_path, capsys):
    needs("dwave.system", "dwave.samplers", "minorminer")
    from lmshrink.cli import main

    p = random_problem([(6, 2)], seed=4)
    path = p.save(tmp_path / "problem.json")
    argv = ["solve", str(path), "--solver", "dwave", "--json", "--option", "sampler=mock-zephyr",
            "--option", "mock_shape=3,4", "--option", "num_reads=20", "--option", "polish=false"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["info"]["topology"] == {"type": "zephyr", "shape": [3, 4]}
    assert out["info"]["options"]["polish"] is False
    assert main(["solve", str(path), "--solver", "dwave", "--option", "sampler=qpuu"]) == 2
    assert ("option sampler must be one of ['qpu', 'mock-pegasus', 'mock-zephyr'], not 'qpuu' (did you mean 'qpu'?)."
            in capsys.readouterr().err)


def _solve_text_and_json(tmp_path, capsys, problem, argv):
    from lmshrink.cli import main

    path = problem.save(tmp_path / "problem.json")
    assert main(["solve", str(path), *argv]) == 0
    text = capsys.readouterr().out
    assert main(["solve", str(path), *argv, "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)


def test_cli_text_says_what_the_json_says_about_proof_and_time_limit(tmp_path, capsys):
    needs("pyomo.environ", "highspy")
    text, out = _solve_text_and_json(tmp_path, capsys, random_problem([(6, 2)], seed=4), ["--solver", "exact"])
    assert out["proven_optimal"] is True and "proof: the best is proven optimal" in text
    hard = fisher_problem(80, 8, seed=1, spread=0.2)
    text, out = _solve_text_and_json(tmp_path, capsys, hard, ["--solver", "milp", "--time-limit", "0.5",
                                                             "--top-k", "1"])
    assert out["proven_optimal"] is False and out["stopped_early"] is True
    assert "proof: none, the best is not proven optimal" in text and "stopped early" in text
    assert "heuristic" in _solve_text_and_json(tmp_path, capsys, hard, ["--solver", "anneal", "--option",
                                                                       "num_sweeps=20"])[0]


def test_cli_text_says_what_the_json_says_about_raw_samples_penalty_and_mock(tmp_path, capsys):
    needs("dwave.system", "dwave.samplers", "minorminer")
    p = random_problem([(6, 2), (5, 2)], free=1, seed=5)
    text, out = _solve_text_and_json(tmp_path, capsys, p, [
        "--solver", "dwave", "--option", "sampler=mock-pegasus", "--option", "num_reads=30", "--option",
        "mock_sweeps=200", "--option", "penalty=0.05"])
    raw, info = out["raw"], out["info"]
    assert info["mock"] is True and "note: offline MockDWaveSampler" in text
    assert info["penalty"] == 0.05 and "penalty weight: 0.05 (given)" in text
    assert raw["num_samples"] == 30 and raw["num_feasible"] < 30 and info["num_repaired"] == 30 - raw["num_feasible"]
    assert (f"raw samples: 30, {raw['feasible_fraction']:.0%} feasible" in text
            and f"{info['num_repaired']} repaired" in text and "before penalty, repair, polish" in text)
    # the penalty chosen from the problem is reported with its rule
    default = get_solver("dwave", p).solve(p, sampler="mock-pegasus", num_reads=10, mock_sweeps=50, seed=0)
    from lmshrink.solvers.composites import choose_penalty

    assert (default.info["penalty"], default.info["penalty_rule"]) == choose_penalty(p)


def test_cli_text_says_which_variables_qaoa_fixed_and_what_the_classical_presolve_found(tmp_path, capsys):
    needs("qiskit", "qiskit_optimization")
    p = random_problem([(10, 3)], seed=8)
    text, out = _solve_text_and_json(tmp_path, capsys, p, ["--solver", "qaoa", "--top-k", "2", "--option",
                                                          "max_qubits=6", "--option", "maxiter=5"])
    info = out["info"]
    assert info["num_fixed"] == 4 and "fixed classically: 4 variables" in text
    assert all(f"{k}={v}" in text for k, v in info["fixed_variables"].items())
    classical = info["reduction"]["classical_best_energy"]
    assert f"classical pre-solve (anneal) best energy {classical:.6g}" in text
    assert f"qaoa's own best {out['raw']['best_energy']:.6g}" in text


def test_choose_penalty_takes_the_smaller_of_two_valid_bounds_and_keeps_the_minimum_feasible():
    from lmshrink.solvers.composites import choose_penalty

    for p in (fisher_problem(12, 4, seed=14, kinds=2), random_problem([(5, 2), (4, 1)], free=3, seed=13)):
        weight, rule = choose_penalty(p)
        assert weight <= p.default_penalty()
        assert rule in ("largest single-flip energy change", "greedy feasible energy minus a lower bound of the "
                        "objective")
        lin, quad, off = p.penalty_qubo(weight)
        n = p.num_variables
        X = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8)
        penalised = off + X @ lin + np.einsum("ki,ki->k", X @ quad, X)
        assert p.is_feasible(X[np.argmin(penalised)])  # the penalty form's minimum is feasible
        assert penalised.min() == pytest.approx(brute_force(p)[0])
