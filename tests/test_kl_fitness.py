"""KL fitness (lmshrink.evaluate.kl): with k = |V| the top-k KL equals a direct full-vocabulary KL against a really
pruned copy; with k < |V| it obeys the bound (3); the CE from the same passes equals RemovalLoss's; window ranges are
measured once; healed fitness equals the healed pruned model's."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.heal.fitness import HealedFitness, healed_fitness
from lmshrink.evaluate.kl import DenseReference, RemovalKL, full_kl, summarize, topk_kl
from lmshrink.evaluate.measured import RemovalLoss
from lmshrink.heal.linear import LinearHeal
from lmshrink.testing import sample_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
ADAPTER = LlamaAdapter()
VOCAB = 128


@pytest.fixture(scope="module")
def model():
    return tiny_llama(layers=6, tie=False, vocab=VOCAB)


@pytest.fixture(scope="module")
def ids(model):
    return sample_ids(model, batch=10, seq_len=16, seed=3)


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[:, :-1]


def pruned_kl(model, removed, ids, granularity="layer"):
    """Per-window full-vocabulary KL of a really pruned copy (float64), and the pruned logits."""
    pruned = ADAPTER.remove(copy.deepcopy(model), removed, granularity)
    q = logits_of(pruned, ids)
    return full_kl(logits_of(model, ids), q).mean(dim=1).numpy(), q


@pytest.mark.parametrize("granularity,sets", [("layer", [[0], [5], [2, 3], [1, 4, 5]]),
                                              ("sublayer", [[1], [4, 7], [2, 3, 9], [0, 5, 6]])])
def test_full_vocabulary_topk_equals_a_direct_kl(model, ids, granularity, sets):
    meter = RemovalKL(model, ADAPTER, ids, granularity=granularity, k=VOCAB, batch_size=4)
    assert meter.reference.k == VOCAB and meter.reference.rest_mass == 0.0
    for removed in sets:
        expected, _ = pruned_kl(model, removed, ids, granularity)
        np.testing.assert_allclose(meter(removed).per_window, expected, rtol=0, atol=1e-6)
    assert meter.evaluations == len(sets)
    np.testing.assert_array_equal(meter([]).per_window, np.zeros(10))


def test_smaller_k_obeys_the_bound(model, ids):
    """Per token: 0 ≤ KL − KL_k ≤ p_R·log(q_R / min_{v∉K} q_v) (docstring, (3)), and KL_k grows with k."""
    p_logits = logits_of(model, ids).reshape(-1, VOCAB)
    _, q_logits = pruned_kl(model, [1, 4], ids)
    q_logits = q_logits.reshape(-1, VOCAB)
    exact = full_kl(p_logits, q_logits)
    logq = torch.log_softmax(q_logits.double(), dim=-1)
    previous = torch.zeros_like(exact)
    for k in (1, 4, 16, 64, 127, 128):
        idx, top, rest = summarize(p_logits, k)
        approx = topk_kl(q_logits, idx, top, rest)
        gap = exact - approx
        assert float(gap.min()) >= -1e-9
        if k < VOCAB:
            masked = logq.scatter(-1, idx, math.inf)
            bound = rest.exp() * (logq.scatter(-1, idx, -math.inf).logsumexp(-1) - masked.min(-1).values)
            assert bool((gap <= bound + 1e-9).all())
        assert bool((approx >= previous - 1e-9).all())  # a finer partition never lowers the KL
        previous = approx
    torch.testing.assert_close(previous, exact, rtol=0, atol=1e-9)


def test_a_peaked_model_is_close_at_small_k(ids):
    """When the dense distributions are peaked (as trained models' are), the top 16 of 128 carry almost all the
    mass and KL_k is within a few per cent of the full KL."""
    model = tiny_llama(layers=6, tie=False, vocab=VOCAB)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    full = RemovalKL(model, ADAPTER, ids, k=VOCAB, batch_size=5)
    meter = RemovalKL(model, ADAPTER, ids, k=16, batch_size=5)
    assert meter.reference.rest_mass < 0.01
    for removed in ([2], [1, 4]):
        exact, approx = full(removed).mean, meter(removed).mean
        assert 0.98 * exact <= approx <= exact


@pytest.mark.parametrize("granularity", ["layer", "sublayer"])
def test_cross_entropy_of_the_same_passes_equals_removal_loss(model, ids, granularity):
    meter = RemovalKL(model, ADAPTER, ids, granularity=granularity, k=16, batch_size=4)
    loss = RemovalLoss(model, ADAPTER, ids, granularity=granularity, batch_size=4)
    np.testing.assert_allclose(meter.base_ce.per_window, loss.base.per_window, rtol=1e-9, atol=1e-9)
    for removed in ([3], [1, 2]):
        np.testing.assert_allclose(meter.cross_entropy(removed).per_window, loss(removed).per_window, rtol=1e-9,
                                   atol=1e-9)
    assert meter.evaluations == 2  # the CE came with the KL


def test_window_ranges_are_measured_once(model, ids):
    meter = RemovalKL(model, ADAPTER, ids, k=16, batch_size=4)
    part = meter.windows([2, 3], 0, 3)
    assert meter.windows_measured == 3 and not meter.measured([2, 3]) and meter.measured([2, 3], 0, 3)
    more = meter.windows([2, 3], 2, 7)  # windows 3..6 only
    assert meter.windows_measured == 7
    whole = meter([2, 3])
    assert meter.windows_measured == 10 and meter.tokens_spent == 160 and meter.evaluations == 1
    np.testing.assert_array_equal(whole.per_window[:3], part)
    np.testing.assert_array_equal(whole.per_window[2:7], more)
    fresh = RemovalKL(model, ADAPTER, ids, k=16, batch_size=10, reference=meter.reference)  # shared reference
    np.testing.assert_allclose(fresh([2, 3]).per_window, whole.per_window, rtol=1e-12, atol=1e-12)
    d, se = meter([1]).minus(whole)  # the paired machinery of RemovalLoss
    assert math.isfinite(d) and se > 0
    with pytest.raises(IndexError):
        meter.windows([2], 3, 11)
    with pytest.raises(IndexError):
        meter([6])
    with pytest.raises(ValueError, match="measure"):
        meter.windows([2], 0, 2, measure="nll")


def test_an_adapter_without_a_layer_list_runs_whole_passes(model, ids):
    class WholePasses(LlamaAdapter):
        def layer_list(self, model):
            return None

    meter = RemovalKL(model, WholePasses(), ids, k=VOCAB, batch_size=3)
    assert meter.streams is None
    for removed in ([0], [2, 3]):
        np.testing.assert_allclose(meter(removed).per_window, pruned_kl(model, removed, ids)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("granularity,removed", [("layer", [2, 3]), ("layer", [0, 1, 4]),
                                                 ("sublayer", [3]), ("sublayer", [0, 1, 5, 6])])
def test_healed_fitness_equals_the_healed_pruned_model(model, ids, granularity, removed):
    fit = sample_ids(model, batch=12, seq_len=16, seed=11)
    meter = RemovalKL(model, ADAPTER, ids, granularity=granularity, k=VOCAB, batch_size=4)
    fitness = HealedFitness(meter, fit, batch_size=4)
    estimate = fitness(removed)
    runs = fitness.runs(removed)
    assert fitness.runs(removed) is runs and fitness.fits == 1
    pruned = ADAPTER.remove(copy.deepcopy(model), removed, granularity)
    LinearHeal().fold(runs, pruned, ADAPTER)
    q = logits_of(pruned, ids)
    np.testing.assert_allclose(estimate.per_window, full_kl(logits_of(model, ids), q).mean(dim=1).numpy(), rtol=0,
                               atol=1e-6)
    np.testing.assert_array_equal(fitness.windows(removed, 2, 5), estimate.per_window[2:5])
    ce = fitness.cross_entropy(removed)
    with torch.no_grad():
        from lmshrink.evaluate.loss import per_sample_loss

        np.testing.assert_allclose(ce.per_window, per_sample_loss(pruned, ids).double().numpy(), rtol=1e-5,
                                   atol=1e-5)
    one, one_runs = healed_fitness(RemovalKL(model, ADAPTER, ids, granularity=granularity, k=VOCAB,
                                             reference=meter.reference), removed, fit)
    np.testing.assert_allclose(one.per_window, estimate.per_window, rtol=1e-6, atol=1e-9)


def test_healed_fitness_wraps_removal_loss(model, ids):
    fit = sample_ids(model, batch=12, seq_len=16, seed=11)
    loss = RemovalLoss(model, ADAPTER, ids, batch_size=4)
    fitness = HealedFitness(loss, fit, samples=8)
    assert fitness.fit_ids.shape[0] == 8
    assert fitness([2, 3]) is loss.healed([2, 3], fitness.runs([2, 3]))
    assert fitness.cross_entropy([2, 3]) is fitness([2, 3])


def test_one_meter_measures_two_healings_of_a_set_apart(model, ids):
    meter = RemovalKL(model, ADAPTER, ids, k=16)
    first = HealedFitness(meter, sample_ids(model, batch=12, seq_len=16, seed=11))
    second = HealedFitness(meter, sample_ids(model, batch=12, seq_len=16, seed=12))
    a, b = first([2, 3]), second([2, 3])
    assert meter.evaluations == 2 and not np.allclose(a.per_window, b.per_window)
    fresh = RemovalKL(model, ADAPTER, ids, k=16, reference=meter.reference)
    np.testing.assert_allclose(b.per_window, fresh.healed([2, 3], second.runs([2, 3])).per_window, rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_array_equal(first([2, 3]).per_window, a.per_window)  # asked again: the first fit's values


def test_bad_input(model, ids):
    from lmshrink.core import LmshrinkError

    with pytest.raises(LmshrinkError, match="top-k"):
        DenseReference(model, ADAPTER, ids, k=0)
    with pytest.raises(LmshrinkError, match="two tokens"):
        DenseReference(model, ADAPTER, ids[:, :1])
    with pytest.raises(ValueError, match="input_ids or a DenseReference"):
        RemovalKL(model, ADAPTER)
