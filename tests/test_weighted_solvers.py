"""Solvers on weighted bands ``L ≤ Σ w·x ≤ U`` (parameter budgets): feasible states, and the proven k lowest
against brute force."""

import numpy as np
import pytest
from problems import brute_force, fisher_problem, random_problem

from lmshrink.core import BinaryQuadraticProblem, Constraint
from lmshrink.plugins import get_solver
from lmshrink.solvers.bands import cardinality_splits, class_counts, group_patterns


def banded(problem: BinaryQuadraticProblem, weights, lower, upper, free: int = 0) -> BinaryQuadraticProblem:
    """``problem`` with its first ``N − free`` variables under one band (the rest free)."""
    n = problem.num_variables - free
    c = Constraint(tuple(range(n)), weights=list(weights), lower=lower, upper=upper, name="budget")
    return BinaryQuadraticProblem(variables=problem.variables, linear=problem.linear, quadratic=problem.quadratic,
                                  offset=problem.offset, constraints=[c])


def test_splits_cover_exactly_the_band():
    c = Constraint(tuple(range(6)), weights=[1, 3, 1, 3, 2, 2], lower=5, upper=6)
    counts = class_counts(c)
    # classes: weight 1 (2 vars), 2 (2 vars), 3 (2 vars): m1 + 2 m2 + 3 m3 ∈ [5, 6]
    expected = [(a, b, d) for a in range(3) for b in range(3) for d in range(3) if 5 <= a + 2 * b + 3 * d <= 6]
    assert sorted(counts) == sorted(expected)
    X = group_patterns(c)
    s = X @ np.array([1, 3, 1, 3, 2, 2])
    assert ((s >= 5) & (s <= 6)).all() and len(X) == c_count(c) == len({r.tobytes() for r in X})


def c_count(c: Constraint) -> int:
    X = ((np.arange(64)[:, None] >> np.arange(6)) & 1)
    s = X @ c.weight_array()
    return int(((s >= c.lower) & (s <= c.upper)).sum())


def test_band_patterns_above_the_bit_limit_come_from_the_classes():
    w = [2, 5] * 12  # 24 variables: above BITS_UP_TO, enumerated per weight class
    c = Constraint(tuple(range(24)), weights=w, lower=20, upper=21)
    X = group_patterns(c)
    s = X @ np.array(w)
    assert ((s >= 20) & (s <= 21)).all()
    from lmshrink.core.problem import subset_counts

    assert len(X) == subset_counts(w, 20, 21) == len(np.unique(X, axis=0))


@pytest.mark.parametrize("method", ["enumerate", "branch-and-bound"])
def test_exact_on_a_band_equals_brute_force(method):
    pytest.importorskip("numba")
    p = banded(random_problem([(12, 4)], seed=3), [1, 3, 1, 3, 1, 3, 1, 3, 1, 3, 2, 2], 8, 9)
    _, energies = brute_force(p)
    result = get_solver("exact").solve(p, num_solutions=5, method=method)
    assert result.proven_optimal
    assert all(p.is_feasible(s.x) for s in result)
    np.testing.assert_allclose(result.energies, energies[:5], rtol=0, atol=1e-9)


def test_exact_on_a_band_with_free_variables_and_a_cardinality():
    pytest.importorskip("numba")
    base = random_problem([(8, 2)], free=5, seed=4)
    band = Constraint((0, 1, 2, 3, 4, 5, 6), weights=[4, 1, 4, 1, 4, 1, 7], lower=6, upper=9, name="budget")
    card = Constraint((7, 8, 9), 1, "pick")
    p = BinaryQuadraticProblem(variables=base.variables, linear=base.linear, quadratic=base.quadratic,
                               offset=base.offset, constraints=[band, card])
    _, energies = brute_force(p)
    for method in ("enumerate", "branch-and-bound"):
        result = get_solver("exact").solve(p, num_solutions=4, method=method)
        assert result.proven_optimal, method
        np.testing.assert_allclose(result.energies, energies[:4], rtol=0, atol=1e-9, err_msg=method)
    assert len(cardinality_splits(p)) > 1


