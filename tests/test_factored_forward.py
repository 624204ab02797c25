"""Factored layers' forward: the gather-free PivGa forward equals the gathered one, the plain pair equals its
product, and a saved-and-reloaded compressed model gives the same logits."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lmshrink.core.errors import LmshrinkError
from lmshrink.compress.io import load_compressed, record_transform, save_compressed
from lmshrink.compress.low_rank import LowRankLinear, replace_module
from lmshrink.compress.pivga import PivGaLinear
from tiny import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(24, 40, 7), (40, 24, 12), (32, 32, 31), (96, 32, 16), (17, 9, 1)]
INPUTS = [(5,), (3, 5), (2, 3, 4)]  # leading batch / sequence dimensions


def random_pair(m, n, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, r, generator=g, dtype=torch.float64) * torch.logspace(0, -2, r, dtype=torch.float64)
    return A, torch.randn(r, n, generator=g, dtype=torch.float64)


def gathered_forward(layer: PivGaLinear, x: torch.Tensor) -> torch.Tensor:
    """The PivGa forward as first written: y[P] = B′x, y[P̄] = C·y[P], concatenated and gathered into place."""
    z = F.linear(x, layer.rows)
    y = torch.cat([z, F.linear(z, layer.coef)], dim=-1).index_select(-1, layer.inverse)
    return y + layer.bias if layer.bias is not None else y


@pytest.mark.parametrize("m,n,r", SHAPES)
@pytest.mark.parametrize("lead", INPUTS)
def test_pivga_forward_equals_the_gathered_forward(m, n, r, lead):
    A, B = random_pair(m, n, r)
    bias = torch.randn(m, dtype=torch.float64)
    layer = PivGaLinear.from_factors(A, B, bias=bias, dtype=torch.float32)
    x = torch.randn(*lead, n, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        new, old = layer(x), gathered_forward(layer, x)
    assert new.shape == (*lead, m)
    assert layer.gather_free == (r * (m + n) <= m * n)
    assert layer.macs_per_token() == r * (m + n) - (0 if layer.gather_free else r * r)
    assert float((new - old).abs().max()) <= 1e-6 * float(old.abs().max())
    # without a bias the pivot rows are B′x exactly: the identity block of the left factor adds only zeros
    plain = PivGaLinear.from_factors(A, B, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(plain(x).index_select(-1, plain.pivots), F.linear(x, plain.rows))


@pytest.mark.parametrize("m,n,r", SHAPES)
@pytest.mark.parametrize("lead", INPUTS)
def test_low_rank_forward_equals_the_product(m, n, r, lead):
    A, B = random_pair(m, n, r, seed=2)
    layer = LowRankLinear.from_factors(A, B, dtype=torch.float32)
    x = torch.randn(*lead, n, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = layer(x)
    exact = x.double() @ (A @ B).T
    assert float((y.double() - exact).abs().max()) <= 1e-5 * float(exact.abs().max())
    assert layer.macs_per_token() == r * (m + n)


def test_left_factors_are_laid_out_column_by_column_without_changing_values(tmp_path):
    """The forward multiplies by the left factor in its column-major layout (long rows of its transpose); the
    values, the state dict and the saved file are those of the (out × r) factor."""
    A, B = random_pair(40, 24, 6, seed=9)
    plain, piv = LowRankLinear.from_factors(A, B), PivGaLinear.from_factors(A, B)
    x = torch.randn(3, 24, generator=torch.Generator().manual_seed(10))
    before = plain.left.detach().clone()
    with torch.inference_mode():
        y = plain(x)
        piv(x)
    assert plain.left.t().is_contiguous() and plain.left.stride() == (1, 40)
    assert torch.equal(plain.left, before) and plain.left.shape == (40, 6)
    assert piv.expanded_left().t().is_contiguous()
    assert torch.equal(piv.expanded_left(), torch.cat([torch.eye(6), piv.coef]).index_select(0, piv.inverse))
    assert torch.allclose(y, F.linear(F.linear(x, plain.right), before), rtol=1e-6, atol=1e-6)
    # the relaid factor still trains: gradients reach it
    plain(x).sum().backward()
    assert plain.left.grad is not None and plain.left.grad.shape == (40, 6)
    from safetensors.torch import load_file, save_model

    save_model(plain, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_file(str(tmp_path / "w.safetensors"))["left"], before)


def test_pivga_left_factor_follows_in_place_changes_and_dtype():
    A, B = random_pair(30, 20, 6, seed=4)
    layer = PivGaLinear.from_factors(A, B)
    x = torch.randn(4, 20, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        layer(x)
        layer.coef.mul_(2.0)  # an in-place change must reach the cached left factor
        assert float((layer(x) - gathered_forward(layer, x)).abs().max()) <= 1e-5
        half = layer.to(torch.bfloat16)
        xb = x.to(torch.bfloat16)
        assert half(xb).dtype == torch.bfloat16
        assert torch.allclose(half(xb).float(), gathered_forward(half, xb).float(), rtol=0.02, atol=0.05)


def test_pivga_gradients_reach_the_stored_factors():
    A, B = random_pair(16, 12, 5, seed=6)
    layer = PivGaLinear.from_factors(A, B)
    x = torch.randn(3, 12, generator=torch.Generator().manual_seed(7))
    layer(x).square().sum().backward()
    g_new = layer.coef.grad.clone()
    layer.coef.grad = None
    gathered_forward(layer, x).square().sum().backward()
    assert torch.allclose(g_new, layer.coef.grad, rtol=1e-5, atol=1e-6)


def _compressed_tiny(pivga: bool):
    model = tiny_llama(2)
    layers = {}
    for path in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "model.layers.1.mlp.up_proj"):
        W = model.get_submodule(path).weight.detach().double()
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        r = 6
        A, B = U[:, :r] * S[:r], Vh[:r]
        new = PivGaLinear.from_factors(A, B, U[:, :r]) if pivga else LowRankLinear.from_factors(A, B)
        replace_module(model, path, new)
        layers[path] = r
    record_transform(model, {"type": "pivga" if pivga else "low_rank", "layers": layers})
    return model


@pytest.mark.parametrize("pivga", [False, True])
def test_saved_and_reloaded_model_gives_identical_logits(tmp_path, pivga):
    model = _compressed_tiny(pivga)
    ids = torch.randint(1, 320, (2, 12), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    save_compressed(model, tmp_path / "m", tokenizer=tiny_tokenizer())
    # the stored tensors are those of the gathered layout: rows, coef and the inverse permutation, nothing more
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        keys = {k.rsplit(".", 1)[-1] for k in f.keys() if ".1.mlp.down_proj." in k}
    assert keys == ({"rows", "coef", "inverse"} if pivga else {"left", "right"})
    reloaded = load_compressed(tmp_path / "m")
    with torch.no_grad():
        after = reloaded(input_ids=ids).logits
    assert torch.equal(before, after)


# --- time break-even ---------------------------------------------------------------------------------------------
def _svd_tiny():
    from lmshrink.adapters.llama import LlamaAdapter
    from lmshrink.compress.factoring import svd_factors

    model = tiny_llama(num_layers=2, vocab_size=96, hidden_size=48, intermediate_size=96)
    ids = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(0))
    return model, ids, svd_factors(model, LlamaAdapter().linear_layers(model), ids, batch_size=4, progress=False)


@pytest.mark.parametrize("pivga", [False, True])
def test_the_time_break_even_keeps_slower_factorings_dense(tmp_path, monkeypatch, pivga):
    import copy

    from lmshrink.compress.apply import apply_plan, compress_model
    from lmshrink.compress.break_even import TimeBreakEven
    from lmshrink.core import RankPlan

    monkeypatch.setenv("LMSHRINK_CACHE", "off")
    model, ids, factors = _svd_tiny()
    ranks = {name: 8 for name in factors.names}  # below every parameter break-even (48·48/96 = 24, 48·96/144 = 32)
    # square 48 × 48 matrices factor faster only up to rank 5 here: they stay dense; the others are factored
    speed = TimeBreakEven(overrides={(48, 48): 5, (96, 48): 40, (48, 96): 40, (24, 48): 40})
    net = copy.deepcopy(model)
    summary = compress_model(net, factors, ranks, pivga=pivga)
    timed = copy.deepcopy(model)
    shapes = {name: f.shape for name, f in factors.factors.items()}
    timed_summary = apply_plan(timed, factors, RankPlan.from_ranks(shapes, ranks, pivga=pivga), break_even=speed)
    square = sorted(n for n, f in factors.factors.items() if tuple(f.shape) == (48, 48))
    assert square and timed_summary.to_dict()["dense_for_speed"] == square
    assert summary.to_dict()["dense_for_speed"] == []
    for name in factors.names:
        layer = timed.get_submodule(name)
        if name in square:
            assert isinstance(layer, torch.nn.Linear) and torch.equal(layer.weight, model.get_submodule(name).weight)
        else:
            assert isinstance(layer, PivGaLinear if pivga else LowRankLinear)
    dense_numbers = sum(48 * 48 for _ in square)
    assert timed_summary.params_stored == summary.params_stored + dense_numbers - sum(
        p.numel() for n in square for k, p in net.get_submodule(n).named_parameters() if k != "bias")


def test_break_even_ranks_are_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    from lmshrink.compress import break_even as be

    monkeypatch.setenv("LMSHRINK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(be.OVERRIDE_ENV, raising=False)
    r = be.TimeBreakEven().max_rank(16, 24)
    assert 0 <= r <= 16
    assert json.loads((tmp_path / "cache" / "break_even" / "times.json").read_text()) == {
        f"{be.device_label('cpu')}|float32|tokens=1|16x24": r}

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(be, "measure_break_even", no_measuring)
    assert be.TimeBreakEven().max_rank(16, 24) == r
    assert be.TimeBreakEven().keeps_dense(16, 24, r + 1) and not be.TimeBreakEven().keeps_dense(16, 24, r)
    # a file named by LMSHRINK_BREAK_EVEN replaces measurements; a malformed one is refused in one sentence
    (tmp_path / "ranks.json").write_text(json.dumps({"16x24": 3}))
    monkeypatch.setenv(be.OVERRIDE_ENV, str(tmp_path / "ranks.json"))
    assert be.TimeBreakEven().max_rank(16, 24) == 3
    (tmp_path / "ranks.json").write_text("[1, 2]")
    with pytest.raises(LmshrinkError, match="is not a JSON object"):
        be.TimeBreakEven()


@pytest.mark.parametrize("m,n", [(40, 24), (48, 48), (7, 300), (1, 1)])
def test_the_bisection_finds_the_largest_faster_rank(m, n):
    """With costs r(m + n) for the factored pair and mn for the dense product, the largest faster rank is the
    parameter break-even: the largest r with r(m + n) < mn; asked at about log2(min(m, n)) ranks."""
    from lmshrink.compress.break_even import largest_rank

    asked = []

    def faster(r):
        asked.append(r)
        return r * (m + n) < m * n

    expected = max(r for r in range(min(m, n) + 1) if r == 0 or r * (m + n) < m * n)
    assert largest_rank(min(m, n), faster) == expected
    assert len(asked) <= min(m, n).bit_length() + 1
