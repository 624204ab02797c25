"""The plugin's own tests: lmshrink's adapter conformance suite on a tiny random GPT-2."""

from __future__ import annotations

import torch

from lmshrink.testing import AdapterConformance, tiny_llama
from lmshrink_gpt2 import GPT2Adapter


def tiny_gpt2(layers: int = 4, seed: int = 0):
    """A random GPT-2 small enough for unit tests, with weights large enough that every block matters."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=128, n_positions=128, n_embd=32, n_layer=layers, n_head=4,
                        initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


class TestGPT2Adapter(AdapterConformance):
    adapter = GPT2Adapter()

    def make_model(self):
        return tiny_gpt2()

    def foreign_models(self):
        return [tiny_llama()]
