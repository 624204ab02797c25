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
from lmshrink.compress.svd import LowRankLinear, apply_plan, compress_model, export_dense, svd_factors
from lmshrink.core import LmshrinkError, RankAllocationProblem, RankPlan, load_problem
from lmshrink.objectives.fermi_rank import SoftTruncationLoss, rank_problem
from lmshrink.objectives.rank import sample_rows
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
        oracle = SoftTruncationLoss(model, factors, problem.names, ids, batch_size=4)
        result = get_solver("fermigrad", problem).solve(problem, loss=oracle, steps=12, progress=False)
        x = np.array(result.best.x)
        assert result.info["objective"] == "loss oracle" and result.info["oracle_calls"] == 12
        cost = problem.cost(x)
        assert cost <= problem.budget
        for l in range(problem.num_matrices):  # no further rank step fits
            up = [a for a in problem.allowed_ranks(l) if a > x[l]]
            if up:
                assert cost - problem.cost_table(l)[x[l]] + problem.cost_table(l)[up[0]] > problem.budget


def test_objective_poses_a_plain_problem_and_builds_the_oracle_apart(tiny):
    from lmshrink.data import Calibration
    from lmshrink.plugins import get_objective

    model, ids, factors = tiny
    objective = get_objective("fermi-rank")
    calibration = Calibration(ids, "random")
    problem = objective.build(model, LlamaAdapter(), calibration, ratio=0.7, progress=False)
    assert isinstance(problem, RankAllocationProblem) and not hasattr(problem, "loss")
    assert problem.budget == np.floor(0.7 * problem.total_dense)
    assert problem.metadata["whitening"]["eigen"] == 0
    # stage by stage, as the pipeline calls it: the same factors, the same problem, and the oracle apart
    options = objective.validate({"ratio": 0.7, "progress": False})
    staged = objective.pose(factors, model, LlamaAdapter(), calibration, options)
    assert staged.names == problem.names == factors.names
    for a, b in zip(staged.singular_values, problem.singular_values):
        # two SVDs of the same whitened matrices: equal up to rounding, which for an SVD is relative to the largest
        # singular value (MKL picks kernels by memory alignment, so two calls need not agree to the last bit)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * float(np.max(b)))
    oracle = objective.loss_oracle(model, factors, staged, calibration, options)
    assert isinstance(oracle, SoftTruncationLoss) and oracle.names == staged.names and oracle.target == "kl"
    assert objective.loss_oracle(model, factors, staged, calibration, {**options, "oracle": False}) is None
    probe = objective.allocation_probe(model, factors, staged, calibration, options)
    assert probe.names == staged.names and probe.target == "kl" and probe.top_k == options["teacher_top_k"]
    assert objective.allocation_probe(model, factors, staged, calibration, {**options, "oracle": False}) is None
    assert probe.input_ids is ids  # every calibration sample by default; probe_samples draws a seeded subset
    fewer = objective.allocation_probe(model, factors, staged, calibration, {**options, "probe_samples": 2})
    assert torch.equal(fewer.input_ids, sample_rows(ids, 2, options["seed"])) and fewer.input_ids.shape[0] == 2
    with pytest.raises(LmshrinkError, match="probe_samples"):
        objective.validate({"ratio": 0.7, "probe_samples": -1})


def test_sample_rows_draws_a_seeded_subset_in_order():
    ids = torch.arange(10).reshape(10, 1)
    rows = sample_rows(ids, 4, seed=3)[:, 0].tolist()
    assert len(set(rows)) == 4 and rows == sorted(rows) and rows == sample_rows(ids, 4, seed=3)[:, 0].tolist()
    assert rows != sample_rows(ids, 4, seed=4)[:, 0].tolist()
    assert sample_rows(ids, 0) is ids and sample_rows(ids, 10) is ids
    with pytest.raises(LmshrinkError, match="0 \\(all\\) or positive"):
        sample_rows(ids, -1)


def _plan_of(factors, ratio, pivga):
    problem = rank_problem(factors, ratio, pivga=pivga)
    solutions = get_solver("uniform", problem).solve(problem)
    return problem, RankPlan.from_solution(problem, solutions.best.x, source={"solver": solutions.solver})


