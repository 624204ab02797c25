"""The plugin's own tests: lmshrink's adapter conformance suite on a tiny random GPT-NeoX."""

from __future__ import annotations

from lmshrink.testing import AdapterConformance, tiny_gpt_neox, tiny_llama
from lmshrink_gpt_neox import GPTNeoXAdapter


class TestGPTNeoXAdapter(AdapterConformance):
    adapter = GPTNeoXAdapter()

    def make_model(self):
        return tiny_gpt_neox()

    def foreign_models(self):
        return [tiny_llama()]
