"""RankAllocationProblem: costs, energies, files, and the three rank solvers against independent optima."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from lmshrink.cli import main
from lmshrink.core import LmshrinkError, RankAllocationProblem, load_problem
from lmshrink.core.rank import repair_ranks
from lmshrink.plugins import get_solver


pytestmark = pytest.mark.usefixtures("one_thread")


def random_rank_problem(shapes, ratio, *, seed=0, pivga=False, **kw) -> RankAllocationProblem:
    """Singular values with a random per-matrix scale and decay (so the optimal allocation is uneven)."""
    rng = np.random.default_rng(seed)
    svs = []
    for m, n in shapes:
        k = min(m, n)
        s = np.exp(rng.normal(0, 1.0)) * np.exp(-rng.uniform(0.05, 0.8) * np.arange(k)) * rng.uniform(0.8, 1.2, k)
        svs.append(np.sort(s)[::-1])
    total = sum(m * n for m, n in shapes)
    return RankAllocationProblem([f"w{i}" for i in range(len(shapes))], shapes, svs, budget=np.floor(ratio * total),
                                 pivga=pivga, **kw)


def cost_of(m, n, r, pivga):
    """Independent cost rule: r(m+n) (− r² with PivGa), capped at the dense m·n."""
    c = r * (m + n) - (r * r if pivga else 0)
    return m * n if c >= m * n or r == min(m, n) else c


def energy_of(s, m, n, r, pivga):
    c = r * (m + n) - (r * r if pivga else 0)
    return 0.0 if c >= m * n or r == min(m, n) else float(np.sum(s[r:] ** 2))


def brute_force(problem):
    """Lowest energy over every feasible combination of allowed ranks."""
    best = np.inf
    choices = [problem.allowed_ranks(l) for l in range(problem.num_matrices)]
    for x in itertools.product(*choices):
        cost = sum(cost_of(*problem.shapes[l], r, problem.pivga) for l, r in enumerate(x))
        if cost <= problem.budget:
            e = sum(energy_of(problem.singular_values[l], *problem.shapes[l], r, problem.pivga) for l, r in enumerate(x))
            best = min(best, e)
    return best


def knapsack_dp(problem):
    """Multiple-choice knapsack by dynamic programming over integer budgets: dp[b] = least energy at cost ≤ b."""
    B = int(problem.budget)
    dp = np.zeros(B + 1)
    for l in range(problem.num_matrices):
        m, n = problem.shapes[l]
        s = problem.singular_values[l]
        new = np.full(B + 1, np.inf)
        for r in problem.allowed_ranks(l):
            c = cost_of(m, n, int(r), problem.pivga)
            if c > B:
                continue
            new[c:] = np.minimum(new[c:], dp[: B + 1 - c] + energy_of(s, m, n, int(r), problem.pivga))
        dp = new
    return float(dp[B])


SHAPES = [(6, 4), (4, 7), (5, 5), (8, 3), (3, 3)]


def test_costs_energies_and_break_even():
    p = random_rank_problem(SHAPES, 0.6, seed=1)
    for l, (m, n) in enumerate(SHAPES):
        k = min(m, n)
        table = p.cost_table(l)
        assert [int(c) for c in table] == [cost_of(m, n, r, False) for r in range(k + 1)]
        # break-even: first rank whose r(m+n) reaches mn; allowed = 1..break_even-1 and k
        be = next(r for r in range(k + 1) if r * (m + n) >= m * n or r == k)
        assert p.break_even(l) == be
        assert p.allowed_ranks(l).tolist() == [*range(1, be), k] if be < k else list(range(1, k + 1))
    x = [2, 1, 2, 1, 3]
    expect = sum(energy_of(p.singular_values[l], *SHAPES[l], r, False) for l, r in enumerate(x))
    assert p.energy(x) == pytest.approx(expect, rel=1e-12)
    assert p.cost(x) == sum(cost_of(*SHAPES[l], r, False) for l, r in enumerate(x))
    assert p.is_feasible(x) == (p.cost(x) <= p.budget)
    assert not p.is_feasible([3, 1, 2, 1, 3])  # rank 3 of a 6×4 is past break-even (3·10 ≥ 24) but not k = 4
    assert not p.is_feasible([0, 1, 2, 1, 3])  # below min_rank
    counts = p.param_counts([2, 1, 2, 1, 3])
    assert counts["plain"] == 2 * 10 + 11 + 2 * 10 + 11 + 9
    assert counts["pivga"] == (20 - 4) + (11 - 1) + (20 - 4) + (11 - 1) + 9
    assert counts["dense_matrices"] == 1


def test_pivga_cost_never_exceeds_dense():
    p = random_rank_problem(SHAPES, 0.5, pivga=True)
    for l, (m, n) in enumerate(SHAPES):
        k = min(m, n)
        assert p.break_even(l) == k  # r(m+n) − r² < mn for every r < k
        assert p.cost_table(l)[k] == m * n
        assert p.allowed_ranks(l).tolist() == list(range(1, k + 1))


def test_budget_below_minimum_is_rejected():
    with pytest.raises(LmshrinkError, match="below the cost"):
        random_rank_problem(SHAPES, 0.05)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_and_load_round_trip(tmp_path, suffix):
    p = random_rank_problem(SHAPES, 0.6, seed=2, grid=[[1, 2, 4], [1, 3], [2, 5], [1, 2], [1, 3]],
                            weights=np.arange(1.0, 6.0), metadata={"note": "x"})
    path = p.save(tmp_path / f"p{suffix}")
    q = load_problem(path)
    assert isinstance(q, RankAllocationProblem)
    assert q.names == p.names and q.shapes == p.shapes and q.grid == p.grid
    for a, b in zip(p.singular_values, q.singular_values):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(q.weights, p.weights)
    assert q.budget == p.budget and q.metadata == {"note": "x"}
    x = [2, 3, 2, 1, 3]
    assert q.energy(x) == p.energy(x)


@pytest.mark.parametrize("pivga", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_milp_equals_brute_force_and_dynamic_programming(pivga, seed):
    pytest.importorskip("pyomo")
    pytest.importorskip("highspy")
    p = random_rank_problem(SHAPES, 0.55, seed=seed, pivga=pivga)
    result = get_solver("milp", p).solve(p, num_solutions=2, grid_step=1, mip_gap=1e-9)
    assert result.info["optimal"]
    dp = knapsack_dp(p)
    assert brute_force(p) == pytest.approx(dp, rel=1e-12)
    assert result.best.energy == pytest.approx(dp, rel=1e-9, abs=1e-12)
    assert len(result) == 2 and result[1].energy >= result[0].energy  # the no-good cut gives a second allocation


def test_milp_larger_instance_matches_dynamic_programming():
    pytest.importorskip("pyomo")
    rng = np.random.default_rng(5)
    shapes = [tuple(int(v) for v in rng.integers(6, 20, 2)) for _ in range(12)]
    p = random_rank_problem(shapes, 0.45, seed=5)
    best = get_solver("milp", p).solve(p, grid_step=1, mip_gap=1e-9).best
    assert best.energy == pytest.approx(knapsack_dp(p), rel=1e-9)


def test_milp_grid_step_restricts_ranks():
    pytest.importorskip("pyomo")
    shapes = [(40, 24), (24, 40), (32, 32)]
    p = random_rank_problem(shapes, 0.5, seed=3)
    x = get_solver("milp", p).solve(p, grid_step=4).best.x
    for l, r in enumerate(x):
        assert r % 4 == 0 or r == p.allowed_ranks(l)[0] or r == p.max_rank(l)
    assert p.cost(x) <= p.budget


def _assert_saturated(p, x):
    """Independent check: within budget, and no matrix can take its next allowed rank."""
    total = sum(cost_of(*p.shapes[l], int(r), p.pivga) for l, r in enumerate(x))
    assert total <= p.budget
    for l, r in enumerate(x):
        higher = [a for a in p.allowed_ranks(l) if a > r]
        if higher:
            step = cost_of(*p.shapes[l], int(higher[0]), p.pivga) - cost_of(*p.shapes[l], int(r), p.pivga)
            assert total + step > p.budget, f"matrix {l} could still move from rank {r} to {higher[0]}"


@pytest.mark.parametrize("pivga", [False, True])
@pytest.mark.parametrize("init", ["greedy", "uniform"])
def test_fermigrad_proxy_meets_budget_exactly_and_is_near_optimal(pivga, init):
    rng = np.random.default_rng(7)
    shapes = [tuple(int(v) for v in rng.integers(8, 24, 2)) for _ in range(10)]
    p = random_rank_problem(shapes, 0.5, seed=7, pivga=pivga)
    result = get_solver("fermigrad", p).solve(p, init=init, steps=300, progress=False)
    x = result.best.x
    _assert_saturated(p, x)
    assert result.info["objective"].startswith("proxy")
    optimum = knapsack_dp(p)
    assert result.best.energy <= 1.5 * optimum + 1e-12


def test_fermigrad_with_a_loss_oracle_uses_it_and_meets_budget():
    """A synthetic differentiable oracle that values matrix 0 far above the proxy does: fermigrad follows it."""
    import torch

    shapes = [(16, 16), (16, 16), (16, 16)]
    sv = [np.linspace(1, 0.1, 16)] * 3
    p = RankAllocationProblem(["a", "b", "c"], shapes, sv, budget=np.floor(0.5 * 3 * 256))
    calls = []

    def oracle(masks):
        calls.append(1)
        weights = (50.0, 1.0, 1.0)
        return sum(w * ((1 - f) * torch.from_numpy(s**2)).sum() for w, f, s in zip(weights, masks, sv))

    result = get_solver("fermigrad", p).solve(p, loss=oracle, steps=150, progress=False)
    x = result.best.x
    _assert_saturated(p, x)
    assert len(calls) == 150 and result.info["objective"] == "loss oracle"
    assert x[0] > x[1] and x[0] > x[2]
    proxy_only = get_solver("fermigrad", p).solve(p, loss=oracle, steps=150, use_loss=False, progress=False).best.x
    assert proxy_only[0] == pytest.approx(proxy_only[1], abs=1)
    assert list(get_solver("fermigrad", p).solve(p, steps=150, progress=False).best.x) == list(proxy_only)


def test_fermigrad_refuses_an_oracle_of_other_matrices():
    class Oracle:
        names = ["a", "c", "b"]

        def __call__(self, masks):  # pragma: no cover - never called
            raise AssertionError

    p = RankAllocationProblem(["a", "b", "c"], [(8, 8)] * 3, [np.linspace(1, 0.1, 8)] * 3, budget=96)
    with pytest.raises(LmshrinkError, match="loss oracle covers 3 matrices that are not the problem's"):
        get_solver("fermigrad", p).solve(p, loss=Oracle(), progress=False)
    with pytest.raises(LmshrinkError, match="loss"):
        get_solver("fermigrad", p).solve(p, loss=3, progress=False)


def test_uniform_keeps_the_same_ratio_everywhere():
    shapes = [(40, 24), (24, 40), (32, 32), (64, 16)]
    p = random_rank_problem(shapes, 0.5, seed=4)
    x = get_solver("uniform", p).solve(p).best.x
    for l, (m, n) in enumerate(shapes):
        r = int(x[l])
        assert r * (m + n) <= 0.5 * m * n < (r + 1) * (m + n)
    full = random_rank_problem(shapes, 1.0, seed=4)
    assert list(get_solver("uniform", full).solve(full).best.x) == [min(s) for s in shapes]  # all dense
    filled = get_solver("uniform", p).solve(p, fill=True).best.x
    _assert_saturated(p, filled)


def test_repair_takes_best_value_per_cost():
    shapes = [(10, 10), (10, 10)]
    p = RankAllocationProblem(["a", "b"], shapes, [np.linspace(2, 1, 10), np.linspace(1, 0.5, 10)], budget=80)
    # a rank step costs 20 here; from (1, 1) two steps fit, and a's next two σ² beat b's next one
    assert list(repair_ranks(p, [1, 1])) == [3, 1]
    # over budget from (4, 4): b's steps lose the least and go first, then a's last one
    assert list(repair_ranks(p, [4, 4])) == [3, 1]
    assert list(repair_ranks(p, [4, 4], fill=False)) == [3, 1]


@pytest.mark.parametrize("solver", ["uniform", "fermigrad", "milp", "rank-milp"])
def test_lmshrink_solve_reads_a_rank_problem(tmp_path, capsys, solver):
    if solver.endswith("milp"):
        pytest.importorskip("pyomo")
    p = random_rank_problem(SHAPES, 0.6, seed=3)
    path = p.save(tmp_path / "rank.json")
    extra = ["--option", "steps=50", "--option", "progress=false"] if solver == "fermigrad" else []
    assert main(["solve", str(path), "--solver", solver, "--top-k", "1", "--json", *extra]) == 0
    out = json.loads(capsys.readouterr().out)
    x = out["solutions"][0]["x"]
    assert out["solver"] == "rank-" + solver.removeprefix("rank-")  # the alias names the rank solver
    assert p.is_feasible(x)
    assert out["solutions"][0]["energy"] == pytest.approx(p.energy(x))


def error_table_problem(seed=3, ratio=0.5, pivga=False):
    """SHAPES with a random, non-monotone error per rank (errors[k] = 0), a stand-in for a measured loss table."""
    rng = np.random.default_rng(seed)
    base = random_rank_problem(SHAPES, ratio, seed=seed, pivga=pivga)
    errors = [np.append(rng.uniform(0, 3, min(m, n)), 0.0) for m, n in SHAPES]
    return RankAllocationProblem(base.names, base.shapes, base.singular_values, budget=base.budget, pivga=pivga,
                                 weights=np.arange(1.0, 6.0), errors=errors)


def test_an_error_table_replaces_the_whitened_tails():
    p = error_table_problem()
    x = np.array([1, 2, 0, 3, 3])
    want = sum((l + 1.0) * (0.0 if p.is_dense(l, r) else p.errors[l][r]) for l, r in enumerate(x))
    assert p.energy(x) == pytest.approx(want, rel=1e-12)
    from lmshrink.core.rank import marginal_values

    v = marginal_values(p)
    assert np.allclose(v[1], 2.0 * (p.errors[1][:-1] - p.errors[1][1:]))
    with pytest.raises(LmshrinkError, match="errors of w0 must be 5 finite"):
        RankAllocationProblem(p.names, p.shapes, p.singular_values, budget=p.budget,
                              errors=[np.zeros(4)] + p.errors[1:])
    with pytest.raises(LmshrinkError, match="non-negative"):
        RankAllocationProblem(p.names, p.shapes, p.singular_values, budget=p.budget,
                              errors=[-np.ones(5)] + p.errors[1:])


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_an_error_table_is_written_as_format_2_and_read_back(tmp_path, suffix):
    p = error_table_problem()
    path = p.save(tmp_path / f"p{suffix}")
    if suffix == ".json":
        assert json.loads(path.read_text())["format"] == "lmshrink.rank_allocation/2"
    q = load_problem(path)
    for a, b in zip(p.errors, q.errors):
        np.testing.assert_array_equal(a, b)
    x = [1, 2, 0, 3, 3]
    assert q.energy(x) == p.energy(x)
    plain = random_rank_problem(SHAPES, 0.5)
    assert plain.to_dict()["format"] == "lmshrink.rank_allocation/1" and "errors" not in plain.to_dict()
    data = p.to_dict()
    data["errors"] = data["errors"][:-1]
    with pytest.raises(LmshrinkError, match="errors has 23 entries, the shapes need 24"):
        RankAllocationProblem.from_dict(data)


@pytest.mark.parametrize("pivga", [False, True])
def test_milp_on_an_error_table_equals_brute_force(pivga):
    pytest.importorskip("pyomo")
    p = error_table_problem(seed=4, pivga=pivga)
    best = np.inf
    for x in itertools.product(*[p.allowed_ranks(l) for l in range(p.num_matrices)]):
        if p.cost(x) <= p.budget:
            best = min(best, sum((l + 1.0) * (0.0 if p.is_dense(l, r) else p.errors[l][r]) for l, r in enumerate(x)))
    result = get_solver("milp", p).solve(p, grid_step=1, mip_gap=1e-9)
    assert result.best.energy == pytest.approx(best, rel=1e-9)
    x = repair_ranks(p, result.best.x)
    assert p.cost(x) <= p.budget