def test_exact_splits_a_sub_layer_budget_into_cardinality_problems():
    """The shape of a SmolLM2 sub-layer budget: attention and MLP units, a band one attention unit wide."""
    pytest.importorskip("numba")
    p0 = fisher_problem(14, 4, seed=1)
    w = np.where(np.arange(14) % 2 == 0, 884_736, 2_654_208)
    T = 0.25 * w.sum()
    p = banded(p0, w, T, T + w.min())
    splits = cardinality_splits(p)
    # a + 3m ∈ [T/884736, T/884736 + 1] with a, m ≤ 7
    lo = T / 884_736
    assert len(splits) == sum(1 for a in range(8) for m in range(8) if lo - 1e-9 <= a + 3 * m <= lo + 1 + 1e-9)
    _, energies = brute_force(p)
    result = get_solver("exact").solve(p, num_solutions=3, method="branch-and-bound")
    assert result.proven_optimal and result.info["num_splits"] == len(splits)
    np.testing.assert_allclose(result.energies, energies[:3], rtol=0, atol=1e-9)


def test_exact_root_bound_is_never_below_the_convex_relaxation():
    """A Fisher-like problem (Q positive semidefinite, no linear term) stopped early: the reported lower bound is at
    least the convex relaxation's and at least 0, the trivial bound of a non-negative energy."""
    pytest.importorskip("numba")
    from lmshrink.solvers.kernels import topk
    from lmshrink.solvers.kernels.layout import problem_layout

    p = fisher_problem(96, 24, seed=0)
    result = get_solver("exact").solve(p, time_limit=0.5)
    convex = topk.convex_root_bound(p.linear, p.quadratic, problem_layout(p), topk.convex_shift(p.quadratic))
    if not result.proven_optimal:
        assert result.info["lower_bound"] >= max(convex, 0.0) - 1e-12
        assert result.info["lower_bound"] <= result.best.energy
    cert = result.info["certificate"]
    assert cert["root_bound"] >= max(convex, 0.0) - 1e-12


def test_repair_brings_random_states_into_a_band_and_descent_keeps_them_there():
    from lmshrink.solvers.repair import repair, swap_descent

    p = banded(random_problem([(12, 4)], seed=5), [1, 3, 1, 3, 1, 3, 1, 3, 1, 3, 2, 2], 8, 8)
    X = np.random.default_rng(0).integers(0, 2, size=(40, 12))
    R, changed = repair(p, X)
    assert p.feasible_rows(R).all()
    assert (changed == ~p.feasible_rows(X)).all()
    D = swap_descent(p, R)
    assert p.feasible_rows(D).all() and (p.energies(D) <= p.energies(R) + 1e-12).all()


def test_band_state_walks_back_the_subset_sums():
    from lmshrink.solvers.band_repair import band_state

    c = Constraint(tuple(range(5)), weights=[6, 10, 15, 7, 9], lower=31, upper=31)
    x = band_state(c)
    assert x @ np.array([6, 10, 15, 7, 9]) == 31


@pytest.mark.parametrize("free", [0, 3])
def test_anneal_stays_in_the_band_and_finds_the_optimum(free):
    base = random_problem([(10, 3)], free=free, seed=6)
    p = banded(base, [2, 5, 2, 5, 2, 5, 2, 5, 3, 3], 10, 12, free=free)
    best, energies = brute_force(p)
    result = get_solver("anneal").solve(p, num_solutions=3, seed=1, num_sweeps=300)
    assert all(p.is_feasible(s.x) for s in result)
    assert result.info["engine"] == "numpy-bands"
    assert result.best.energy == pytest.approx(best, abs=1e-9)


def test_milp_on_a_band_equals_brute_force():
    pytest.importorskip("pyomo.environ")
    pytest.importorskip("highspy")
    p = banded(random_problem([(12, 4)], seed=3), [1, 3, 1, 3, 1, 3, 1, 3, 1, 3, 2, 2], 8, 9)
    _, energies = brute_force(p)
    result = get_solver("milp").solve(p, num_solutions=3)
    assert result.proven_optimal and all(p.is_feasible(s.x) for s in result)
    np.testing.assert_allclose(result.energies, energies[:3], rtol=0, atol=1e-7)


