import numpy as np
import pytest
import torch

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.core import Gates
from lmshrink.data import Calibration
from lmshrink.evaluate.loss import calibration_loss, per_sample_loss
from lmshrink.objectives.fisher import gate_gradients
from lmshrink.plugins import get_objective
from tiny import tiny_llama

ADAPTER = LlamaAdapter()


def batch(n=4, t=24, vocab=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, t), generator=g)


def gated_loss(model, ids, values, granularity="layer"):
    with torch.no_grad(), ADAPTER.gate(model, Gates(values), granularity):
        return per_sample_loss(model, ids)


@pytest.mark.parametrize("granularity", ["layer", "sublayer"])
def test_gate_gradients_equal_finite_differences(granularity):
    model = tiny_llama(3).double()
    ids = batch(2)
    A, _ = gate_gradients(model, ADAPTER, ids, granularity, batch_size=2, progress=False)
    n = len(ADAPTER.blocks(model, granularity))
    eps = 1e-3  # central differences: O(eps²) truncation; rotary tables are float32 even in a float64 model
    fd = np.zeros((2, n))
    for i in range(n):
        up, down = torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
        up[i] += eps
        down[i] -= eps
        fd[:, i] = ((gated_loss(model, ids, up, granularity) - gated_loss(model, ids, down, granularity)) / (2 * eps)).numpy()
    np.testing.assert_allclose(A, fd, rtol=1e-3, atol=1e-4)
    assert np.abs(A).max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("granularity", ["layer", "sublayer"])
def test_checkpointing_gives_the_same_gradients(granularity):
    model = tiny_llama(3)
    ids = batch(3)
    plain, losses = gate_gradients(model, ADAPTER, ids, granularity, batch_size=2, progress=False)
    saved, saved_losses = gate_gradients(model, ADAPTER, ids, granularity, batch_size=2, progress=False,
                                         checkpointing=True)
    np.testing.assert_allclose(saved, plain, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(saved_losses, losses, rtol=1e-6)
    assert not any("forward" in vars(layer) for layer in model.model.layers)  # layers restored


def test_batched_per_sample_gradients_equal_batch_size_one():
    model = tiny_llama(4)
    ids = batch(6)
    batched, losses = gate_gradients(model, ADAPTER, ids, batch_size=6, progress=False)
    single, single_losses = gate_gradients(model, ADAPTER, ids, batch_size=1, progress=False)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(losses, single_losses, rtol=1e-5)
    assert not any(p.requires_grad is False for p in model.parameters())  # gradients flags restored


def test_gates_at_one_leave_logits_unchanged_and_zero_equals_removal(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_llama(5)
    ids = batch(2)
    with torch.no_grad():
        plain = model(ids).logits
        with ADAPTER.gate(model, Gates(torch.ones(5))):
            gated_one = model(ids).logits
        values = torch.ones(5)
        values[[1, 3]] = 0
        with ADAPTER.gate(model, Gates(values)):
            gated_zero = model(ids).logits
    torch.testing.assert_close(gated_one, plain, rtol=0, atol=0)

    pruned = ADAPTER.remove(model, [1, 3])
    assert pruned.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1, 2]
    if getattr(pruned.config, "layer_types", None) is not None:
        assert len(pruned.config.layer_types) == 3
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 3
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, gated_zero, rtol=1e-5, atol=1e-5)
        prompt = ids[:1, :8]
        cached = reloaded.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = reloaded.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape == (1, 14)
    torch.testing.assert_close(cached, uncached)


def test_fisher_problem_is_the_empirical_fisher():
    model = tiny_llama(4)
    calib = Calibration(batch(8), "random tokens")
    p = get_objective("fisher").build(model, ADAPTER, calib, progress=False)
    A, _ = gate_gradients(model, ADAPTER, calib.input_ids, progress=False)
    np.testing.assert_allclose(p.quadratic, A.T @ A / 8, rtol=1e-5, atol=1e-9)
    assert np.all(p.linear == 0) and np.linalg.eigvalsh(p.quadratic).min() > -1e-9
    q = get_objective("fisher").build(model, ADAPTER, calib, first_order=True, progress=False)
    np.testing.assert_allclose(q.linear, -A.mean(0), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(q.quadratic, A.T @ A / 16, rtol=1e-5, atol=1e-9)
    assert q.metadata["cached_measurement"] is True  # gradients reused from the first build


@pytest.mark.parametrize("granularity", ["layer", "sublayer"])
def test_pairs_problem_reproduces_measured_single_and_pair_losses(granularity):
    model = tiny_llama(4)
    calib = Calibration(batch(4), "random tokens")
    p = get_objective("pairs").build(model, ADAPTER, calib, samples=4, batch_size=3, granularity=granularity,
                                     progress=False)
    base = calibration_loss(model, calib.input_ids)
    for removed in [(0,), (2,), (1, 3), (0, 2), (2, 3), (0, 7) if granularity == "sublayer" else (0, 3)]:
        measured = calibration_loss(model, calib.input_ids, adapter=ADAPTER, removed=removed, granularity=granularity)
        assert p.energy(p.state(removed)) == pytest.approx(measured - base, rel=1e-5, abs=1e-6)


def test_midstack_measurement_equals_whole_forward_passes():
    from lmshrink.objectives.pairs import _full_losses, _midstack_losses

    model = tiny_llama(5)
    ids = batch(3)
    for granularity in ("layer", "sublayer"):
        full = _full_losses(model, ADAPTER, ids, granularity, lambda: None)
        mid = _midstack_losses(model, ADAPTER, ids, granularity, lambda: None)
        for a, b in zip(full, mid):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
