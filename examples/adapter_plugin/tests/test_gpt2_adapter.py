"""The plugin's own tests: lmshrink's adapter conformance suite on a tiny random GPT-2."""

from __future__ import annotations

from lmshrink.testing import conformance_suite, tiny_gpt2, tiny_llama
from lmshrink_gpt2 import GPT2Adapter

TestGPT2Adapter = conformance_suite(GPT2Adapter(), tiny_gpt2, foreign=[tiny_llama])
