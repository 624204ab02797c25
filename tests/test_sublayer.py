"""Sub-layer granularity for Llama-family models: attention and MLP removed apart, saved in lmshrink's format
unless every removed unit is a whole layer."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

import lmshrink
from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.adapters.sublayer import RemovedAttention, RemovedMLP, removed_branches
from lmshrink.compress.io import CONFIG_FILE, WEIGHTS_FILE, save_compressed, transforms_of
from lmshrink.core import LmshrinkError
from lmshrink.testing import (
    check_gate_zero_is_removal,
    check_generation,
    logits,
    sample_ids,
    tiny_llama,
    tiny_qwen3,
)

ADAPTER = LlamaAdapter()


pytestmark = pytest.mark.usefixtures("one_thread")


def _gated(model, removed, granularity="sublayer"):
    n = len(ADAPTER.blocks(model, granularity))
    gates = torch.ones(n)
    gates[list(removed)] = 0
    return logits(model, sample_ids(model), ADAPTER, gates, granularity)


def test_blocks_are_attention_then_mlp_of_each_layer():
    model = tiny_llama()
    blocks = ADAPTER.blocks(model, "sublayer")
    assert [(b.index, b.name, b.kind, b.layer) for b in blocks[:3]] == [
        (0, "model.layers.0.self_attn", "attention", 0),
        (1, "model.layers.0.mlp", "mlp", 0),
        (2, "model.layers.1.self_attn", "attention", 1),
    ]
    assert len(blocks) == 8


@pytest.mark.parametrize(
    "granularity,indices,fmt",
    [
        ("layer", [1], "transformers"),
        ("sublayer", [0], "lmshrink"),  # a layer without its attention
        ("sublayer", [2, 3], "transformers"),  # both branches of layer 1: a whole layer
        ("sublayer", [2, 3, 5], "lmshrink"),
    ],
)
def test_save_format(granularity, indices, fmt):
    assert ADAPTER.save_format(tiny_llama(), indices, granularity) == fmt


def test_a_removed_branch_is_gone_from_the_saved_weights(tmp_path):
    model = tiny_llama()
    expected = _gated(model, [2])  # attention of layer 1
    before = sum(p.numel() for p in model.parameters())
    attn = sum(p.numel() for p in model.model.layers[1].self_attn.parameters())
    ADAPTER.remove(model, [2], "sublayer")
    assert isinstance(model.model.layers[1].self_attn, RemovedAttention)
    assert sum(p.numel() for p in model.parameters()) == before - attn
    assert len(model.model.layers) == 4 and model.config.num_hidden_layers == 4
    assert transforms_of(model) == [{"type": "remove_sublayers", "layers": "model.layers", "removed": [[1, "self_attn"]]}]

    save_compressed(model, tmp_path)
    with safe_open(str(tmp_path / WEIGHTS_FILE), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("model.layers.1.self_attn.") for k in keys)
    assert any(k.startswith("model.layers.1.mlp.") for k in keys)
    assert any(k.startswith("model.layers.0.self_attn.") for k in keys)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["transforms"][0]["removed"] == [[1, "self_attn"]]

    reloaded = lmshrink.load_compressed(tmp_path)
    assert isinstance(reloaded.model.layers[1].self_attn, RemovedAttention)
    assert [b.name for b in ADAPTER.blocks(reloaded, "sublayer")][2:4] == ["model.layers.1.mlp", "model.layers.2.self_attn"]
    torch.testing.assert_close(logits(reloaded, sample_ids(reloaded)), expected, atol=1e-5, rtol=0)
    check_generation(reloaded)


def test_removing_both_branches_removes_the_layer_in_plain_transformers_format(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_qwen3()
    expected = _gated(model, [2, 3, 7])  # layer 1 whole, and the MLP of layer 3
    whole = tiny_qwen3()
    assert ADAPTER.save_format(whole, [2, 3], "sublayer") == "transformers"
    ADAPTER.remove(whole, [2, 3], "sublayer")
    assert whole.config.num_hidden_layers == 3 and len(whole.config.layer_types) == 3
    assert transforms_of(whole) == [] and removed_branches(whole) == {}
    whole.save_pretrained(tmp_path / "hf")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "hf").config.num_hidden_layers == 3

    ADAPTER.remove(model, [2, 3, 7], "sublayer")
    assert len(model.model.layers) == 3
    assert isinstance(model.model.layers[2].mlp, RemovedMLP)  # old layer 3, renumbered
    assert all(layer.self_attn.layer_idx == i for i, layer in enumerate(model.model.layers))
    assert transforms_of(model)[0]["removed"] == [[2, "mlp"]]
    torch.testing.assert_close(logits(model, sample_ids(model)), expected, atol=1e-5, rtol=0)


def test_later_removals_keep_the_record_in_step(tmp_path):
    model = tiny_llama(layers=5)
    ids = sample_ids(model)
    ADAPTER.remove(model, [4], "sublayer")  # attention of layer 2
    ADAPTER.remove(model, [0], "layer")  # layer 0: old layer 2 becomes layer 1
    assert removed_branches(model) == {1: ["self_attn"]}
    assert transforms_of(model)[0]["removed"] == [[1, "self_attn"]]
    # the sub-layer blocks now skip the removed branch; gating another one still equals removing it
    blocks = ADAPTER.blocks(model, "sublayer")
    assert len(blocks) == 7 and blocks[2].name == "model.layers.1.mlp"
    check_gate_zero_is_removal(ADAPTER, model, [5], "sublayer", ids)
    expected = logits(model, ids)
    assert ADAPTER.save_format(model, [0], "layer") == "lmshrink"
    save_compressed(model, tmp_path / "a")
    torch.testing.assert_close(logits(lmshrink.load_compressed(tmp_path / "a"), ids), expected, atol=1e-5, rtol=0)
    # removing the MLP left in layer 1 removes the layer, and the record with it
    ADAPTER.remove(model, [2], "sublayer")
    assert len(model.model.layers) == 3 and transforms_of(model) == [] and removed_branches(model) == {}
    assert ADAPTER.save_format(model, [], "sublayer") == "transformers"


def test_gating_a_removed_model_and_refusals():
    model = tiny_llama(layers=2)
    ADAPTER.remove(model, [0], "sublayer")
    with pytest.raises(LmshrinkError, match="every layer"):
        ADAPTER.remove(copy.deepcopy(model), [0, 1, 2], "sublayer")
    with pytest.raises(LmshrinkError, match="out of range"):
        ADAPTER.remove(copy.deepcopy(model), [3], "sublayer")
    with pytest.raises(LmshrinkError, match="twice"):
        ADAPTER.remove(copy.deepcopy(model), [1, 1], "sublayer")
    assert ADAPTER.linear_layers(model).keys() >= {"model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"}
    assert not any(name.startswith("model.layers.0.self_attn") for name in ADAPTER.linear_layers(model))
