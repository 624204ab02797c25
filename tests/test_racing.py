"""Racing (lmshrink.evaluate.racing): on planted candidates with known true means the race keeps the best (and the
best few with ``keep``) and spends far fewer tokens than measuring everything on every window; the drop rule is the
paired z of (1) against the threshold (2); a race over RemovalKL's window ranges works on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmshrink.evaluate.racing import paired_z, race, schedule, threshold


def planted(seed: int, candidates: int = 24, windows: int = 128, gap: float = 0.15, noise: float = 0.3):
    """Per-window losses: a true mean per candidate (the best ``gap`` below all others), a window difficulty shared
    by all candidates (large, as real text's is) and independent noise."""
    rng = np.random.default_rng(seed)
    means = np.concatenate([[0.0], gap + rng.uniform(0.0, 1.0, candidates - 1)])[rng.permutation(candidates)]
    values = means[:, None] + rng.normal(0.0, 1.0, windows)[None, :] + rng.normal(0.0, noise, (candidates, windows))
    return means, values


def measured(values):
    calls = []

    def evaluate(c, a, b):
        calls.append((c, a, b))
        return values[c, a:b]

    return evaluate, calls


def test_the_race_keeps_the_true_best_and_spends_fewer_tokens():
    savings = []
    for seed in range(200):
        means, values = planted(seed)
        evaluate, calls = measured(values)
        result = race(list(range(len(means))), evaluate, values.shape[1], tokens_per_window=16)
        assert result.best == int(np.argmin(means)), seed
        assert result.tokens < result.full_tokens == 24 * 128 * 16
        assert result.tokens == 16 * sum(b - a for _, a, b in calls) == 16 * int(result.windows.sum())
        assert sorted(result.ranking) == list(range(24))
        savings.append(result.saving)
    assert np.mean(savings) > 0.7


def test_keep_holds_the_best_few():
    for seed in range(100):
        rng = np.random.default_rng(seed)
        means = np.concatenate([[0.0, 0.02, 0.04], 0.3 + rng.uniform(0.0, 1.0, 17)])
        values = means[:, None] + rng.normal(0.0, 1.0, 128)[None, :] + rng.normal(0.0, 0.3, (20, 128))
        result = race(list(range(20)), lambda c, a, b: values[c, a:b], 128, keep=3)
        assert set(result.ranking[:3]) == {0, 1, 2}, seed
        assert len(result.survivors) >= 3 and result.tokens < result.full_tokens


def test_stages_and_trace():
    means, values = planted(0)
    result = race(list("abcdefghijklmnopqrstuvwx"), lambda c, a, b: values["abcdefghijklmnopqrstuvwx".index(c), a:b],
                  128, first=8, growth=2.0)
    assert [s.windows for s in result.stages] == schedule(128, 8, 2.0)[: len(result.stages)]
    assert result.stages[0].entered == list(range(24))
    for stage in result.stages:
        assert all(z > threshold(2.5, stage.windows) for z in stage.dropped.values())
        assert stage.reference in stage.entered and stage.reference not in stage.dropped
    for c, s in result.dropped_at.items():
        assert result.windows[c] == result.stages[s].windows
    assert sum(s.tokens for s in result.stages) == result.tokens
    rows = result.to_dict()
    assert rows["ranking"][0] == result.best and len(rows["stages"]) == len(result.stages)
    # dropped later ranks higher than dropped earlier
    order = [result.dropped_at[c] for c in result.ranking[len(result.survivors):]]
    assert order == sorted(order, reverse=True)


def test_nothing_is_dropped_without_evidence():
    """Equal candidates (one loss array for all): no paired difference, so the race runs to the end."""
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 1, 64)
    result = race(list(range(5)), lambda c, a, b: shared[a:b], 64, first=4)
    assert result.survivors == [0, 1, 2, 3, 4] and result.tokens == result.full_tokens


def test_paired_z_threshold_and_schedule():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = a - np.array([0.1, 0.3, 0.2, 0.2])
    d = a - b
    assert paired_z(a, b) == pytest.approx(d.mean() / (d.std(ddof=1) / 2))
    assert paired_z(a + 1, a) == math.inf and paired_z(a, a) == 0.0 and math.isnan(paired_z(a[:1], b[:1]))
    assert threshold(2.5, 1) == math.inf
    assert threshold(2.5, 8) == pytest.approx(3.31, abs=0.01)  # t_7 at the normal's 2.5σ tail is about 3.4
    assert threshold(2.5, 10**6) == pytest.approx(2.5, abs=1e-5)
    assert schedule(100, 8, 2.0) == [8, 16, 32, 64, 100]
    assert schedule(5, 8, 2.0) == [5]
    assert schedule(10, 1, 1.2) == [1, 2, 3, 4, 5, 6, 8, 10]
    with pytest.raises(ValueError):
        schedule(10, 0, 2.0)
    with pytest.raises(ValueError):
        race([], lambda c, a, b: [], 4)
    with pytest.raises(ValueError, match="returned"):
        race([0, 1], lambda c, a, b: [0.0], 8, first=4)


def test_a_race_over_kl_window_ranges():
    """Race every two-layer removal of a tiny model on RemovalKL's windows: the winner is the best of a full
    measurement of every candidate whenever the race's own numbers separate them, and the meter spent what the race
    reports."""
    import itertools

    torch = pytest.importorskip("torch")
    from lmshrink.adapters.llama import LlamaAdapter
    from lmshrink.evaluate.kl import RemovalKL
    from lmshrink.testing import sample_ids, single_thread, tiny_llama

    with single_thread():
        model = tiny_llama(layers=6, tie=False)
        ids = sample_ids(model, batch=32, seq_len=16, seed=2)
        meter = RemovalKL(model, LlamaAdapter(), ids, k=32, batch_size=8)
        sets = [list(s) for s in itertools.combinations(range(6), 2)]
        result = race(sets, meter.windows, meter.num_windows, first=8, tokens_per_window=meter.seq_len)
        assert meter.tokens_spent == result.tokens < result.full_tokens
        full = [meter(s).mean for s in sets]
        assert full[result.best] == min(full[c] for c in result.survivors)
        assert result.best in sorted(range(len(sets)), key=full.__getitem__)[:3]
        del torch
