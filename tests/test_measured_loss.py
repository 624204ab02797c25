"""Measured removal losses: mid-stack measurements equal whole passes on a really pruned copy, and the standard
errors of (1) and (2) in lmshrink.evaluate.measured equal a direct computation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.evaluate.loss import per_sample_loss
from lmshrink.evaluate.measured import LossEstimate, RemovalLoss
from lmshrink.testing import sample_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
ADAPTER = LlamaAdapter()


@pytest.fixture(scope="module")
def model():
    return tiny_llama(layers=6)


@pytest.fixture(scope="module")
def ids(model):
    return sample_ids(model, batch=10, seq_len=16, seed=3)


def pruned_losses(model, removed, ids, granularity="layer"):
    """Per-window losses of a copy of the model with the blocks really removed."""
    pruned = ADAPTER.remove(copy.deepcopy(model), removed, granularity)
    with torch.no_grad():
        return per_sample_loss(pruned, ids).double().numpy()


@pytest.mark.parametrize("removed", [[0], [5], [2, 3], [1, 4, 5], [0, 2, 4]])
def test_midstack_measurement_equals_a_pruned_model(model, ids, removed):
    meter = RemovalLoss(model, ADAPTER, ids, batch_size=4)
    np.testing.assert_allclose(meter(removed).per_window, pruned_losses(model, removed, ids), rtol=1e-5, atol=1e-5)


def test_sublayer_measurement_equals_a_pruned_model(model, ids):
    meter = RemovalLoss(model, ADAPTER, ids, granularity="sublayer", batch_size=3)
    for removed in ([1], [4, 7], [2, 3, 9]):
        expected = pruned_losses(model, removed, ids, "sublayer")
        np.testing.assert_allclose(meter(removed).per_window, expected, rtol=1e-5, atol=1e-5)


def test_base_and_memo(model, ids):
    meter = RemovalLoss(model, ADAPTER, ids)
    with torch.no_grad():
        base = per_sample_loss(model, ids).double().numpy()
    np.testing.assert_allclose(meter.base.per_window, base, rtol=1e-6)
    assert meter([]) is meter.base and meter.evaluations == 0
    first = meter([3, 1])
    assert meter([1, 3]) is first and meter.evaluations == 1
    assert meter.measured([1, 3]) and not meter.measured([2])
    assert meter.tokens == 160
    with pytest.raises(IndexError):
        meter([6])


def test_remembered_measurement_is_not_taken_again(model, ids):
    """A measurement kept from an earlier run of the same windows is returned as is and costs no evaluation."""
    first = RemovalLoss(model, ADAPTER, ids)
    kept = first([2, 4])
    again = RemovalLoss(model, ADAPTER, ids)
    again.remember([4, 2], LossEstimate(kept.per_window.copy()))
    assert again.measured([2, 4]) and again.evaluations == 0
    np.testing.assert_array_equal(again([2, 4]).per_window, kept.per_window)
    assert again.evaluations == 0
    with pytest.raises(ValueError, match="one loss per window"):
        again.remember([1], LossEstimate(kept.per_window[:3]))


def test_standard_errors_match_a_direct_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 0.5, 40), rng.normal(3.1, 0.5, 40)
    b = a + rng.normal(0.1, 0.05, 40)  # strongly paired, as two removals on the same windows are
    A, B = LossEstimate(a), LossEstimate(b)
    assert A.mean == pytest.approx(a.mean())
    assert A.se == pytest.approx(math.sqrt(sum((v - a.mean()) ** 2 for v in a) / 39) / math.sqrt(40))
    d, se = B.minus(A)
    diff = b - a
    assert d == pytest.approx(diff.mean())
    assert se == pytest.approx(math.sqrt(sum((v - diff.mean()) ** 2 for v in diff) / 39) / math.sqrt(40))
    assert se < 0.2 * math.hypot(A.se, B.se)  # pairing removes the windows' shared difficulty
    with pytest.raises(ValueError):
        A.minus(LossEstimate(a[:5]))


@pytest.mark.parametrize("removed", [[2, 3], [1, 4, 5], [0, 1, 3]])
def test_healed_measurement_equals_a_healed_pruned_model(ids, removed):
    from lmshrink.heal.linear import LinearHeal

    model = tiny_llama(layers=6, tie=False)
    calib = sample_ids(model, batch=12, seq_len=16, seed=11)
    healer = LinearHeal(batch_size=4)
    runs = healer.fit(model, ADAPTER, removed, calib)
    assert all(r.healed for r in runs)
    pruned = ADAPTER.remove(copy.deepcopy(model), removed)
    healer.fold(runs, pruned, ADAPTER)
    with torch.no_grad():
        expected = per_sample_loss(pruned, ids).double().numpy()
    meter = RemovalLoss(model, ADAPTER, ids, batch_size=4)
    np.testing.assert_allclose(meter.healed(removed, runs).per_window, expected, rtol=1e-5, atol=1e-5)
    assert meter.healed(removed, runs) is meter.healed(removed, runs)  # memoised apart from the plain one
    assert meter.healed(removed, runs).mean != meter(removed).mean


def test_one_meter_scores_two_fits_of_the_same_set_apart(ids):
    """Two fits of one set's maps (two calibration draws, as the seeds of a study) get their own healed scores from
    one meter, each equal to that of a fresh meter; the same fit is measured once."""
    from lmshrink.heal.linear import LinearHeal

    model = tiny_llama(layers=6, tie=False)
    healer = LinearHeal(batch_size=4)
    fits = [healer.fit(model, ADAPTER, [2, 3], sample_ids(model, batch=12, seq_len=16, seed=s)) for s in (11, 12)]
    shared = RemovalLoss(model, ADAPTER, ids, batch_size=4)
    scores = [shared.healed([2, 3], runs).mean for runs in fits]
    fresh = [RemovalLoss(model, ADAPTER, ids, batch_size=4).healed([2, 3], runs).mean for runs in fits]
    assert scores == pytest.approx(fresh, rel=1e-12) and scores[0] != pytest.approx(scores[1], rel=1e-6)
    before = shared.evaluations
    assert shared.healed([3, 2], fits[1]).mean == scores[1] and shared.evaluations == before
