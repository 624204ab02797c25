"""The trust-region composite for rank allocation and the relinearized probe, against brute force and autograd."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lmshrink.core import LmshrinkError, RankAllocationProblem
from lmshrink.core.rank import Probe
from lmshrink.plugins import get_solver
from lmshrink.solvers.rank_trust_region import energy_probe, fitted_scale, region_problem, scaled_model


def small_problem(seed: int = 0, ratio: float = 0.5) -> RankAllocationProblem:
    rng = np.random.default_rng(seed)
    shapes = [(6, 5), (5, 6), (7, 5), (6, 6), (5, 7)]
    sigmas = [np.sort(rng.gamma(2.0, size=min(s)))[::-1] for s in shapes]
    total = sum(m * n for m, n in shapes)
    return RankAllocationProblem(names=[f"m{i}" for i in range(len(shapes))], shapes=shapes, singular_values=sigmas,
                                 budget=float(int(ratio * total)))


def feasible_states(problem: RankAllocationProblem) -> list[np.ndarray]:
    return [np.array(x) for x in itertools.product(*(problem.allowed_ranks(l) for l in range(problem.num_matrices)))
            if problem.is_feasible(np.array(x))]


def coupled_probe(problem: RankAllocationProblem, coupling: float):
    """A planted non-additive loss L(r) = Σ_l e_l + c·e_0·Σ_{l>0} e_l (the first matrix's error amplifies every
    other's, as an early layer's does), and its exact one-matrix-at-a-time tables."""

    def loss(x: np.ndarray) -> float:
        e = [problem.tail_table(l)[x[l]] for l in range(problem.num_matrices)]
        return float(sum(e) + coupling * e[0] * sum(e[1:]))

    def probe(ranks):
        at = np.asarray(ranks, dtype=np.int64)
        tables = []
        for l in range(problem.num_matrices):
            row = []
            for r in range(problem.max_rank(l) + 1):
                moved = at.copy()
                moved[l] = r if r < problem.break_even(l) else problem.max_rank(l)
                row.append(loss(moved) - loss(at))
            tables.append(np.array(row))
        probe.calls += 1
        return Probe(loss=loss(at), tables=tables)

    probe.calls = 0
    return probe, loss


def test_with_the_energy_as_probe_it_keeps_the_childs_optimum_which_is_brute_force():
    problem = small_problem()
    solver = get_solver("trust-region", RankAllocationProblem)
    assert solver.name == "rank-trust-region" and "probe" in solver.options and "grid_step" in solver.options
    got = solver.solve(problem, grid_step=1)
    best = min(problem.energy(x) for x in feasible_states(problem))
    assert got.best.energy == pytest.approx(best, rel=1e-12)
    history = got.info["trust_region"]
    assert history[0]["round"] == 0 and history[-1].get("stopped") == "the child keeps the allocation"
    assert got.info["solve_time_s"] >= got.info["child_solve_time_s"] > 0  # the whole, and milp's first solve


def test_on_a_coupled_loss_it_descends_to_the_brute_force_optimum_and_never_rises():
    problem = small_problem(seed=3, ratio=0.55)
    probe, loss = coupled_probe(problem, coupling=0.3)
    states = feasible_states(problem)
    child = get_solver("milp", RankAllocationProblem).solve(problem, grid_step=1).best.x
    true_best = min(loss(x) for x in states)
    assert loss(child) > true_best + 1e-9  # the additive problem's optimum is not the coupled loss's
    got = get_solver("trust-region", RankAllocationProblem).solve(problem, grid_step=1, probe=probe, rounds=12,
                                                                  radius=1.0)
    history = got.info["trust_region"]
    kept = [h["loss"] for h in history if h.get("accepted")]
    assert kept == sorted(kept, reverse=True) and kept[0] == pytest.approx(loss(child))
    assert got.info["measured_loss"] == pytest.approx(loss(got.best.x)) == pytest.approx(true_best, rel=1e-9)
    assert problem.is_feasible(got.best.x) and got.info["probes"] == probe.calls


def test_the_fitted_curvature_scale_makes_the_model_predict_the_measured_change():
    first = [np.array([0.0, -2.0, -3.0]), np.array([1.0, 0.0, -1.0])]
    curvature = [np.array([0.0, 0.5, 1.0]), np.array([0.25, 0.0, 0.25])]
    probe = Probe(loss=1.0, tables=[f + c for f, c in zip(first, curvature)], curvature=curvature)
    cand = np.array([2, 2])  # F = −4, C = 1.25: a measured change of −1.5 needs c = (−1.5 + 4) / 1.25 = 2
    scale = fitted_scale(probe, cand, measured=-1.5, scale=1.0)
    assert scale == pytest.approx(2.0)
    model = scaled_model(probe, scale)
    assert sum(t[r] for t, r in zip(model.tables, cand)) == pytest.approx(-1.5)
    assert model.tables[1][0] == pytest.approx(1.0 + 2 * 0.25) and scaled_model(probe, 1.0) is probe
    assert fitted_scale(probe, cand, measured=-5.0, scale=3.0) == 1.0  # never below the probe's own curvature
    assert fitted_scale(probe, np.array([0, 1]), measured=-5.0, scale=3.0) == 3.0  # no curvature there: kept


def test_on_an_overshooting_model_the_fitted_curvature_reaches_the_optimum_in_fewer_probes():
    problem = small_problem(seed=3, ratio=0.55)
    probe, loss = coupled_probe(problem, coupling=0.3)

    def overshooting(ranks):  # exact tables t minus ½|t| (too hopeful), the ½|t| declared curvature: c = 2 is exact
        got = probe(ranks)
        half = [0.5 * np.abs(t) for t in got.tables]
        return Probe(got.loss, [t - h for t, h in zip(got.tables, half)], curvature=half)

    overshooting.names = list(problem.names)
    true_best = min(loss(x) for x in feasible_states(problem))
    solver = get_solver("trust-region", RankAllocationProblem)
    plain = solver.solve(problem, grid_step=1, probe=overshooting, rounds=12, radius=1.0)
    fitted = solver.solve(problem, grid_step=1, probe=overshooting, rounds=12, radius=1.0, fit_curvature=True)
    for got in (plain, fitted):
        kept = [h["loss"] for h in got.info["trust_region"] if h.get("accepted")]
        assert kept == sorted(kept, reverse=True)
        assert got.info["measured_loss"] == pytest.approx(true_best, rel=1e-9)
    scales = [h["curvature_scale"] for h in fitted.info["trust_region"] if "curvature_scale" in h]
    assert scales[0] == 1.0 and 1.0 < scales[1] <= 2.0  # raised toward the planted 2 after the first candidate
    assert fitted.info["probes"] == 3 < plain.info["probes"] == 13


def test_the_region_problem_prices_each_move_by_the_probe_and_bounds_the_ranks():
    problem = small_problem()
    at = np.array([2, 2, 2, 3, 2])
    probe = energy_probe(problem)(at)
    region = region_problem(problem, at, probe, radius=0.25)
    for l in range(problem.num_matrices):
        allowed = region.allowed_ranks(l)
        k = problem.max_rank(l)
        assert set(allowed) <= set(range(at[l] - 1, at[l] + 2)) | {k}
        tail = problem.tail_table(l)
        for r in allowed:  # shifted by a constant per matrix: differences are the energy's
            assert region.tail_table(l)[r] - region.tail_table(l)[at[l]] == pytest.approx(tail[r] - tail[at[l]])
    dense = at.copy()
    dense[0] = problem.max_rank(0)  # a dense matrix may step down to its largest factored ranks
    assert list(region_problem(problem, dense, probe, radius=0.25).allowed_ranks(0)) == [
        problem.break_even(0) - 1, problem.max_rank(0)]
    with pytest.raises(LmshrinkError, match="tables for"):
        region_problem(problem, at, Probe(0.0, probe.tables[:2]), 0.25)
    with pytest.raises(LmshrinkError, match="rounds"):
        get_solver("trust-region", RankAllocationProblem).solve(problem, radius=0.0)
    with pytest.raises(LmshrinkError, match="not the problem's"):
        bad = energy_probe(problem)
        bad.names = ["x"]
        get_solver("trust-region", RankAllocationProblem).solve(problem, probe=bad)


def test_a_table_may_price_the_dense_state():
    problem = small_problem()
    errors = [np.arange(problem.max_rank(l) + 1, dtype=float)[::-1] + 1.0 for l in range(problem.num_matrices)]
    priced = RankAllocationProblem(names=problem.names, shapes=problem.shapes,
                                   singular_values=problem.singular_values, budget=problem.budget, errors=errors)
    for l in range(problem.num_matrices):
        be, k = priced.break_even(l), priced.max_rank(l)
        assert np.all(priced.tail_table(l)[be:] == errors[l][k]) and priced.tail_table(l)[0] == errors[l][0]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("target,curvature", [("ce", "empirical"), ("kl", "empirical"), ("kl", "sampled")])
def test_relinearized_probe_equals_first_plus_second_order_by_autograd_on_the_truncated_model(target, curvature):
    from lmshrink.adapters.llama import LlamaAdapter
    from lmshrink.compress.factoring import svd_factors
    from lmshrink.evaluate.loss import token_nll
    from lmshrink.objectives.rank import RelinearizedProbe
    from tiny import tiny_llama

    model = tiny_llama(num_layers=2, vocab_size=128, hidden_size=32, intermediate_size=64)
    ids = torch.randint(0, 128, (5, 20), generator=torch.Generator().manual_seed(1))
    linears = LlamaAdapter().linear_layers(model)
    factors = svd_factors(model, linears, ids, progress=False, dtype=torch.float64)
    names = factors.names
    at = [max(1, factors.factors[n].max_rank // 2 - i % 3) for i, n in enumerate(names)]
    before = {n: linears[n].weight.detach().clone() for n in names}
    from lmshrink.evaluate.kl import summarize, topk_kl

    with torch.no_grad():
        dense = summarize(model(input_ids=ids, use_cache=False).logits[:, :-1], 16)
    got = RelinearizedProbe(model, factors, names, ids, batch_size=2 if curvature == "empirical" else 5,
                            target=target, top_k=16, curvature=curvature, seed=3)(at)
    assert all(torch.equal(linears[n].weight, before[n]) for n in names)  # the model is restored

    # direct: the model with each weight set to its rank-r⁰ truncation, inputs and output gradients by autograd
    truncated = {n: factors.factors[n].truncated(r) for n, r in zip(names, at)}
    with torch.no_grad():
        for n in names:
            A, B = truncated[n]
            linears[n].weight.copy_((A @ B).float())
    ins, outs = {}, {}

    def keep(name):
        def fn(module, args, output):
            ins[name], outs[name] = args[0], output

        return fn

    hooks = [linears[n].register_forward_hook(keep(n)) for n in names]
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    for h in hooks:
        h.remove()
    nll = token_nll(logits, ids) if target == "ce" else topk_kl(logits, *dense)
    grads = dict(zip(names, torch.autograd.grad(nll.sum(), [outs[n] for n in names], retain_graph=True)))
    curv = grads
    if curvature == "sampled":  # ĝ: the gradient of −log q(ŷ), ŷ drawn from q as the probe draws it
        logq = torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])
        drawn = torch.multinomial(logq.detach().exp(), 1, generator=torch.Generator().manual_seed(3))
        curv = dict(zip(names, torch.autograd.grad(-logq.gather(-1, drawn).sum(), [outs[n] for n in names])))
    with torch.no_grad():
        for n in names:
            linears[n].weight.copy_(before[n])
    count = ids[:, 1:].numel()
    assert got.loss == pytest.approx(float(nll.detach().sum()) / count, rel=1e-5)
    for l, n in enumerate(names):
        f = factors.factors[n]
        x = ins[n].detach().double().reshape(-1, f.shape[1])
        g = grads[n].double().reshape(-1, f.shape[0])
        h = curv[n].double().reshape(-1, f.shape[0])
        A0, B0 = truncated[n]
        assert got.tables[l][at[l]] == 0.0 and got.tables[l].shape == (f.max_rank + 1,)
        for r in (0, at[l] + 1, f.max_rank):
            A, B = f.truncated(r)
            dy = x @ (A @ B - A0 @ B0).T
            second = float(0.5 * (h * dy).sum(-1).pow(2).sum()) / count
            want = float((g * dy).sum()) / count + second
            assert got.tables[l][r] == pytest.approx(want, rel=1e-3, abs=1e-7)
            assert got.curvature[l][r] == pytest.approx(second, rel=1e-3, abs=1e-7)