@pytest.mark.parametrize("pivga", [False, True])
def test_rank_plan_round_trips_and_compresses_identically_from_disk(tmp_path, tiny, pivga):
    import copy

    model, ids, factors = tiny
    problem, plan = _plan_of(factors, 0.55, pivga)
    # the plan states every matrix's rank and kind, with the energy and cost of the allocation
    x = [plan.ranks[n] for n in problem.names]
    assert plan.energy == pytest.approx(problem.energy(x)) and plan.cost == problem.cost(x) <= plan.budget
    assert {plan.kind(m) for m in plan.matrices} <= {"dense", "pivga" if pivga else "low_rank"}
    assert [m.dense for m in plan.matrices] == [problem.is_dense(l, r) for l, r in enumerate(x)]
    back = RankPlan.load(plan.save(tmp_path / "plan.json"))
    assert back == plan
    assert json.loads((tmp_path / "plan.json").read_text())["format"] == "lmshrink.rank_plan/1"
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    summary = apply_plan(a, factors, plan)
    assert summary.params_stored == plan.cost
    apply_plan(b, factors, back)
    assert torch.equal(logits(a, ids), logits(b, ids))
    # the same as compressing from the name → rank dictionary
    c = copy.deepcopy(model)
    compress_model(c, factors, plan.ranks, pivga=pivga)
    assert torch.equal(logits(a, ids), logits(c, ids))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="x"), "Not a rank plan"),
    (lambda d: d.update(matrices={}), "'matrices', a list"),
    (lambda d: d["matrices"][0].pop("rank"), "needs name, shape, rank and dense"),
    (lambda d: d["matrices"][0].update(rank=2.5), "must be a whole number"),
    (lambda d: d["matrices"][0].update(rank=10**6), "outside 0.."),
    (lambda d: d["matrices"][0].update(dense="no"), "true or false"),
    (lambda d: d["matrices"][0].update(shape=[4]), "must be \\[out, in\\]"),
    (lambda d: d["matrices"].append(dict(d["matrices"][0])), "twice"),
    (lambda d: d.update(energy="low"), "must be a number"),
])
def test_a_malformed_rank_plan_is_refused_in_one_sentence(tiny, edit, message):
    from lmshrink.core import LmshrinkError

    data = _plan_of(tiny[2], 0.55, False)[1].to_dict()
    edit(data)
    with pytest.raises(LmshrinkError, match=message):
        RankPlan.from_dict(data)


def test_a_plan_of_other_matrices_is_refused(tiny):
    import copy

    from lmshrink.core import LmshrinkError
    from lmshrink.core.plan import MatrixRank

    model, _, factors = tiny
    plan = _plan_of(factors, 0.55, False)[1]
    m = plan.matrices[0]
    wrong = RankPlan([MatrixRank(m.name, (m.shape[0], m.shape[1] + 1), m.rank, m.dense)], plan.pivga)
    with pytest.raises(LmshrinkError, match="gives .* the shape"):
        apply_plan(copy.deepcopy(model), factors, wrong)
    with pytest.raises(LmshrinkError, match="not among the decomposed matrices"):
        apply_plan(copy.deepcopy(model), factors, RankPlan([MatrixRank("lm_head", (96, 48), 4, False)]))


@pytest.mark.parametrize("pivga", [False, True])
@pytest.mark.parametrize("edit, message", [
    (lambda layers: layers.update({"model.layers.0.mlp": 3}), "not a linear layer"),
    (lambda layers: layers.update({"model.embed_tokens.weight": 3}), "not a module of the LlamaForCausalLM"),
    (lambda layers: layers.update({"model.layers.0.self_attn.q_proj": 49}), "q_proj is 49, outside 0..48"),
    (lambda layers: layers.update({"model.layers.0.self_attn.q_proj": "3"}), "q_proj is '3', not an integer"),
    (lambda layers: layers.update({"__class__": 3}), "not a module path"),
])
def test_a_saved_low_rank_transform_is_checked_before_it_is_replayed(tmp_path, tiny, pivga, edit, message):
    import copy

    from lmshrink.core import LmshrinkError

    model, _, factors = tiny
    net = copy.deepcopy(model)
    apply_plan(net, factors, _plan_of(factors, 0.55, pivga)[1])
    save_compressed(net, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "lmshrink_config.json").read_text())
    edit(meta["transforms"][0]["layers"])
    (tmp_path / "m" / "lmshrink_config.json").write_text(json.dumps(meta))
    with pytest.raises(LmshrinkError, match=message):
        load_compressed(tmp_path / "m")


