"""PivGa: gauge-fixed low-rank layers store exactly r(m+n) − r² numbers and compute what the plain pair computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmshrink.compress.pivga import PivGaLinear, gauge_fix, pivot_rows
from lmshrink.compress.svd import LowRankLinear


pytestmark = pytest.mark.usefixtures("one_thread")


def random_pair(m, n, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, r, generator=g, dtype=torch.float64) * torch.logspace(0, -2, r, dtype=torch.float64)
    B = torch.randn(r, n, generator=g, dtype=torch.float64)
    return A, B


@pytest.mark.parametrize("m,n,r", [(24, 40, 7), (40, 24, 12), (32, 32, 31), (17, 9, 1), (64, 48, 30)])
def test_parameter_count_is_exact(m, n, r):
    A, B = random_pair(m, n, r)
    layer = PivGaLinear.from_factors(A, B)
    stored = sum(p.numel() for p in layer.parameters())
    assert stored == r * (m + n) - r * r
    assert sum(p.numel() for p in LowRankLinear.from_factors(A, B).parameters()) == r * (m + n)
    assert sorted(layer.pivots.tolist()) == sorted(set(layer.pivots.tolist()))  # r distinct output rows
    assert sorted(torch.argsort(layer.inverse).tolist()) == list(range(m))  # a permutation


@pytest.mark.parametrize("m,n,r", [(24, 40, 7), (40, 24, 12), (32, 32, 31), (64, 48, 30), (96, 32, 16)])
def test_outputs_equal_the_plain_low_rank_layer(m, n, r):
    A, B = random_pair(m, n, r, seed=1)
    bias = torch.randn(m, dtype=torch.float64)
    plain = LowRankLinear.from_factors(A, B, bias, dtype=torch.float32)
    gauge = PivGaLinear.from_factors(A, B, bias=bias, dtype=torch.float32)
    x = torch.randn(3, 5, n, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y_plain, y_gauge = plain(x), gauge(x)
        exact = (x.double() @ (A @ B).T) + bias
    rel = float((y_gauge - y_plain).norm() / y_plain.norm())
    assert rel < 1e-5
    assert float((y_gauge.double() - exact).norm() / exact.norm()) < 1e-5
    np.testing.assert_allclose(gauge.dense_weight().detach().double().numpy(), (A @ B).numpy(), rtol=0,
                               atol=1e-5 * float((A @ B).abs().max()))


def test_gauge_fix_in_float64_is_exact():
    A, B = random_pair(30, 20, 8, seed=3)
    perm, rows, coef = gauge_fix(A, B)
    W = A @ B
    P, Pbar = perm[:8], perm[8:]
    np.testing.assert_allclose(rows.numpy(), W[P].numpy(), atol=1e-12)
    np.testing.assert_allclose((coef @ rows).numpy(), W[Pbar].numpy(), atol=1e-10)
    # C does not depend on the gauge of A: A·G and G⁻¹·B give the same C
    G = torch.randn(8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 3 * torch.eye(8, dtype=torch.float64)
    _, _, coef2 = gauge_fix(A @ G, torch.linalg.solve(G, B), torch.linalg.qr(A)[0])
    _, _, coef3 = gauge_fix(A, B, torch.linalg.qr(A)[0])
    np.testing.assert_allclose(coef2.numpy(), coef3.numpy(), atol=1e-9)


def test_pivots_are_well_conditioned_and_fallback_agrees(monkeypatch):
    """Pivoted QR picks rows with a bounded coefficient matrix; the numpy fallback picks a valid, equally good set."""
    U = torch.linalg.qr(torch.randn(50, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64))[0]
    perm = pivot_rows(U)
    assert sorted(perm.tolist()) == list(range(50))
    C = U[perm[10:]] @ torch.linalg.inv(U[perm[:10]])
    assert float(C.abs().max()) < 10
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    perm2 = pivot_rows(U)
    assert sorted(perm2.tolist()) == list(range(50))
    C2 = U[perm2[10:]] @ torch.linalg.inv(U[perm2[:10]])
    assert float(C2.abs().max()) < 10
    assert perm2[:10].tolist() == perm[:10].tolist()  # same Businger–Golub pivots
