"""SVD compression end to end on tiny models: low-rank / PivGa layers, save → load, dense export, the loss oracle,
fermigrad on a real (tiny) model, and the ``lmshrink svd`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lmshrink
from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.cli import main
from lmshrink.compress.io import load_compressed, save_compressed
from lmshrink.compress.pivga import PivGaLinear
from lmshrink.compress.svd import LowRankLinear, compress_model, export_dense, svd_factors
from lmshrink.core import RankAllocationProblem, load_problem
from lmshrink.objectives.fermi_rank import SoftTruncationLoss, rank_problem
from lmshrink.plugins import get_solver
from tiny import tiny_llama


pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(tie=False, seed=0):
    model = tiny_llama(num_layers=2, vocab_size=96, seed=seed, hidden_size=48, intermediate_size=96,
                       tie_word_embeddings=tie)
    ids = torch.randint(0, 96, (8, 32), generator=torch.Generator().manual_seed(seed))
    factors = svd_factors(model, LlamaAdapter().linear_layers(model), ids, batch_size=4, progress=False)
    return model, ids, factors


@pytest.fixture(scope="module")
def tiny():
    return _setup()


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("pivga", [False, True])
@pytest.mark.parametrize("tie", [False, True])
def test_save_load_gives_identical_logits(tmp_path, pivga, tie):
    model, ids, factors = _setup(tie=tie)
    problem = rank_problem(factors, 0.6, pivga=pivga)
    x = get_solver("uniform", problem).solve(problem).best.x
    ranks = dict(zip(problem.names, x))
    summary = compress_model(model, factors, ranks, pivga=pivga)
    kind = PivGaLinear if pivga else LowRankLinear
    assert all(isinstance(model.get_submodule(n), kind) for n in ranks)
    assert summary.params_stored == (summary.params_pivga if pivga else summary.params_plain)
    assert summary.params_stored == problem.cost(x) <= problem.budget
    before = logits(model, ids)
    save_compressed(model, tmp_path / "m")
    again = lmshrink.load_compressed(tmp_path / "m")
    assert torch.equal(logits(again, ids), before)
    assert type(again.get_submodule(problem.names[0])) is kind


def test_pivga_model_matches_plain_model(tiny):
    model, ids, factors = tiny
    problem = rank_problem(factors, 0.5)
    ranks = dict(zip(problem.names, get_solver("uniform", problem).solve(problem).best.x))
    import copy

    a, b = copy.deepcopy(model), copy.deepcopy(model)
    compress_model(a, factors, ranks, pivga=False)
    compress_model(b, factors, ranks, pivga=True)
    la, lb = logits(a, ids), logits(b, ids)
    assert float((la - lb).norm() / la.norm()) < 1e-5


def test_dense_ranks_keep_the_original_layer(tiny):
    model, ids, factors = tiny
    import copy

    net = copy.deepcopy(model)
    names = factors.names
    full = {n: min(factors.factors[n].shape) for n in names}  # every rank at k: dense
    be = {n: int(np.ceil(np.prod(factors.factors[n].shape) / sum(factors.factors[n].shape))) for n in names}
    summary = compress_model(net, factors, {**full, names[0]: be[names[0]]})  # at break-even: dense too
    assert set(summary.kinds.values()) == {"dense"}
    assert summary.params_stored == summary.params_dense
    assert torch.equal(logits(net, ids), logits(model, ids))


def test_export_dense_loads_with_transformers(tmp_path, tiny):
    from transformers import AutoModelForCausalLM

    model, ids, factors = tiny
    import copy

    net = copy.deepcopy(model)
    problem = rank_problem(factors, 0.5, pivga=True)
    ranks = dict(zip(problem.names, get_solver("uniform", problem).solve(problem).best.x))
    compress_model(net, factors, ranks, pivga=True)
    export_dense(net, tmp_path / "dense")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()
    assert all(type(m) is torch.nn.Linear for m in LlamaAdapter().linear_layers(plain).values())
    a, b = logits(net, ids), logits(plain, ids)
    assert float((a - b).norm() / a.norm()) < 1e-5
    # each exported weight has exactly the chosen rank
    name = problem.names[0]
    W = plain.get_submodule(name).weight.detach().double()
    assert int(torch.linalg.matrix_rank(W, rtol=1e-5)) == ranks[name]


def test_oracle_is_the_model_at_full_masks_and_differentiable(tiny):
    model, ids, factors = tiny
    problem = rank_problem(factors, 0.5)
    oracle = SoftTruncationLoss(model, factors, problem.names, ids, target="kl", batch_size=4)
    ones = [torch.ones(problem.max_rank(l), dtype=torch.float64, requires_grad=True)
            for l in range(problem.num_matrices)]
    kl = oracle(ones)
    assert float(kl.detach()) == pytest.approx(0.0, abs=1e-6)  # soft truncation with f = 1 is the model itself
    # masks zeroing the tail of one matrix change the loss, and the gradient reaches every mask
    masks = [torch.full((problem.max_rank(l),), 0.7, dtype=torch.float64, requires_grad=True)
             for l in range(problem.num_matrices)]
    loss = oracle(masks)
    loss.backward()
    assert float(loss.detach()) > 0
    assert all(m.grad is not None and float(m.grad.abs().sum()) > 0 for m in masks)
    # the modules are restored after each call
    assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in problem.names)
    ce = SoftTruncationLoss(model, factors, problem.names, ids[:4], target="ce", batch_size=4)
    full_ce = float(ce([torch.ones_like(m.detach()) for m in masks]))
    with torch.no_grad():
        out = model(input_ids=ids[:4], labels=ids[:4])
    assert full_ce == pytest.approx(float(out.loss), rel=1e-5)


def test_top_k_teacher_kl_bounds_and_matches_the_full_kl(tiny):
    model, ids, factors = tiny
    problem = rank_problem(factors, 0.5)
    masks = [torch.linspace(1, 0, problem.max_rank(l), dtype=torch.float64) for l in range(problem.num_matrices)]

    def oracle(k):
        return SoftTruncationLoss(model, factors, problem.names, ids, batch_size=8, teacher_top_k=k)

    full = float(oracle(0)(masks))
    assert float(oracle(96)(masks)) == pytest.approx(full, rel=1e-4)  # K = vocabulary: the full KL
    cached = oracle(8)
    coarse = float(cached(masks))
    assert 0 < coarse <= full + 1e-7  # coarse-graining never increases a KL divergence
    assert len(cached._teacher) == 8
    forwards = []
    hook = model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        assert float(cached(masks)) == pytest.approx(coarse, rel=1e-6)  # same batch, teacher read from the cache
    finally:
        hook.remove()
    assert len(forwards) == 1  # the student pass only


def test_fermigrad_with_model_oracle_meets_the_budget_exactly(tiny):
    model, ids, factors = tiny
    for pivga in (False, True):
        problem = rank_problem(factors, 0.55, pivga=pivga)
        problem.loss = SoftTruncationLoss(model, factors, problem.names, ids, batch_size=4)
        result = get_solver("fermigrad", problem).solve(problem, steps=12, progress=False)
        x = np.array(result.best.x)
        assert result.info["objective"] == "loss oracle" and result.info["oracle_calls"] == 12
        cost = problem.cost(x)
        assert cost <= problem.budget
        for l in range(problem.num_matrices):  # no further rank step fits
            up = [a for a in problem.allowed_ranks(l) if a > x[l]]
            if up:
                assert cost - problem.cost_table(l)[x[l]] + problem.cost_table(l)[up[0]] > problem.budget


def test_objective_plugin_builds_problem_with_oracle(tiny):
    from lmshrink.data import Calibration
    from lmshrink.plugins import get_objective

    model, ids, _ = tiny
    objective = get_objective("fermi-rank")
    problem = objective.build(model, LlamaAdapter(), Calibration(ids, "random"), ratio=0.7, progress=False)
    assert isinstance(problem, RankAllocationProblem) and problem.loss is not None
    assert problem.budget == np.floor(0.7 * problem.total_dense)
    assert problem.metadata["whitening"]["eigen"] == 0
    assert objective.factors.names == problem.names


def test_cli_svd_smoke(tmp_path, tiny_model_dir, text_file):
    out = tmp_path / "out"
    rc = main(["svd", "--model", str(tiny_model_dir), "--data", str(text_file), "--ratio", "0.7", "--pivga",
               "--samples", "8", "--seq-len", "32", "--eval-tokens", "512", "--option", "steps=8",
               "--out", str(out), "--export-dense", "--quiet"])
    assert rc == 0
    for f in ("report.json", "report.md", "problem.json", "model/lmshrink_config.json", "model/model.safetensors",
              "dense/config.json"):
        assert (out / f).exists(), f
    report = json.loads((out / "report.json").read_text())
    p = report["params"]
    assert p["kept_stored"] == p["kept_pivga"] <= p["budget"] <= 0.7 * p["decomposed_dense"]
    assert p["kept_plain"] > p["kept_pivga"]
    assert report["perplexity_before"]["perplexity"] > 0 and report["perplexity_after"]["perplexity"] > 0
    assert report["verify"]["identical"]
    assert len(report["per_matrix"]) == 6 * 7
    assert {"solve", "whitening + SVD", "perplexity after"} <= set(report["timings_s"])
    problem = load_problem(out / "problem.json")
    assert isinstance(problem, RankAllocationProblem) and problem.pivga
    assert [r["rank"] for r in report["per_matrix"]] == [
        report["per_matrix"][i]["rank"] for i in range(len(problem.names))]
    model, tok = load_compressed(out / "model", with_tokenizer=True)
    assert tok is not None
    assert any(isinstance(m, PivGaLinear) for m in model.modules())
    assert "Ranks per matrix" in (out / "report.md").read_text()
    # the saved problem solves from the file with every rank solver
    assert main(["solve", str(out / "problem.json"), "--solver", "uniform", "--top-k", "1"]) == 0