def test_pivga_pivots_that_are_not_a_permutation_are_refused(tmp_path, tiny):
    import copy

    from safetensors.torch import load_file, save_file

    from lmshrink.core import LmshrinkError

    model, _, factors = tiny
    net = copy.deepcopy(model)
    apply_plan(net, factors, _plan_of(factors, 0.55, True)[1])
    save_compressed(net, tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    key = next(k for k in weights if k.endswith(".inverse"))
    weights[key][0] = weights[key][1]  # one output row twice, another never
    save_file(weights, tmp_path / "m" / "model.safetensors")
    with pytest.raises(LmshrinkError, match="not a permutation of its"):
        load_compressed(tmp_path / "m")


def test_factors_round_trip_through_safetensors_and_refuse_other_inputs(tmp_path, tiny):
    from lmshrink.compress.svd import SvdFactors
    from lmshrink.core import LmshrinkError

    _, _, factors = tiny
    path = factors.save(tmp_path / "f.safetensors", key={"samples": 8})
    assert {p.name for p in tmp_path.iterdir()} == {"f.safetensors", "f.json"}  # no temporary file left
    back = SvdFactors.load(path, key={"samples": 8})
    assert back.names == factors.names and back.groups == factors.groups and back.info == factors.info
    for name, f in factors.factors.items():
        g = back.factors[name]
        assert g.shape == f.shape and g.whitening == f.whitening
        np.testing.assert_array_equal(g.sigma, f.sigma)
        assert torch.equal(g.left, f.left) and torch.equal(g.right, f.right)
        assert g.left.stride() == f.left.stride() and g.right.stride() == f.right.stride()  # same layout, same sums
    assert any(not f.left.is_contiguous() for f in factors.factors.values())  # (eigh's U is column-major)
    with pytest.raises(LmshrinkError, match="computed from other inputs"):
        SvdFactors.load(path, key={"samples": 16})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LmshrinkError, match="does not match the checksum"):
        SvdFactors.load(path)
    with pytest.raises(LmshrinkError, match="No saved factors"):
        SvdFactors.load(tmp_path / "missing.safetensors")


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
    assert {"whiten", "problem", "solve", "compress", "save", "perplexity after"} <= set(report["timings_s"])
    problem = load_problem(out / "problem.json")
    assert isinstance(problem, RankAllocationProblem) and problem.pivga
    plan = RankPlan.load(out / "plan.json")
    assert plan.pivga and plan.names == problem.names == [r["name"] for r in report["per_matrix"]]
    assert [r["rank"] for r in report["per_matrix"]] == [plan.ranks[n] for n in problem.names]
    assert plan.cost == p["kept_stored"] and plan.energy == report["energy"]
    assert report["solver"]["info"]["options"]["loss"].startswith("SoftTruncationLoss(kl")
    model, tok = load_compressed(out / "model", with_tokenizer=True)
    assert tok is not None
    assert any(isinstance(m, PivGaLinear) for m in model.modules())
    assert "Ranks per matrix" in (out / "report.md").read_text()
    # the saved problem solves from the file with every rank solver
    assert main(["solve", str(out / "problem.json"), "--solver", "uniform", "--top-k", "1"]) == 0
    # plan.json applied to a fresh copy of the model, on the same calibration, gives the saved model's logits
    from lmshrink.pipeline.inputs import load_inputs
    from lmshrink.plugins import get_objective
    from lmshrink.report import Timings

    inputs = load_inputs(str(tiny_model_dir), data=[str(text_file)], samples=8, seq_len=32, seed=0,
                         timings=Timings(), progress=False)
    objective = get_objective("fermi-rank")
    factors = objective.whiten(inputs.model, inputs.adapter, inputs.calibration, objective.validate({"progress": False}))
    apply_plan(inputs.model, factors, plan)
    probe = inputs.calibration.input_ids[:2]
    assert torch.equal(logits(inputs.model, probe), logits(model, probe))


def test_cli_svd_milp_on_the_aligned_fisher_table(tmp_path, tiny_model_dir, text_file):
    pytest.importorskip("pyomo")
    out = tmp_path / "out"
    rc = main(["svd", "--model", str(tiny_model_dir), "--data", str(text_file), "--ratio", "0.6", "--solver", "milp",
               "--objective-option", "error_weights=fisher-aligned", "--samples", "8", "--seq-len", "32",
               "--eval-tokens", "512", "--out", str(out), "--quiet"])
    assert rc == 0
    problem = load_problem(out / "problem.json")
    assert json.loads((out / "problem.json").read_text())["format"] == "lmshrink.rank_allocation/2"
    assert problem.errors is not None and problem.metadata["options"]["error_weights"] == "fisher-aligned"
    report = json.loads((out / "report.json").read_text())
    ranks = [r["rank"] for r in report["per_matrix"]]
    assert report["energy"] == pytest.approx(problem.energy(ranks), rel=1e-9)
    assert problem.cost(ranks) <= problem.budget
    assert main(["solve", str(out / "problem.json"), "--solver", "milp", "--top-k", "1", "--json"]) == 0


