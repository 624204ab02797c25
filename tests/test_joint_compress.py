"""The joint removal-and-rank problem, its exact solver and the ``compress`` flow on a tiny Llama."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lmshrink.core import LmshrinkError
from lmshrink.core.joint import JointCompressionProblem
from lmshrink.core.problem import load_problem


def tiny_problem(budget: float = 20, **kw) -> JointCompressionProblem:
    """Two branches: branch 0 holds a 3×2 and a 2×3 matrix, branch 1 a 4×4 one."""
    rng = np.random.default_rng(3)
    shapes = [(3, 2), (2, 3), (4, 4)]
    svs = [np.sort(rng.uniform(0.1, 2.0, min(s)))[::-1] for s in shapes]
    return JointCompressionProblem(branches=["a", "b"], removal_loss=[0.8, 0.5], matrices=["a.q", "a.o", "b.d"],
                                   shapes=shapes, singular_values=svs, branch_of=[0, 0, 1],
                                   sensitivity=[0.3, 0.6, 1.1], budget=budget, **kw)


def brute_force(p: JointCompressionProblem) -> tuple[float, np.ndarray]:
    """Lowest energy over every branch decision and every rank of every matrix (feasibility checked by the problem)."""
    best = (np.inf, None)
    ranges = [range(2)] * p.num_branches + [range(p.max_rank(m) + 1) for m in range(p.num_matrices)]
    for x in itertools.product(*ranges):
        x = np.array(x)
        if p.is_feasible(x):
            e = p.energy(x)
            if e < best[0] - 1e-12:
                best = (e, x)
    return best


def test_energy_and_cost_by_hand():
    p = tiny_problem()
    s2 = [s**2 for s in p.singular_values]
    # keep branch 0 with a.q at rank 1 (factored: 1·(3+2) = 5 < 6) and a.o dense; remove branch 1
    x = p.state([1, 0], [1, 2, 3])
    assert p.cost(x) == 5 + 6
    assert p.energy(x) == pytest.approx(0.5 + 0.3 * s2[0][1:].sum() / s2[0].sum())
    assert p.is_feasible(x) and p.removed(x) == ["b"] and p.ranks(x) == {"a.q": 1, "a.o": 2}
    assert not p.is_feasible(np.array([1, 0, 1, 2, 3]))  # a removed branch's rank must be 0
    assert not p.is_feasible(p.state([1, 1], [2, 2, 4]))  # 6 + 6 + 16 > 20


@pytest.mark.parametrize("budget", [0, 7, 12, 20, 27, 40])
@pytest.mark.parametrize("mode", ["joint", "removal", "svd"])
def test_milp_equals_brute_force(budget, mode):
    from lmshrink.plugins import get_solver

    settings = {"removal": {"allow_factoring": False}, "svd": {"allow_removal": False}}.get(mode, {})
    try:
        p = tiny_problem(budget, **settings)
    except LmshrinkError:
        assert mode == "svd" and budget < 5 + 5 + 8  # each matrix at rank 1 costs that much at least
        return
    best, _ = brute_force(p)
    sol = get_solver("joint-milp", JointCompressionProblem).solve(p, grid_step=1, mip_gap=0.0, num_solutions=3)
    assert p.is_feasible(sol.best.x)
    assert sol.best.energy == pytest.approx(best, abs=1e-9)
    energies = [s.energy for s in sol]
    assert energies == sorted(energies) and len({tuple(s.x) for s in sol}) == len(sol)


def test_round_trip_through_a_file(tmp_path):
    p = tiny_problem(allow_factoring=False)
    q = load_problem(p.save(tmp_path / "joint.json"))
    assert isinstance(q, JointCompressionProblem) and not q.allow_factoring
    x = q.state([1, 0], [2, 2, 0])
    assert q.energy(x) == p.energy(x) and q.cost(x) == p.cost(x)


def _error_tables(p: JointCompressionProblem) -> list[np.ndarray]:
    """A random, non-monotone loss per rank of each matrix (0 at the dense rank)."""
    rng = np.random.default_rng(7)
    return [np.append(rng.uniform(0, 1.5, p.max_rank(m)), 0.0) for m in range(p.num_matrices)]


@pytest.mark.parametrize("budget", [7, 12, 20, 27])
def test_an_error_table_replaces_the_truncation_term_and_milp_equals_brute_force(budget, tmp_path):
    from lmshrink.plugins import get_solver

    base = tiny_problem(budget)
    p = tiny_problem(budget, errors=_error_tables(base))
    x = p.state([1, 0], [1, 2, 3])
    assert p.energy(x) == pytest.approx(0.5 + p.errors[0][1])  # a.o at rank 2 is dense: no term
    assert p.factored(x) == ["a.q"] and p.removed(x) == ["b"]
    best, _ = brute_force(p)
    sol = get_solver("joint-milp", JointCompressionProblem).solve(p, grid_step=1, mip_gap=0.0)
    assert p.is_feasible(sol.best.x) and sol.best.energy == pytest.approx(best, abs=1e-9)
    q = load_problem(p.save(tmp_path / "joint.json"))
    assert q.to_dict()["format"] == "lmshrink.joint_compression/2" and q.energy(x) == p.energy(x)
    with pytest.raises(LmshrinkError, match="errors of a.q must be 3 finite"):
        tiny_problem(budget, errors=[np.zeros(2)] + p.errors[1:])


def test_bad_input_is_refused():
    with pytest.raises(LmshrinkError, match="removal_loss"):
        tiny_problem().with_settings().__class__(branches=["a"], removal_loss=[1, 2], matrices=[], shapes=[],
                                                 singular_values=[], branch_of=[], sensitivity=[], budget=1)


# --- the flow on a tiny Llama --------------------------------------------------------------------------------------
def _tiny_loaded(num_layers: int = 4):
    from lmshrink.models import LoadedModel
    from tests.tiny import tiny_llama, tiny_tokenizer

    return LoadedModel(tiny_llama(num_layers), tiny_tokenizer(), "tiny")


def _run(tmp_path, **kw):
    from lmshrink.pipeline.compress import compress_model

    settings = dict(ratio=0.6, samples=6, seq_len=32, loss_windows=4, probe_layers=1, evaluate=False, out=tmp_path / "out", progress=False, solver_options={"grid_step": 4})
    settings.update(kw)
    return compress_model(_tiny_loaded(), **settings)


def test_compress_removes_and_factors_and_reloads_identically(tmp_path):
    import json

    import torch

    from lmshrink import load_compressed
    from lmshrink.adapters.sublayer import removed_branches

    # at half the budget the optimum on this tiny model (seed 0) with the probes' truncation term removes branches
    # and factors matrices
    result = _run(tmp_path, ratio=0.5, truncation="probes")
    assert result.removed and result.report["factored"]
    problem, x = result.problem, result.solutions.best.x
    assert problem.is_feasible(x) and problem.cost(x) <= 0.5 * problem.total_dense
    report = json.loads((result.out / "report.json").read_text())
    assert report["removed_branches"] == result.removed
    assert report["params"]["kept"] == problem.cost(x)
    assert (result.out / "report.md").exists() and (result.out / "plan.json").exists()
    reloaded = load_compressed(result.out / "model")
    ids = torch.randint(0, 320, (2, 24))
    with torch.no_grad():
        a = result.model(input_ids=ids).logits
        b = reloaded(input_ids=ids).logits
    assert torch.equal(a, b)
    assert report["verify"]["identical"]
    transforms = [t["type"] for t in json.loads((result.out / "model" / "lmshrink_config.json").read_text())
                  ["transforms"]]
    assert transforms == ["remove_sublayers", "low_rank"]
    # the removed branches are gone in the reloaded model too (a layer that lost both is gone whole)
    gone = sum(len(v) for v in removed_branches(reloaded).values())
    whole = 4 - reloaded.config.num_hidden_layers
    assert gone + 2 * whole == len(result.removed)


def test_the_command_refuses_a_bad_ratio_before_loading(capsys):
    from lmshrink.cli import main

    assert main(["compress", "--ratio", "1.5", "--quiet"]) == 2
    assert "ratio must be in (0, 1]" in capsys.readouterr().err


def test_the_command_parses_its_flags():
    from lmshrink.cli import build_parser

    args = build_parser().parse_args(["compress", "--ratio", "0.6", "--mode", "removal"])
    assert args.ratio == 0.6 and args.mode == "removal"


def test_measurements_equal_whole_passes_on_modified_copies():
    """ΔL_b and a probe's loss increase, measured mid-stack, equal whole forward passes of modified copies."""
    import copy

    import torch

    from lmshrink.core.rank import break_even_rank
    from lmshrink.evaluate.loss import per_sample_loss
    from lmshrink.objectives.joint import measure_joint
    from lmshrink.plugins import find_adapter

    net = _tiny_loaded(3).model
    adapter = find_adapter(net)
    ids = torch.randint(0, 320, (4, 24), generator=torch.Generator().manual_seed(1))
    m = measure_joint(net, adapter, ids, probe_layers=1, probe_fractions=(0.5,), truncation="probes")
    with torch.no_grad():
        base = per_sample_loss(net, ids).double().mean().item()
        gone = adapter.remove(copy.deepcopy(net), [3], "sublayer")  # layer 1's MLP
        removed = per_sample_loss(gone, ids).double().mean().item()
        name = "model.layers.0.mlp.down_proj"
        f = m.factors.factors[name]
        r = max(1, round(0.5 * break_even_rank(*f.shape)))
        A, B = f.truncated(r)
        cut = copy.deepcopy(net)
        cut.get_submodule(name).weight.copy_(A @ B)
        truncated = per_sample_loss(cut, ids).double().mean().item()
    assert m.branches[3] == "model.layers.1.mlp"
    assert m.removal_loss[3] == pytest.approx(removed - base, abs=1e-5)
    point = m.fits["down_proj"]["points"][0]
    s2 = f.sigma**2
    assert point["relative_error"] == pytest.approx(s2[r:].sum() / s2.sum())
    assert point["delta_loss"] == pytest.approx(truncated - base, abs=1e-5)
    e, d = point["relative_error"], point["delta_loss"]
    assert m.sensitivity["down_proj"] == pytest.approx(max(d / e, 0.0))  # (3) with one point: the ratio


def test_the_fisher_truncation_term_is_the_aligned_table_per_predicted_token():
    import torch

    from lmshrink.objectives.joint import joint_problem, measure_joint
    from lmshrink.objectives.rank import aligned_fisher_errors
    from lmshrink.plugins import find_adapter

    net = _tiny_loaded(3).model
    adapter = find_adapter(net)
    ids = torch.randint(0, 320, (4, 24), generator=torch.Generator().manual_seed(1))
    m = measure_joint(net, adapter, ids)
    assert m.truncation == "fisher" and m.to_dict()["truncation"] == "fisher"
    table = aligned_fisher_errors(net, adapter.linear_layers(net), m.factors, ids)
    p = joint_problem(m, 0.6)
    for i, name in enumerate(m.matrices):
        np.testing.assert_allclose(p.errors[i], table[name] / (4 * 23), rtol=1e-6)
    with pytest.raises(LmshrinkError, match="truncation must be one of fisher, probes"):
        measure_joint(net, adapter, ids, truncation="slopes")
