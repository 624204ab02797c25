"""Sequential (truncation-aware) whitening and the closed-form update, checked against direct computations."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.compress.factoring import factor_matrix
from lmshrink.compress.low_rank import LowRankLinear, replace_module
from lmshrink.compress.sequential import (factor_layer, sequential_factors, sequential_stats, target_weight,
                                          updated_weight)
from lmshrink.compress.whitening import whiten
from lmshrink.core import LmshrinkError
from tiny import tiny_llama_linears

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    model, linears, ids = tiny_llama_linears(6, 24, num_layers=3, hidden_size=32, intermediate_size=64)
    ranks = {name: (6 if "mlp" in name else 5) for name in linears if not name.endswith("v_proj")}
    return model, linears, ids, ranks


def inputs_of(model, names, ids):
    """name → every input of that module over ``ids`` as rows (tokens × n, float64), from a full forward pass."""
    xs = {n: [] for n in names}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: xs[n].append(a[0].detach().reshape(-1, a[0].shape[-1]).double())) for n in names]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in hooks:
        h.remove()
    return {n: torch.cat(v) for n, v in xs.items()}


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_grams_are_those_of_the_compressed_predecessors(setup):
    model, linears, ids, ranks = setup
    model = copy.deepcopy(model)
    dense = copy.deepcopy(model)
    seen = 0
    for index, members, stats in sequential_stats(model, LlamaAdapter(), dict(linears_of(model)), ids, batch_size=4,
                                                  progress=False):
        # the model as it stands: layers before ``index`` compressed, this one still dense
        xc = inputs_of(model, members, ids)
        xd = inputs_of(dense, members, ids)
        for group, gram, cross in zip(stats.groups, stats.grams, stats.cross):
            name = group[0]
            assert rel(gram, xc[name].T @ xc[name]) < 1e-6
            assert rel(cross, xd[name].T @ xc[name]) < 1e-6
        if index > 0:  # the compressed stream really differs from the dense one
            assert rel(xc[next(iter(members))], xd[next(iter(members))]) > 1e-3
        for name, f in factor_layer(members, stats, ranks, update="ls", dtype=torch.float64).items():
            if name in ranks:
                A, B = f.truncated(ranks[name])
                replace_module(model, name, LowRankLinear.from_factors(A, B, f.bias))
        seen += 1
    assert seen == 3


def linears_of(model):
    return LlamaAdapter().linear_layers(model)


def layer_data(setup, name):
    """(W, X_d, X_c) of matrix ``name`` of layer 1 with layer 0 cut to the test ranks, columns = tokens."""
    model, linears, ids, ranks = setup
    comp = copy.deepcopy(model)
    layer0 = {n: m for n, m in linears_of(comp).items() if ".layers.0." in n}
    for _, members, stats in sequential_stats(comp, LlamaAdapter(), layer0, ids, progress=False):
        for n, f in factor_layer(members, stats, ranks, update="none", dtype=torch.float64).items():
            if n in ranks:
                A, B = f.truncated(ranks[n])
                replace_module(comp, n, LowRankLinear.from_factors(A, B, f.bias))
    W = model.get_submodule(name).weight.detach().double()
    return W, inputs_of(model, [name], ids)[name].T, inputs_of(comp, [name], ids)[name].T


@pytest.mark.parametrize("name", ["model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj",
                                  "model.layers.1.mlp.up_proj"])
def test_update_is_the_ridge_least_squares_solution(setup, name):
    W, Xd, Xc = layer_data(setup, name)
    G, C = Xc @ Xc.T, Xd @ Xc.T
    wh = whiten(G, eps=1e-6)
    r = 5
    B = factor_matrix(name, W, wh, dtype=torch.float64).right[:r]
    got = updated_weight(W, B, G, C, wh.delta)
    # min_A ‖[Y, 0] − A B [X_c, √δ I]‖² by numpy's least squares
    n = W.shape[1]
    Xaug = np.hstack([Xc.numpy(), np.sqrt(wh.delta) * np.eye(n)])
    Yaug = np.hstack([(W @ Xd).numpy(), np.zeros((W.shape[0], n))])
    At, *_ = np.linalg.lstsq((B.numpy() @ Xaug).T, Yaug.T, rcond=None)
    want = At.T @ B.numpy()
    assert rel(got, torch.from_numpy(want)) < 1e-6


@pytest.mark.parametrize("name", ["model.layers.1.self_attn.o_proj", "model.layers.1.mlp.gate_proj"])
def test_joint_update_is_the_best_rank_r_fit(setup, name):
    W, Xd, Xc = layer_data(setup, name)
    G, C = Xc @ Xc.T, Xd @ Xc.T
    wh = whiten(G, eps=1e-6)
    r = 4

    def err(Wp):
        return float(((W @ Xd - Wp @ Xc) ** 2).sum() + wh.delta * (Wp**2).sum())

    f = factor_matrix(name, target_weight(W, G, C, wh.delta), wh, dtype=torch.float64)
    A, B = f.truncated(r)
    joint = err(A @ B)
    # (2): the error is the constant at W* plus the tail of W*·S's singular values
    Wstar = target_weight(W, G, C, wh.delta)
    assert joint == pytest.approx(err(Wstar) + float((f.sigma[r:] ** 2).sum()), rel=1e-6)
    B_ls = factor_matrix(name, W, wh, dtype=torch.float64).right[:r]
    ls = err(updated_weight(W, B_ls, G, C, wh.delta))
    A0, B0 = factor_matrix(name, W, wh, dtype=torch.float64).truncated(r)
    none = err(A0 @ B0)
    assert joint <= ls * (1 + 1e-9) and ls <= none * (1 + 1e-9)
    assert ls < none  # the update changes something on the compressed inputs


def test_sequential_factors_restore_the_model_and_keep_dense_matrices(setup):
    model, linears, ids, ranks = setup
    model = copy.deepcopy(model)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    factors = sequential_factors(model, LlamaAdapter(), linears_of(model), ids, ranks, update="ls", batch_size=4,
                                 dtype=torch.float64, progress=False)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    assert factors.names == list(linears_of(model)) and factors.info["mode"] == "sequential"
    # a matrix kept dense is factored as it is: all factors multiply back to W
    name = "model.layers.2.self_attn.v_proj"
    f = factors.factors[name]
    W = model.get_submodule(name).weight.detach().double()
    assert rel(f.left.double() @ f.right.double(), W) < 1e-5
    # an updated matrix has rank r: the factors beyond r carry nothing
    name = "model.layers.2.mlp.down_proj"
    assert factors.factors[name].sigma.shape[0] >= ranks[name]
    assert factors.factors[name].sigma[ranks[name]:].max() < 1e-6 * factors.factors[name].sigma[0]
    with pytest.raises(LmshrinkError, match="update must be"):
        sequential_factors(model, LlamaAdapter(), linears_of(model), ids, ranks, update="bogus", progress=False)


@pytest.mark.parametrize("pivga", [False, True])
def test_svd_flow_with_sequential_whitening_saves_reloads_and_reports(tmp_path, tiny_model_dir, text_file, pivga):
    import json

    from lmshrink.cli import main
    from lmshrink.compress.io import load_compressed
    from lmshrink.core import RankPlan

    out = tmp_path / "out"
    assert main(["svd", "--model", str(tiny_model_dir), "--data", str(text_file), "--ratio", "0.6", "--solver",
                 "uniform", "--samples", "8", "--seq-len", "32", "--eval-tokens", "512", "--whitening", "sequential",
                 "--update", "ls", "--out", str(out), "--quiet"] + (["--pivga"] if pivga else [])) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["whitening"]["mode"] == "sequential" and report["whitening"]["update"] == "ls"
    assert report["settings"]["whitening"] == "sequential" and "sequential whitening" in report["timings_s"]
    assert report["verify"]["identical"]
    assert "Whitening: sequential (update of the kept factors: ls)" in (out / "report.md").read_text()
    plan = RankPlan.load(out / "plan.json")
    model = load_compressed(out / "model")
    for m in plan.matrices:
        if not m.dense:
            layer = model.get_submodule(m.name)
            assert (layer.rank if hasattr(layer, "rank") else m.rank) == m.rank


def test_update_without_sequential_whitening_is_refused(tiny_model_dir):
    from lmshrink.pipeline.svd import svd_compress

    with pytest.raises(LmshrinkError, match="needs whitening='sequential'"):
        svd_compress(str(tiny_model_dir), update="ls", save=False, progress=False)
    with pytest.raises(LmshrinkError, match="whitening must be one of"):
        svd_compress(str(tiny_model_dir), whitening="twice", save=False, progress=False)