def test_svd_output_is_checked_first_and_written_whole_or_not_at_all(tmp_path, tiny_model_dir, text_file, capsys,
                                                                     monkeypatch):
    import lmshrink.compress.io as io
    import lmshrink.pipeline.svd as svd

    settings = dict(ratio=0.7, solver="uniform", data=[str(text_file)], samples=4, seq_len=16, evaluate=False,
                    progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    # refused before the model loads: the loader is never reached
    monkeypatch.setattr(svd, "load_inputs", lambda *a, **k: pytest.fail("loaded the model"))
    assert main(["svd", "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]) == 2
    assert "already holds files (notes.txt)" in capsys.readouterr().err
    monkeypatch.undo()
    # a save that fails half-way leaves nothing behind, not even its temporary directory
    monkeypatch.setattr(io, "save_compressed", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        svd.svd_compress(str(tiny_model_dir), out=tmp_path / "fresh", **settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    monkeypatch.undo()
    result = svd.svd_compress(str(tiny_model_dir), out=tmp_path / "fresh", **settings)
    assert sorted(p.name for p in result.out.iterdir()) == ["model", "plan.json", "problem.json", "report.json",
                                                            "report.md"]
    assert json.loads((result.out / "report.json").read_text())["verify"]["identical"]
    # an earlier run's output is replaced whole with overwrite
    (result.out / "stale.txt").write_text("old")
    again = svd.svd_compress(str(tiny_model_dir), out=result.out, overwrite=True, **settings)
    assert not (again.out / "stale.txt").exists() and (again.out / "plan.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out"]


def test_dense_when_slower_keeps_dense_the_matrices_above_their_time_break_even(tmp_path, tiny_model_dir, text_file,
                                                                               monkeypatch):
    """With --dense-when-slower, a matrix whose shape's break-even (here given, not timed) is below its rank stays
    dense; the report names it and counts its parameters."""
    import lmshrink.pipeline.svd as svd
    from lmshrink.compress.break_even import OVERRIDE_ENV
    from lmshrink.compress.low_rank import LowRankLinear

    settings = dict(ratio=0.7, solver="uniform", data=[str(text_file)], samples=4, seq_len=16, evaluate=False,
                    progress=False, verify=False)
    plain = svd.svd_compress(str(tiny_model_dir), out=tmp_path / "plain", **settings)
    plan = json.loads((plain.out / "plan.json").read_text())
    factored = {m["name"]: m for m in plan["matrices"] if not m.get("dense")}
    shape = tuple(next(iter(factored.values()))["shape"])
    slow = sorted(name for name, m in factored.items() if tuple(m["shape"]) == shape)
    # every shape given (none is timed): the chosen one pays at no rank, the others at every rank
    given = {f"{m}x{n}": min(m, n) for m, n in (tuple(f["shape"]) for f in factored.values())}
    (tmp_path / "be.json").write_text(json.dumps({**given, f"{shape[0]}x{shape[1]}": 0}))
    monkeypatch.setenv(OVERRIDE_ENV, str(tmp_path / "be.json"))
    timed = svd.svd_compress(str(tiny_model_dir), out=tmp_path / "timed", dense_when_slower=True, **settings)
    report = json.loads((timed.out / "report.json").read_text())
    assert report["params"]["dense_for_speed"] == slow
    before = json.loads((plain.out / "report.json").read_text())["params"]
    extra = sum(shape[0] * shape[1] - factored[n]["rank"] * (shape[0] + shape[1]) for n in slow)
    assert report["params"]["kept_plain"] == before["kept_plain"] + extra
    assert all(not isinstance(timed.model.get_submodule(n), LowRankLinear) for n in slow)
    assert "factoring them was slower" in (timed.out / "report.md").read_text()


def test_cli_svd_trust_region_refines_the_aligned_allocation_on_the_model(tmp_path, tiny_model_dir, text_file):
    pytest.importorskip("pyomo")
    out = tmp_path / "out"
    rc = main(["svd", "--model", str(tiny_model_dir), "--data", str(text_file), "--ratio", "0.5", "--solver",
               "trust-region", "--option", "rounds=2", "--option", "grid_step=1", "--option", "fit_curvature=true",
               "--objective-option", "error_weights=fisher-aligned", "--objective-option", "probe_samples=4",
               "--samples", "8", "--seq-len", "32",
               "--eval-tokens", "512", "--out", str(out), "--quiet"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    info = report["solver"]["info"]
    assert report["solver"]["name"] == "rank-trust-region" and info["probe"].startswith("RelinearizedProbe(")
    assert "4 calibration samples" in info["probe"] and info["options"]["fit_curvature"] is True
    assert info["options"]["probe"] == info["probe"] and info["options"]["rounds"] == 2
    kept = [h["loss"] for h in info["trust_region"] if h.get("accepted")]
    assert kept == sorted(kept, reverse=True) and info["measured_loss"] == kept[-1]
    assert 2 <= info["probes"] <= 3
    md = (out / "report.md").read_text()
    assert "## Allocation refined on the model (trust region)" in md
    assert ("| curvature weight |" in md) == any("curvature_scale" in h for h in info["trust_region"])
    problem = load_problem(out / "problem.json")
    assert problem.cost([r["rank"] for r in report["per_matrix"]]) <= problem.budget
