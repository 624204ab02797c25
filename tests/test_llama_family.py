"""The Llama adapter on other Llama-shaped families: Qwen2 (per-layer `layer_types`), Mistral."""

import pytest
import torch

from lmshrink.core import Gates
from lmshrink.plugins import find_adapter
from tiny import needs_transformers


def tiny(family):
    import transformers

    torch.manual_seed(0)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=128, max_position_embeddings=128)
    config = getattr(transformers, f"{family}Config")(**common)
    return getattr(transformers, f"{family}ForCausalLM")(config).eval()


@pytest.mark.parametrize("family", ["Qwen2", "Mistral"])
def test_removal_rewrites_config_and_reloads(family, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny(family)
    adapter = find_adapter(model)
    assert adapter.name == "llama" and len(adapter.blocks(model)) == 5
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    values = torch.ones(5)
    values[[0, 4]] = 0
    with torch.no_grad(), adapter.gate(model, Gates(values)):
        gated = model(ids).logits
    types_before = list(getattr(model.config, "layer_types", None) or [])
    adapter.remove(model, [0, 4])
    if types_before:
        assert model.config.layer_types == types_before[1:4]
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 3
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, gated, rtol=1e-5, atol=1e-5)
        out = reloaded.generate(ids[:1, :6], max_new_tokens=4, do_sample=False, use_cache=True)
        ref = reloaded.generate(ids[:1, :6], max_new_tokens=4, do_sample=False, use_cache=False)
    torch.testing.assert_close(out, ref)


@needs_transformers("per_layer_config")
def test_heterogeneous_per_layer_overrides_are_renumbered():
    from transformers import LlamaConfig

    from lmshrink.adapters.llama import rewrite_per_layer_config

    config = LlamaConfig(num_hidden_layers=4, per_layer_config={1: {"intermediate_size": 48}, 3: {"intermediate_size": 96}})
    config.num_hidden_layers = 3
    assert "per_layer_config" in rewrite_per_layer_config(config, [0, 1, 3], 4)
    assert config._heterogeneity_spec.per_layer_overrides == {1: {"intermediate_size": 48}, 2: {"intermediate_size": 96}}
