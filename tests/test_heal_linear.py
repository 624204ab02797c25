"""Linear healing (lmshrink.heal.linear): the fitted map is the ridge least-squares solution, folding it into the
weights equals applying it, it lowers the error it is fitted on, and the healed model reloads with plain
transformers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.core import Gates, LmshrinkError
from lmshrink.evaluate.loss import per_sample_loss
from lmshrink.evaluate.midstack import LayerInputs
from lmshrink.heal.linear import LinearHeal, applied, removed_runs
from lmshrink.testing import sample_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
ADAPTER = LlamaAdapter()


@pytest.fixture(scope="module")
def ids():
    return sample_ids(tiny_llama(layers=6), batch=24, seq_len=16, seed=5)


def heal(model, removed, ids, ridge=1e-3):
    healer = LinearHeal(ridge=ridge, batch_size=5)
    runs = healer.fit(model, ADAPTER, removed, ids)
    pruned = ADAPTER.remove(copy.deepcopy(model), removed)
    unhealed = copy.deepcopy(pruned)
    healer.fold(runs, pruned, ADAPTER)
    return runs, pruned, unhealed


def test_runs():
    assert removed_runs([5, 1, 2]) == [(1, 3), (5, 6)]
    assert removed_runs([]) == []


def test_folding_equals_applying_the_map(ids):
    model = tiny_llama(layers=6)
    runs, healed, unhealed = heal(model, [2, 3, 5], ids)
    assert [r.healed for r in runs] == [True, True]
    assert [r.folded_into for r in runs] == ["model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"]
    # the same maps applied by hooks on the full model with the layers gated off
    gates = Gates(torch.tensor([1.0, 1, 0, 0, 1, 0]))
    with torch.no_grad(), ADAPTER.gate(model, gates), applied(model, ADAPTER, runs):
        expected = model(input_ids=ids, use_cache=False).logits
    with torch.no_grad():
        actual = healed(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_the_map_is_the_ridge_least_squares_solution(ids):
    model = tiny_llama(layers=6)
    removed = [3, 4]
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        z = out.hidden_states[5].double().reshape(-1, 32)  # input of layer 5 in the full model
        h = out.hidden_states[3].double().reshape(-1, 32)  # output of layer 2
        mlp_out = {}
        hook = model.model.layers[2].mlp.register_forward_hook(lambda m, a, o: mlp_out.setdefault("m", o))
        model(input_ids=ids, use_cache=False)
        hook.remove()
    m = mlp_out["m"].double().reshape(-1, 32).numpy()
    y = h.numpy() - m
    ridge = 1e-2
    lam = ridge * np.trace(m.T @ m) / 32
    # independent: stack the ridge rows √λ·I → √λ·I under the data and solve by least squares
    A = np.vstack([m, np.sqrt(lam) * np.eye(32)])
    B = np.vstack([z.numpy() - y, np.sqrt(lam) * np.eye(32)])
    expected = np.linalg.lstsq(A, B, rcond=None)[0]
    runs, _, _ = heal(model, removed, ids, ridge=ridge)
    np.testing.assert_allclose(runs[0].map.numpy(), expected, rtol=1e-6, atol=1e-8)
    assert runs[0].error_healed < runs[0].error_removed


def test_healing_lowers_the_loss_it_was_fitted_for(ids):
    model = tiny_llama(layers=6)
    _, healed, unhealed = heal(model, [1, 2, 4], ids)
    with torch.no_grad():
        assert float(per_sample_loss(healed, ids).mean()) < float(per_sample_loss(unhealed, ids).mean())


def test_tied_embeddings_leave_a_leading_run_unhealed(ids):
    model = tiny_llama(layers=6, tie=True)
    runs, healed, unhealed = heal(model, [0, 1, 4], ids)
    assert not runs[0].healed and "tied" in runs[0].reason
    assert runs[1].healed


def test_untied_embeddings_take_a_leading_map(ids):
    model = tiny_llama(layers=6, tie=False)
    runs, healed, unhealed = heal(model, [0, 1], ids)
    assert runs[0].folded_into == runs[0].target == "embeddings"
    with torch.no_grad():
        assert float(per_sample_loss(healed, ids).mean()) < float(per_sample_loss(unhealed, ids).mean())


def test_the_healed_model_reloads_with_plain_transformers(ids, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_llama(layers=6)
    _, healed, _ = heal(model, [2, 3], ids)
    healed.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, healed(input_ids=ids).logits)


def test_kept_layer_inputs_are_the_full_models_hidden_states(ids):
    model = tiny_llama(layers=6)
    streams = LayerInputs(model, ADAPTER, ids, batch_size=5)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    assert len(streams.batches) == 5 and streams.num_layers == 6
    for layer in range(6):  # hidden_states[l] is the input of layer l; the last entry is after the final norm
        torch.testing.assert_close(torch.cat(streams.at(layer)), hidden[layer], rtol=1e-6, atol=1e-6)
    last = {}
    hook = model.model.layers[5].register_forward_hook(
        lambda m, a, o: last.setdefault("h", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    hook.remove()
    torch.testing.assert_close(torch.cat(streams.at(6)), last["h"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("removed", [[2, 3, 5], [4, 5], [1], [1, 2, 4], [0, 1, 4]])
def test_fitting_from_kept_streams_gives_the_same_maps(ids, removed):
    model = tiny_llama(layers=6, tie=False)
    healer = LinearHeal(ridge=1e-3, batch_size=5)
    plain = healer.fit(model, ADAPTER, removed, ids)
    kept = healer.fit(model, ADAPTER, removed, ids, streams=LayerInputs(model, ADAPTER, ids, batch_size=5))
    assert [(r.start, r.stop, r.target) for r in kept] == [(r.start, r.stop, r.target) for r in plain]
    for a, b in zip(plain, kept):
        np.testing.assert_allclose(b.map.numpy(), a.map.numpy(), rtol=1e-5, atol=1e-6)
        assert b.error_healed == pytest.approx(a.error_healed, rel=1e-4)
        assert b.error_removed == pytest.approx(a.error_removed, rel=1e-4)


def test_bad_input(ids):
    with pytest.raises(ValueError, match="shape"):
        model = tiny_llama(layers=4)
        LinearHeal().fit(model, ADAPTER, [1], ids, streams=LayerInputs(model, ADAPTER, ids[:4]))
    with pytest.raises(LmshrinkError, match="ridge"):
        LinearHeal(ridge=-1)
    with pytest.raises(LmshrinkError, match="granularity"):
        LinearHeal().fit(tiny_llama(layers=4), ADAPTER, [1], ids, granularity="head")
