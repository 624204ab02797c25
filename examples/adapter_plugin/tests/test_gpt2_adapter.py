"""The plugin's own tests: lmshrink's adapter conformance suite on a tiny random GPT-2."""

from __future__ import annotations

from lmshrink.testing import AdapterConformance, tiny_gpt2, tiny_llama
from lmshrink_gpt2 import GPT2Adapter


class TestGPT2Adapter(AdapterConformance):
    adapter = GPT2Adapter()

    def make_model(self):
        return tiny_gpt2()

    def foreign_models(self):
        return [tiny_llama()]