def test_slack_form_equals_the_objective_on_band_states_with_their_slack():
    """On x inside the band, with the slack bits that close the equality, the slack form's energy is the objective;
    every slack value in [0, R] is reachable and none above."""
    from lmshrink.solvers.slack import band_encoding, slack_coefficients, slack_problem

    for steps in (1, 2, 5, 7, 8, 100):
        coeffs = slack_coefficients(steps)
        sums = {int(np.dot(b, coeffs)) for b in np.ndindex(*(2,) * len(coeffs))}
        assert sums == set(range(steps + 1))
    p = banded(random_problem([(10, 3)], seed=8), [2, 4, 6, 2, 4, 6, 2, 4, 6, 8], 10, 17)
    delta, lower, coeffs = band_encoding(p.constraints[0])
    assert delta == 2 and lower == 10 and sum(coeffs) == 3  # sums 10..16 in steps of 2
    form = slack_problem(p, penalty=7.0)
    X = ((np.arange(2**10)[:, None] >> np.arange(10)) & 1)
    for x in X[p.feasible_rows(X)][:40]:
        r = int(round((x @ p.constraints[0].weight_array() - lower) / delta))
        bits = [0] * len(coeffs)
        for t in sorted(range(len(coeffs)), key=lambda t: -coeffs[t]):  # greedy fill: coefficients are 1,2,..,rest
            if coeffs[t] <= r:
                bits[t], r = 1, r - coeffs[t]
        assert r == 0
        z = np.concatenate([x, bits])
        assert form.energy(z) == pytest.approx(p.energy(x), abs=1e-9)
    bad = X[~p.feasible_rows(X)][0]
    zs = np.array([np.concatenate([bad, b]) for b in np.ndindex(*(2,) * len(coeffs))])
    assert (form.energies(zs) >= p.energy(bad) + 7.0 - 1e-9).all()  # at least one unit of violation


@pytest.mark.parametrize("name", ["tabu", "dwave", "dwave-hybrid"])
def test_penalty_samplers_honour_a_band_through_slack_and_repair(name):
    pytest.importorskip("dimod")
    pytest.importorskip("dwave.samplers")
    if name.startswith("dwave"):
        pytest.importorskip("dwave.system")
        pytest.importorskip("minorminer")
    solver = get_solver(name)
    assert "weighted" in solver.capabilities.constraint_kinds
    p = banded(random_problem([(10, 3)], seed=9), [2, 5, 2, 5, 2, 5, 2, 5, 3, 3], 10, 12)
    best, _ = brute_force(p)
    from lmshrink.testing.solvers import run_options

    result = solver.solve(p, num_solutions=3, seed=2, **run_options(solver))
    assert all(p.is_feasible(s.x) for s in result)
    assert result.best.energy >= best - 1e-9
    if name == "dwave-hybrid":  # the mock enumerates the CQM: the optimum
        assert result.best.energy == pytest.approx(best, abs=1e-9)


# --- exports and the command line -----------------------------------------------------------------------------------
def _band_file(tmp_path):
    from lmshrink.testing.solvers import weighted_band_problems

    p = weighted_band_problems()["budget+cardinality"]  # a one-sided budget beside a cardinality
    return p, p.save(tmp_path / "budget.json")


def test_qplib_round_trip_keeps_bands_and_energies(tmp_path):
    from lmshrink.library.qplib import read_qplib, write_qplib

    p, _ = _band_file(tmp_path)
    q = read_qplib(write_qplib(p, tmp_path / "b.qplib", "b"))
    assert [c.kind for c in q.constraints] == ["weighted", "cardinality"]
    assert q.constraints[0].lower is None and q.constraints[0].upper == 20
    np.testing.assert_array_equal(q.constraints[0].weight_array(), p.constraints[0].weight_array())
    X = ((np.arange(2**12)[:, None] >> np.arange(12)) & 1)
    np.testing.assert_array_equal(q.feasible_rows(X), p.feasible_rows(X))
    np.testing.assert_allclose(q.energies(X), p.energies(X), rtol=1e-12, atol=1e-12)


