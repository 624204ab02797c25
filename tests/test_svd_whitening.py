"""Whitened SVD: Gram statistics, the Cholesky / eigen whitening, and the exact truncation-error identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.compress.svd import collect_grams, factorize, soft_weight, whiten
from tiny import tiny_llama_linears


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    model, linears, ids = tiny_llama_linears(12, 48, num_layers=2, hidden_size=64, intermediate_size=128)
    stats = collect_grams(model, linears, ids, batch_size=5, progress=False)
    factors = factorize(linears, stats, eps=1e-6, dtype=torch.float64, progress=False)
    return model, linears, ids, stats, factors


def layer_inputs(model, module, ids):
    """Every calibration input of ``module`` as the columns of X (n × tokens), captured independently."""
    xs = []
    h = module.register_forward_pre_hook(lambda m, a: xs.append(a[0].detach().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for s in range(0, ids.shape[0], 3):
            model(input_ids=ids[s : s + 3], use_cache=False)
    h.remove()
    return torch.cat(xs).double().T


def test_groups_share_inputs(setup):
    _, linears, ids, stats, _ = setup
    assert stats.tokens == ids.numel()
    groups = [sorted(n.rsplit(".", 1)[-1] for n in g) for g in stats.groups]
    assert groups.count(["k_proj", "q_proj", "v_proj"]) == 2
    assert groups.count(["gate_proj", "up_proj"]) == 2
    assert groups.count(["o_proj"]) == 2 and groups.count(["down_proj"]) == 2
    assert sum(len(g) for g in stats.groups) == len(linears)


def test_grams_by_layer_equal_one_pass_and_hold_one_layer(setup):
    from lmshrink.compress.factoring import svd_factors
    from lmshrink.compress.gram import grams_by_layer

    model, linears, ids, stats, factors = setup
    seen = []
    for members, layer_stats in grams_by_layer(model, LlamaAdapter(), linears, ids, batch_size=5, progress=False):
        assert {n.split(".")[2] for n in members} == {str(len(seen))}  # one decoder layer at a time
        seen.append(layer_stats)
        for group, gram in zip(layer_stats.groups, layer_stats.grams):
            torch.testing.assert_close(gram, stats.grams[stats.groups.index(group)], rtol=1e-12, atol=0)
    assert [g for s in seen for g in s.groups] == stats.groups
    by_layer = svd_factors(model, linears, ids, batch_size=5, dtype=torch.float64, progress=False,
                           adapter=LlamaAdapter())
    assert by_layer.names == factors.names and by_layer.groups == factors.groups
    for name in factors.names:
        np.testing.assert_allclose(by_layer.factors[name].sigma, factors.factors[name].sigma, rtol=1e-10)


def test_gram_matches_stored_inputs(setup):
    model, linears, ids, stats, _ = setup
    for name in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"):
        X = layer_inputs(model, linears[name], ids)
        G = stats.grams[stats.group_of(name)]
        np.testing.assert_allclose(G.numpy(), (X @ X.T).numpy(), rtol=1e-9, atol=1e-9 * float(G.abs().max()))


@pytest.mark.parametrize("name", ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                  "model.layers.1.self_attn.o_proj", "model.layers.0.mlp.up_proj",
                                  "model.layers.1.mlp.down_proj"])
def test_whitened_tail_equals_measured_truncation_error(setup, name):
    """Σ_{i≥r} σ_i² = ‖(W − W_r)X‖_F² + δ‖W − W_r‖_F² exactly (δ the recorded regularization), ≈ the first alone."""
    model, linears, ids, _, factors = setup
    f = factors.factors[name]
    X = layer_inputs(model, linears[name], ids)
    W = linears[name].weight.detach().double()
    delta = f.whitening["delta"]
    assert f.whitening["method"] == "cholesky"
    for r in (1, 7, f.max_rank // 2, f.max_rank - 1):
        A, B = f.truncated(r)
        E = W - A @ B
        measured = float((E @ X).pow(2).sum())
        predicted = float(np.sum(f.sigma[r:] ** 2))
        assert predicted == pytest.approx(measured + delta * float(E.pow(2).sum()), rel=1e-9)
        assert predicted == pytest.approx(measured, rel=1e-4)
    # the full factorization gives W back, and a soft mask of ones is the full weight
    np.testing.assert_allclose((f.left @ f.right).numpy(), W.numpy(), atol=1e-10)
    np.testing.assert_allclose(soft_weight(f, torch.ones(f.max_rank, dtype=torch.float64)).numpy(), W.numpy(),
                               atol=1e-10)


def test_truncation_is_optimal_on_the_calibration_data(setup):
    """No other rank-r matrix does better on X than W_r (here: plain SVD truncation of W and random ones)."""
    model, linears, ids, _, factors = setup
    name = "model.layers.0.mlp.gate_proj"
    f = factors.factors[name]
    X = layer_inputs(model, linears[name], ids)
    W = linears[name].weight.detach().double()
    r = 10
    A, B = f.truncated(r)
    best = float(((W - A @ B) @ X).pow(2).sum())
    U, S, Vt = torch.linalg.svd(W, full_matrices=False)
    plain = float(((W - (U[:, :r] * S[:r]) @ Vt[:r]) @ X).pow(2).sum())
    assert best < plain


def test_whiten_grows_eps_then_falls_back_to_eigen():
    rng = np.random.default_rng(0)
    Y = torch.from_numpy(rng.normal(size=(6, 3)))
    G = Y @ Y.T  # rank 3 of 6: the plain factorization fails, a small eps fixes it
    w = whiten(G, eps=0.0)
    assert w.method == "cholesky" and w.tries >= 2 and w.delta > 0
    np.testing.assert_allclose((w.S @ w.S.T).numpy(), (G + w.delta * torch.eye(6, dtype=torch.float64)).numpy(),
                               atol=1e-10)
    bad = G - 50.0 * torch.eye(6, dtype=torch.float64) * float(torch.trace(G)) / 6  # indefinite beyond any eps tried
    w = whiten(bad, eps=1e-6, max_tries=3)
    assert w.method == "eigen" and w.tries == 4
    Ybig = torch.from_numpy(rng.normal(size=(4, 6)))
    assert torch.allclose(w.right_solve(Ybig) @ w.S, Ybig, atol=1e-9)


@pytest.mark.parametrize("m", [5, 11])
def test_eigen_fallback_still_gives_the_identity(m):
    """With the eigen whitening the tail still equals the error (both branches: m ≤ n and m > n)."""
    rng = np.random.default_rng(1)
    n, N = 8, 40
    X = torch.from_numpy(rng.normal(size=(n, N)))
    W = torch.from_numpy(rng.normal(size=(m, n)))
    lin = torch.nn.Linear(n, m, bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(W)
    from lmshrink.compress import factoring
    from lmshrink.compress.svd import GramStats

    stats = GramStats([["w"]], [X @ X.T], N)
    real = factoring.whiten
    factoring.whiten = lambda G, eps: real(G, eps=eps, max_tries=0)  # force the fallback
    try:
        f = factorize({"w": lin}, stats, dtype=torch.float64, progress=False).factors["w"]
    finally:
        factoring.whiten = real
    assert f.whitening["method"] == "eigen"
    A, B = f.truncated(3)
    measured = float(((W - A @ B) @ X).pow(2).sum())
    assert float(np.sum(f.sigma[3:] ** 2)) == pytest.approx(measured, rel=1e-6)
