"""Nemotron-H adapter: blocks and kinds from the config, removal that rewrites the config and renumbers the cache,
per-kind removal constraints on the Nemotron-3-Nano pattern."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmshrink.compat import cache_argument, output_cache
from lmshrink.adapters.nemotron_h import NemotronHAdapter, block_kinds, pattern_of, rewrite_config
from lmshrink.core import BinaryQuadraticProblem, LmshrinkError
from lmshrink.core.removal import parse_remove, removal_constraints, with_constraints
from lmshrink.plugins import find_adapter, get_solver
from lmshrink.testing import NEMOTRON_3_NANO_PATTERN, logits, sample_ids, tiny_llama, tiny_nemotron_h
from tiny import needs_transformers

NANO = NEMOTRON_3_NANO_PATTERN
ADAPTER = NemotronHAdapter()
KIND = {"M": "mamba", "E": "moe", "*": "attention", "-": "mlp"}


pytestmark = [pytest.mark.usefixtures("one_thread"), needs_transformers("nemotron_h")]


@pytest.fixture(scope="module")
def nano():
    return tiny_nemotron_h(NANO)


def test_tiny_nano_model_has_the_exact_pattern_and_stays_tiny(nano):
    assert len(NANO) == 52 and (NANO.count("M"), NANO.count("E"), NANO.count("*")) == (23, 23, 6)
    assert pattern_of(nano.config) == NANO
    assert nano.config.hybrid_override_pattern == NANO
    assert len(nano.model.layers) == 52
    # the suite's cost is set by the model's size (its speed is a benchmark matter, not a test's)
    assert sum(p.numel() for p in nano.parameters()) < 2_000_000
    ids = sample_ids(nano, batch=4, seq_len=32)
    out = logits(nano, ids)
    assert out.shape == (4, 32, nano.config.vocab_size) and torch.isfinite(out).all()


def test_blocks_and_kinds_come_from_the_config(nano):
    blocks = ADAPTER.blocks(nano)
    assert [b.kind for b in blocks] == [KIND[c] for c in NANO]
    assert [b.name for b in blocks] == [f"model.layers.{i}" for i in range(52)]
    assert [b.layer for b in blocks] == list(range(52))
    # the module's own type agrees with the config's
    mixers = {"mamba": "NemotronHMamba2Mixer", "moe": "NemotronHMoE", "attention": "NemotronHAttention"}
    assert all(type(nano.model.layers[b.index].mixer).__name__ == mixers[b.kind] for b in blocks)


def test_mlp_blocks_are_reported_too():
    model = tiny_nemotron_h("M-*E")
    assert block_kinds(model.config) == ["mamba", "mlp", "attention", "moe"]


def test_find_adapter_picks_nemotron_h_and_llama_does_not_claim_it(nano):
    assert find_adapter(nano).name == "nemotron_h"
    assert find_adapter(tiny_llama()).name == "llama"
    assert not ADAPTER.matches(tiny_llama())
    from lmshrink.adapters.llama import LlamaAdapter

    assert not LlamaAdapter().matches(nano)


def test_only_the_layer_granularity():
    with pytest.raises(LmshrinkError, match="granularity 'sublayer'"):
        ADAPTER.blocks(tiny_nemotron_h(), "sublayer")


def test_removal_rewrites_the_config_and_plain_transformers_reloads_it(nano, tmp_path):
    import copy

    from transformers import AutoConfig, AutoModelForCausalLM

    model = copy.deepcopy(nano)
    drop = [1, 3, 5, 51]  # two MoE, the first attention block, the last MoE
    ids = sample_ids(model)
    gates = torch.ones(52)
    gates[drop] = 0
    expected = logits(model, ids, ADAPTER, gates)
    ADAPTER.remove(model, drop)
    left = "".join(c for i, c in enumerate(NANO) if i not in drop)
    assert model.config.layers_block_type == [
        {"M": "linear_attention", "E": "moe", "*": "full_attention"}[c] for c in left
    ]
    assert model.config.hybrid_override_pattern == left
    assert model.config.num_hidden_layers == 48
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert len(saved["layers_block_type"]) == 48
    assert AutoConfig.from_pretrained(tmp_path).hybrid_override_pattern == left
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(reloaded).__name__ == "NemotronHForCausalLM"
    assert pattern_of(reloaded.config) == left and len(reloaded.model.layers) == 48
    torch.testing.assert_close(logits(reloaded, ids), expected, atol=1e-5, rtol=0)


def test_cache_entries_follow_the_renumbered_blocks(nano):
    import copy

    from transformers.cache_utils import DynamicCache, DynamicLayer, LinearAttentionLayer

    model = ADAPTER.remove(copy.deepcopy(nano), [0, 1, 5])  # the first Mamba2, MoE and attention blocks
    left = pattern_of(model.config)
    for i, block in enumerate(model.model.layers):
        assert block.layer_idx == i
        assert getattr(block.mixer, "layer_idx", i) == i
    cache = DynamicCache(config=model.config)
    expected = {"M": LinearAttentionLayer, "*": DynamicLayer}
    try:  # transformers >= 5.23 gives blocks that keep no state a placeholder; older releases some unused layer
        from transformers.cache_utils import DummyLayer

        expected["E"] = DummyLayer
    except ImportError:
        pass
    assert len(cache.layers) == len(left)
    assert [type(cache.layers[i]) for i, c in enumerate(left) if c in expected] == [expected[c] for c in left if c in expected]
    ids = sample_ids(model, batch=1, seq_len=6)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **{cache_argument(model): cache})
    for i, c in enumerate(left):
        if c == "*":
            assert cache.layers[i].get_seq_length() == 6
        if c == "M":
            if hasattr(cache, "get_recurrent_state"):  # transformers >= 5.23
                assert cache.get_recurrent_state(i) is not None and cache.get_conv_state(i) is not None
            else:
                assert cache.layers[i].is_conv_states_initialized and cache.layers[i].is_recurrent_states_initialized
    assert output_cache(out).get_seq_length() == 6


def test_refuses_to_remove_every_attention_block(nano):
    import copy

    attention = [i for i, c in enumerate(NANO) if c == "*"]
    with pytest.raises(LmshrinkError, match="every attention block"):
        ADAPTER.remove(copy.deepcopy(nano), attention)
    with pytest.raises(LmshrinkError, match="out of range"):
        ADAPTER.remove(copy.deepcopy(nano), [52])


def test_config_rewrite_covers_stored_pattern_and_layer_count_and_leaves_mtp_alone():
    legacy = SimpleNamespace(hybrid_override_pattern="M*ME", num_hidden_layers=4)
    assert rewrite_config(legacy, [0, 1, 3]) == ["hybrid_override_pattern", "num_hidden_layers"]
    assert legacy.hybrid_override_pattern == "M*E" and legacy.num_hidden_layers == 3

    model = tiny_nemotron_h("ME")  # two blocks, like the default mtp_layers_block_type
    mtp = list(model.config.mtp_layers_block_type)
    ADAPTER.remove(model, [1])
    assert model.config.layers_block_type == ["linear_attention"]
    assert model.config.mtp_layers_block_type == mtp


def test_mid_stack_forward_from_a_cached_hidden_state(nano):
    from lmshrink.evaluate.loss import per_sample_loss
    from lmshrink.evaluate.midstack import capture_layer_inputs, loss_from_hidden

    ids = sample_ids(nano, batch=2, seq_len=10)
    store: dict[int, torch.Tensor] = {}
    with torch.no_grad(), capture_layer_inputs(nano, ADAPTER, store):
        full = per_sample_loss(nano, ids)
    assert sorted(store) == list(range(52))
    with torch.no_grad():
        for layer in (5, 30):
            torch.testing.assert_close(loss_from_hidden(nano, ADAPTER, layer, store[layer], ids), full, atol=1e-5, rtol=0)
    assert len(nano.model.layers) == 52


def test_linear_layers(nano):
    import torch.nn as nn

    linear = ADAPTER.linear_layers(nano)
    assert all(isinstance(m, nn.Linear) for m in linear.values())
    assert "model.layers.5.mixer.q_proj" in linear and "model.layers.5.mixer.o_proj" in linear
    assert "model.layers.1.mixer.shared_experts.up_proj" in linear
    assert not any(name.startswith("model.layers.0.") for name in linear)  # Mamba2 block
    assert len([n for n in linear if n.endswith("q_proj")]) == 6
    mlp = ADAPTER.linear_layers(tiny_nemotron_h("-*"))
    assert set(mlp) >= {"model.layers.0.mixer.up_proj", "model.layers.0.mixer.down_proj"}


# --- per-kind removal constraints on the Nemotron-3-Nano pattern ---------------------------------------------------


def _positions(kind: str) -> tuple[int, ...]:
    return tuple(i for i, c in enumerate(NANO) if KIND[c] == kind)


def _nano_blocks(nano):
    return ADAPTER.blocks(nano)


def test_per_kind_counts_give_one_group_per_kind(nano):
    constraints = removal_constraints(_nano_blocks(nano), parse_remove("moe=2,attention=1"))
    groups = {c.name: (c.indices, c.equals) for c in constraints}
    assert groups == {
        "remove:moe": (_positions("moe"), 2),
        "remove:attention": (_positions("attention"), 1),
        "kept": (_positions("mamba"), 0),
    }


def test_a_total_limited_to_some_kinds(nano):
    constraints = removal_constraints(_nano_blocks(nano), parse_remove("3"), ["moe"])
    groups = {c.name: (c.indices, c.equals) for c in constraints}
    kept = tuple(sorted(_positions("mamba") + _positions("attention")))
    assert groups == {"remove:moe": (_positions("moe"), 3), "kept": (kept, 0)}
    # without --kinds a total may take any block
    (only,) = removal_constraints(_nano_blocks(nano), parse_remove("3"))
    assert only.indices == tuple(range(52)) and only.equals == 3


@pytest.mark.parametrize("solver", ["exact", "anneal"])
@pytest.mark.parametrize("remove,kinds", [("moe=2,attention=1", None), ("3", ["moe"])])
def test_solvers_never_remove_kinds_not_named(nano, solver, remove, kinds):
    blocks = _nano_blocks(nano)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 52))
    linear = np.zeros(52)
    linear[list(_positions("mamba"))] = -50.0  # Mamba2 blocks would be the cheapest to remove
    problem = BinaryQuadraticProblem([b.name for b in blocks], linear, a.T @ a / 60)
    spec = parse_remove(remove)
    problem = with_constraints(problem, removal_constraints(blocks, spec, kinds))
    options = {"num_sweeps": 200} if solver == "anneal" else {}
    best = get_solver(solver, problem).solve(problem, num_solutions=3, seed=0, **options)[0]
    removed = [blocks[i].kind for i in best.indices]
    expected = {"moe": 2, "attention": 1} if kinds is None else {"moe": 3}
    assert {k: removed.count(k) for k in set(removed)} == expected


def test_removal_spec_errors(nano):
    blocks = _nano_blocks(nano)
    with pytest.raises(LmshrinkError, match="given twice"):
        parse_remove("moe=2,moe=1")
    with pytest.raises(LmshrinkError, match="not both"):
        parse_remove("3,moe=1")
    with pytest.raises(LmshrinkError, match="no blocks of kind 'expert'"):
        removal_constraints(blocks, parse_remove("expert=1"))
    with pytest.raises(LmshrinkError, match="leaves out"):
        removal_constraints(blocks, parse_remove("mamba=1"), ["moe"])
    with pytest.raises(LmshrinkError, match="only 6"):
        removal_constraints(blocks, parse_remove("attention=7"))