def test_cqm_and_slack_bqm_exports_carry_the_band(tmp_path):
    pytest.importorskip("dimod")
    import json

    import dimod

    from lmshrink.library.formats import export_library, problem_instance

    p, path = _band_file(tmp_path)
    inst = problem_instance(path)
    (cqm_path,) = export_library([inst], tmp_path / "cqm", "cqm")
    (bqm_path,) = export_library([inst], tmp_path / "bqm", "bqm")
    with open(cqm_path, "rb") as f:
        cqm = dimod.ConstrainedQuadraticModel.from_file(f)
    bqm = dimod.BinaryQuadraticModel.from_serializable(json.loads(bqm_path.read_text()))
    entry = json.loads((tmp_path / "bqm" / "index.json").read_text())["instances"][0]
    slack = entry["slack_variables"]
    assert len(slack) == bqm.num_variables - 12 > 0
    X = ((np.arange(2**12)[:, None] >> np.arange(12)) & 1)
    ok = p.feasible_rows(X)
    bits = np.array(list(np.ndindex(*(2,) * len(slack))))
    for x, feasible in zip(X[::37], ok[::37]):
        sample = {i: int(v) for i, v in enumerate(x)}
        assert cqm.check_feasible(sample) == bool(feasible)
        # the BQM minimised over the slack bits: the energy inside the band, at least P more outside
        zs = np.hstack([np.repeat(x[None], len(bits), axis=0), bits])
        low = bqm.energies((zs, list(range(12 + len(slack))))).min()  # slack bits: variables 12, 13, …
        if feasible:
            assert low == pytest.approx(p.energy(x), abs=1e-8)
        else:
            assert low >= p.energy(x) + entry["penalty"] - 1e-8


def test_lp_export_of_a_band_problem_solves_to_the_brute_force_optimum(tmp_path):
    pytest.importorskip("pyomo.environ")
    highspy = pytest.importorskip("highspy")
    from lmshrink.library.formats import export_library, problem_instance

    p, path = _band_file(tmp_path)
    (lp_path,) = export_library([problem_instance(path)], tmp_path / "lp", "lp")
    h = highspy.Highs()
    h.silent()
    assert h.readModel(str(lp_path)) == highspy.HighsStatus.kOk
    h.run()
    best, _ = brute_force(p)
    assert h.getInfo().objective_function_value == pytest.approx(best, rel=1e-7, abs=1e-9)


