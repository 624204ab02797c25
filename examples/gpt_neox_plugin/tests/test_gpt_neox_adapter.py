"""The plugin's own tests: lmshrink's adapter conformance suite on a tiny random GPT-NeoX."""

from __future__ import annotations

from lmshrink.testing import conformance_suite, tiny_gpt_neox, tiny_llama
from lmshrink_gpt_neox import GPTNeoXAdapter

TestGPTNeoXAdapter = conformance_suite(GPTNeoXAdapter(), tiny_gpt_neox, foreign=[tiny_llama])
