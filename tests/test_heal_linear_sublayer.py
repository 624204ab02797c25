"""Linear healing of removed attention and MLP branches (lmshrink.heal.linear, (2) and (3)): the map is the ridge
least-squares solution on the branch before the run, folding it into o_proj / down_proj equals applying it by
hooks, it lowers the error it is fitted on, the healed model saved in lmshrink's format reloads identically, and
``lmshrink prune --granularity sublayer --heal linear`` runs end to end."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import lmshrink
from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.compress.io import save_compressed
from lmshrink.core import Gates
from lmshrink.evaluate.loss import per_sample_loss
from lmshrink.evaluate.measured import RemovalLoss
from lmshrink.evaluate.midstack import LayerInputs
from lmshrink.heal.linear import LinearHeal, applied
from lmshrink.testing import sample_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
ADAPTER = LlamaAdapter()
G = "sublayer"


@pytest.fixture(scope="module")
def model():
    return tiny_llama(layers=6, tie=False)


@pytest.fixture(scope="module")
def ids(model):
    return sample_ids(model, batch=24, seq_len=16, seed=5)


def heal(model, removed, ids, ridge=1e-3):
    healer = LinearHeal(ridge=ridge, batch_size=5)
    runs = healer.fit(model, ADAPTER, removed, ids, G)
    pruned = ADAPTER.remove(copy.deepcopy(model), removed, G)
    healer.fold(runs, pruned, ADAPTER)
    return runs, pruned


def hooked_logits(model, removed, runs, ids):
    values = torch.ones(len(ADAPTER.blocks(model, G)))
    values[list(removed)] = 0.0
    with torch.no_grad(), ADAPTER.gate(model, Gates(values), G), applied(model, ADAPTER, runs):
        return model(input_ids=ids, use_cache=False).logits


# blocks: 2l = attention of layer l, 2l + 1 = its MLP
CASES = {
    "an MLP: the same layer's attention maps": ([3], [("self_attn.o_proj", 1, 1)]),
    "an attention: the previous MLP maps": ([4], [("mlp.down_proj", 1, 1)]),
    "MLP then attention, across layers": ([3, 4], [("self_attn.o_proj", 1, 1)]),
    "a whole layer and a later branch": ([2, 3, 7], [("mlp.down_proj", 0, 0), ("self_attn.o_proj", 3, 2)]),
    "from the embeddings": ([0, 1, 5], [("embeddings", None, None), ("self_attn.o_proj", 2, 1)]),
    "a run over two layers, ending mid-layer": ([3, 4, 5, 6], [("self_attn.o_proj", 1, 1)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_folding_equals_applying_the_map(model, ids, case):
    removed, expected = CASES[case]
    runs, pruned = heal(model, removed, ids)
    assert [(r.target, r.layer, r.pruned_layer) for r in runs] == expected
    assert all(r.healed and r.granularity == G for r in runs)
    torch.testing.assert_close(pruned(input_ids=ids, use_cache=False).logits.detach(),
                               hooked_logits(model, removed, runs, ids), rtol=1e-5, atol=1e-5)
    for run in runs:  # least squares with a small ridge: the fitted stream is closer than plain removal
        assert run.error_healed < run.error_removed
    rows = [r.to_dict() for r in runs]
    assert all(row["granularity"] == G and row["units"] for row in rows)


def test_folded_into_the_branch_in_the_pruned_numbering(model, ids):
    runs, pruned = heal(model, [2, 3, 7], ids)  # layer 1 goes whole: layer 3 becomes layer 2
    assert [r.folded_into for r in runs] == ["model.layers.0.mlp.down_proj", "model.layers.2.self_attn.o_proj"]
    assert runs[1].units == ["model.layers.3.mlp"] and runs[1].span == (3, 3)
    assert len(pruned.model.layers) == 5


def test_the_map_is_the_ridge_least_squares_solution(model, ids):
    """Removing the MLP of layer 1 (block 3): the map is on layer 1's attention, y = the input of layer 1, z = the
    output of layer 1 in the full model; checked against an independent least-squares solve."""
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        got = {}
        hook = model.model.layers[1].self_attn.o_proj.register_forward_hook(lambda m, a, o: got.setdefault("m", o))
        model(input_ids=ids, use_cache=False)
        hook.remove()
    y = out.hidden_states[1].double().reshape(-1, 32).numpy()
    z = out.hidden_states[2].double().reshape(-1, 32).numpy()
    m = got["m"].double().reshape(-1, 32).numpy()
    ridge = 1e-2
    lam = ridge * np.trace(m.T @ m) / 32
    A = np.vstack([m, np.sqrt(lam) * np.eye(32)])
    B = np.vstack([z - y, np.sqrt(lam) * np.eye(32)])
    expected = np.linalg.lstsq(A, B, rcond=None)[0]
    runs, _ = heal(model, [3], ids, ridge=ridge)
    np.testing.assert_allclose(runs[0].map.numpy(), expected, rtol=1e-6, atol=1e-8)
    removed = ((y + m - z) ** 2).sum() / (z**2).sum()
    assert runs[0].error_removed == pytest.approx(removed, rel=1e-9)


@pytest.mark.parametrize("removed", [[3], [2, 3, 7], [0, 1, 5], [4, 5, 6, 9], [1, 2, 3, 4, 10]])
def test_fitting_from_kept_streams_gives_the_same_maps(model, ids, removed):
    healer = LinearHeal(batch_size=5)
    plain = healer.fit(model, ADAPTER, removed, ids, G)
    kept = healer.fit(model, ADAPTER, removed, ids, G, streams=LayerInputs(model, ADAPTER, ids, batch_size=5))
    assert [(r.start, r.stop, r.target) for r in kept] == [(r.start, r.stop, r.target) for r in plain]
    for a, b in zip(plain, kept):
        np.testing.assert_allclose(b.map.numpy(), a.map.numpy(), rtol=1e-5, atol=1e-6)
        assert b.error_healed == pytest.approx(a.error_healed, rel=1e-4)


@pytest.mark.parametrize("removed", [[3], [2, 3, 7], [0, 1, 5]])
def test_healed_measurement_equals_the_healed_pruned_model(model, ids, removed):
    val = sample_ids(model, batch=10, seq_len=16, seed=3)
    runs, pruned = heal(model, removed, ids)
    with torch.no_grad():
        expected = per_sample_loss(pruned, val).double().numpy()
    meter = RemovalLoss(model, ADAPTER, val, granularity=G, batch_size=4)
    np.testing.assert_allclose(meter.healed(removed, runs).per_window, expected, rtol=1e-5, atol=1e-5)


def test_saved_in_lmshrinks_format_it_reloads_identically(model, ids, tmp_path):
    removed = [2, 3, 7]  # layer 1 whole, the MLP of layer 3: lmshrink's format
    assert ADAPTER.save_format(model, removed, G) == "lmshrink"
    runs, pruned = heal(model, removed, ids)
    save_compressed(pruned, tmp_path, info={"healed": [r.to_dict() for r in runs]})
    reloaded = lmshrink.load_compressed(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, pruned(input_ids=ids).logits, rtol=0, atol=0)


def test_tied_embeddings_leave_a_leading_run_unhealed(ids):
    model = tiny_llama(layers=4, tie=True)
    runs, pruned = heal(model, [0, 3], ids)
    assert not runs[0].healed and "tied" in runs[0].reason and runs[1].healed
    torch.testing.assert_close(pruned(input_ids=ids, use_cache=False).logits.detach(),
                               hooked_logits(model, [0, 3], runs, ids), rtol=1e-5, atol=1e-5)


def test_a_model_already_missing_a_branch(ids):
    """Sub-layer blocks skip deleted branches: healing a second removal maps over the placeholder."""
    model = ADAPTER.remove(tiny_llama(layers=5, tie=False), [4], G)  # attention of layer 2 gone
    removed = [3, 5]  # now: the MLP of layer 1 and the attention of layer 3, with the placeholder between
    runs, pruned = heal(model, removed, ids)
    assert [(r.start, r.stop, r.target, r.layer) for r in runs] == [(3, 4, "self_attn.o_proj", 1),
                                                                    (5, 6, "mlp.down_proj", 2)]
    torch.testing.assert_close(pruned(input_ids=ids, use_cache=False).logits.detach(),
                               hooked_logits(model, removed, runs, ids), rtol=1e-5, atol=1e-5)


def test_prune_cli_heals_sublayers_end_to_end(tiny_model_dir, text_file, tmp_path):
    from lmshrink.cli import main

    out = tmp_path / "run"
    code = main(["prune", "--model", str(tiny_model_dir), "--data", str(text_file), "--granularity", "sublayer",
                 "--heal", "linear", "--remove", "2", "--objective", "fisher", "--solver", "exact", "--rerank", "3",
                 "--samples", "8", "--seq-len", "16", "--validation", "8", "--eval-tokens", "128", "--quiet",
                 "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["granularity"] == G and len(report["removed"]) == 2
    assert report["selection"]["heal_aware"]
    linear = report["healing"]["linear"]
    assert linear and all(r["granularity"] == G and r["error_healed"] < r["error_removed"] for r in linear
                          if r["folded_into"])
    if report["saved_format"] == "lmshrink":
        reloaded = lmshrink.load_compressed(out / "model")
    else:
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(out / "model")
    assert sum(p.numel() for p in reloaded.parameters()) == report["parameters_after"]