def test_cli_exports_a_users_problem_file_and_solves_bands(tmp_path, capsys):
    from lmshrink.cli import main

    p, path = _band_file(tmp_path)
    assert main(["problems", "export", str(tmp_path / "out"), "--format", "qplib", "--problem", str(path)]) == 0
    assert (tmp_path / "out" / "budget.qplib").is_file()
    assert main(["solve", str(path), "--solver", "exact", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "band budget: best has Σw·x" in out and "proven optimal" in out
    assert main(["problems", "export", str(tmp_path / "o2"), "--problem", str(tmp_path / "missing.json")]) == 2


def test_cli_refuses_bad_band_input_with_exit_code_2(tmp_path, capsys):
    import json

    from lmshrink.cli import main

    p, path = _band_file(tmp_path)
    data = json.loads(path.read_text())
    data["constraints"][0]["weights"] = data["constraints"][0]["weights"][:-1]  # one weight short
    (tmp_path / "short.json").write_text(json.dumps(data))
    data = json.loads(path.read_text())
    data["constraints"][0]["lower"], data["constraints"][0]["upper"] = 1000, 2000  # no state reaches it
    (tmp_path / "empty.json").write_text(json.dumps(data))
    assert main(["solve", str(tmp_path / "short.json")]) == 2
    assert "weights" in capsys.readouterr().err
    assert main(["solve", str(tmp_path / "empty.json")]) == 2
    assert "no choice" in capsys.readouterr().err
    assert main(["solve", str(path), "--solver", "fermigrad"]) == 2  # a solver that does not honour bands
    assert "does not honour weighted" in capsys.readouterr().err


def test_compile_notice_is_printed_once_per_process_and_only_when_the_cache_is_cold(capsys, monkeypatch):
    from lmshrink.solvers.kernels import notice

    class Cold:  # a dispatcher with nothing compiled and no cache
        signatures: list = []
        py_func = None

    class Warm:
        signatures = ["(float64,)"]
        py_func = None

    monkeypatch.delenv("LMSHRINK_QUIET", raising=False)
    monkeypatch.setattr(notice, "_announced", set())
    assert notice.announce_compile("test kernels", [Warm(), Cold()])
    assert not notice.announce_compile("test kernels", [Cold()])
    assert not notice.announce_compile("other kernels", [Cold()])  # once per process, whatever kernels
    err = capsys.readouterr().err
    assert err.count("compiling lmshrink's") == 1 and "test kernels (once; cached) …" in err
    monkeypatch.setattr(notice, "_announced", set())
    assert not notice.announce_compile("warm kernels", [Warm()])  # nothing to compile: silent
    assert notice.announce_compile("cold kernels", [Cold()])  # a later cold kernel is still announced
    assert "cold kernels" in capsys.readouterr().err


def test_compiled_kernels_are_warm_after_a_solve():
    pytest.importorskip("numba")
    from lmshrink.solvers.kernels import notice, topk

    topk.topk_problem(random_problem([(6, 2)], seed=1), k=1)
    cold = [d.py_func.__name__ for d in notice.kernel_dispatchers(topk) if notice.is_cold(d)]
    # every kernel the search calls is compiled now (or loaded from the cache)
    assert "_search" not in cold and "_insert" not in cold


def test_a_cqm_with_a_band_reads_back_and_samples_through_dimod():
    pytest.importorskip("dimod")
    from lmshrink.solvers.dimod_samplers import LmshrinkSampler, problem_from_cqm
    from lmshrink.testing.solvers import weighted_band_problems

    for p in weighted_band_problems().values():
        q, order = problem_from_cqm(p.to_cqm())
        X = ((np.arange(2**12)[:, None] >> np.arange(12)) & 1)
        Xq = X[:, [int(v) for v in order]]  # q's variable k is the CQM's variable order[k], the problem's index
        np.testing.assert_array_equal(q.feasible_rows(Xq), p.feasible_rows(X))
    p = weighted_band_problems()["band"]
    best, _ = brute_force(p)
    sampleset = LmshrinkSampler("exact").sample_cqm(p.to_cqm(), num_reads=2)
    assert sampleset.first.energy == pytest.approx(best, abs=1e-9) and sampleset.first.is_feasible


def test_a_time_limit_stops_the_split_search_with_a_valid_lower_bound():
    pytest.importorskip("numba")
    p0 = fisher_problem(40, 8, seed=3, spread=0.2)
    w = np.where(np.arange(40) % 2 == 0, 884_736, 2_654_208)
    T = 0.25 * w.sum()
    p = banded(p0, w, T, T + w.min())
    result = get_solver("exact").solve(p, time_limit=0.05, method="branch-and-bound")
    assert all(p.is_feasible(s.x) for s in result)
    if not result.proven_optimal:
        assert result.stopped_early and result.info["lower_bound"] <= result.best.energy + 1e-12
        assert result.info["splits_searched"] <= result.info["num_splits"]


def test_restrict_moves_the_fixed_weight_out_of_a_band():
    from lmshrink.solvers.composites import restrict
    from lmshrink.testing.solvers import weighted_band_problems

    p = weighted_band_problems()["band"]
    members = p.constraints[0].indices
    fixed = {members[0]: 1, members[1]: 0, members[3]: 1}  # weights 1, 3, 3: 4 of the band fixed
    sub, keep = restrict(p, fixed)
    c = sub.constraints[0]
    assert (c.lower, c.upper) == (10 - 4, 11 - 4)
    X = ((np.arange(2**12)[:, None] >> np.arange(12)) & 1)
    X = X[np.all([X[:, i] == v for i, v in fixed.items()], axis=0)]
    np.testing.assert_array_equal(sub.feasible_rows(X[:, keep]), p.feasible_rows(X))
    np.testing.assert_allclose(sub.energies(X[:, keep]), p.energies(X), atol=1e-12)


def test_library_instance_text_names_a_band():
    from lmshrink.library.instance import LibraryInstance
    from lmshrink.testing.solvers import weighted_band_problems

    inst = LibraryInstance("b", weighted_band_problems()["budget+cardinality"], {}, [])
    assert inst.constraints_text() == "budget≤20/8, group1=2/4"
