"""Error weights of the rank-allocation energy: the output sensitivity against a direct autograd computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.core import LmshrinkError
from lmshrink.evaluate.loss import token_nll
from lmshrink.objectives.rank import output_sensitivity, rank_problem
from tiny import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    model = tiny_llama(num_layers=2, vocab_size=128, hidden_size=32, intermediate_size=64)
    ids = torch.randint(0, 128, (5, 20), generator=torch.Generator().manual_seed(1))
    return model, LlamaAdapter().linear_layers(model), ids


def inputs_and_output_gradients(model, linears, ids):
    """Every matrix's input and ∂L/∂(output) of the summed NLL of the whole batch, in one pass with autograd.grad."""
    ins, outs = {}, {}

    def keep(name):
        def fn(module, args, output):
            ins[name], outs[name] = args[0], output

        return fn

    hooks = [m.register_forward_hook(keep(n)) for n, m in linears.items()]
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    for h in hooks:
        h.remove()
    names = list(outs)
    grads = torch.autograd.grad(token_nll(logits, ids).sum(), [outs[n] for n in names])
    return ins, dict(zip(names, grads))


def test_output_sensitivity_is_the_mean_squared_output_gradient(tiny):
    model, linears, ids = tiny
    got = output_sensitivity(model, linears, ids, batch_size=2)
    _, grads = inputs_and_output_gradients(model, linears, ids)
    for n, g in grads.items():
        want = float(g.double().pow(2).sum()) / (ids.numel() * linears[n].out_features)
        assert got[n] == pytest.approx(want, rel=1e-5)
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    assert all(p.grad is None for p in model.parameters())


def test_fisher_weights_enter_the_problem_as_half_the_sensitivity(tiny):
    from lmshrink.compress.factoring import svd_factors
    from lmshrink.data import Calibration
    from lmshrink.plugins import get_objective

    model, linears, ids = tiny
    factors = svd_factors(model, linears, ids, progress=False, dtype=torch.float64)
    objective = get_objective("fermi-rank")
    calibration = Calibration(ids, "test", {})
    opts = objective.validate({"ratio": 0.5, "error_weights": "fisher", "batch_size": 5, "progress": False})
    problem = objective.pose(factors, model, LlamaAdapter(), calibration, opts)
    f = output_sensitivity(model, linears, ids, batch_size=5)
    assert np.allclose([problem.weight(l) for l in range(problem.num_matrices)], [0.5 * f[n] for n in factors.names],
                       rtol=1e-12)
    rel = objective.pose(factors, model, LlamaAdapter(), calibration, {**opts, "error_weights": "relative"})
    s = factors.factors[factors.names[3]].sigma
    assert rel.weight(3) == pytest.approx(1 / float((s**2).sum()))
    with pytest.raises(LmshrinkError, match="one finite, non-negative error weight"):
        rank_problem(factors, 0.5, weights=[1.0])


def test_benchmark_method_specs_name_the_allocation_whitening_and_update():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "svd" / "run.py"
    spec = importlib.util.spec_from_file_location("svd_bench_run", path)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert run.split_method("fermigrad") == ("fermigrad", "dense", "none", False, "none")
    assert run.split_method("milp-fisher+seq+ls") == ("milp-fisher", "sequential", "ls", False, "none")
    assert run.split_method("uniform+seq+joint") == ("uniform", "sequential", "joint", False, "none")
    for bad in ("fermigrad+ls", "nope+seq", "milp+twice"):
        with pytest.raises(SystemExit):
            run.split_method(bad)


def test_aligned_fisher_errors_equal_the_fisher_form_on_each_ranks_output_error(tiny):
    from lmshrink.compress.factoring import svd_factors
    from lmshrink.objectives.rank import aligned_fisher_errors

    model, linears, ids = tiny
    factors = svd_factors(model, linears, ids, progress=False, dtype=torch.float64)
    got = aligned_fisher_errors(model, linears, factors, ids, batch_size=2)
    # direct: ½ Σ_t (g_tᵀ (W_r − W) x_t)² per rank from one whole-batch pass
    ins, grads = inputs_and_output_gradients(model, linears, ids)
    for n, g in grads.items():
        f = factors.factors[n]
        W = linears[n].weight.detach().double()
        x = ins[n].detach().double().reshape(-1, W.shape[1])
        g = g.double().reshape(-1, W.shape[0])
        assert got[n].shape == (f.max_rank + 1,) and got[n][-1] == 0.0
        for r in (0, 1, f.max_rank // 2, f.max_rank - 1):
            A, B = f.truncated(r)
            dy = x @ (A @ B - W).T
            want = 0.5 * float(((g * dy).sum(-1) ** 2).sum())
            assert got[n][r] == pytest.approx(want, rel=1e-4, abs=1e-9)
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())


def test_aligned_errors_enter_the_problem_as_its_error_table(tiny):
    from lmshrink.compress.factoring import svd_factors
    from lmshrink.data import Calibration
    from lmshrink.objectives.rank import aligned_fisher_errors
    from lmshrink.plugins import get_objective

    model, linears, ids = tiny
    factors = svd_factors(model, linears, ids, progress=False, dtype=torch.float64)
    objective = get_objective("fermi-rank")
    opts = objective.validate({"ratio": 0.5, "error_weights": "fisher-aligned", "batch_size": 5, "progress": False})
    problem = objective.pose(factors, model, LlamaAdapter(), Calibration(ids, "test", {}), opts)
    want = aligned_fisher_errors(model, linears, factors, ids, batch_size=5)
    assert problem.weights is None
    for l, n in enumerate(factors.names):
        be = problem.break_even(l)
        np.testing.assert_allclose(problem.tail_table(l)[:be], want[n][:be], rtol=1e-12)
        assert not problem.tail_table(l)[be:].any()
