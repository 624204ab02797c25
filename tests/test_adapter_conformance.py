"""The adapter conformance suite (lmshrink.testing) on every built-in adapter and tiny model."""

from __future__ import annotations

import pytest

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.adapters.nemotron_h import NemotronHAdapter
from lmshrink.testing import (
    NEMOTRON_3_NANO_PATTERN,
    AdapterConformance,
    conformance_suite,
    tiny_llama,
    tiny_nemotron_h,
    tiny_qwen3,
)
from lmshrink.compat import transformers_lacks
from tiny import needs_transformers


def tiny_nemotron_h_or_skip():
    """The foreign model of the Llama tests, where this transformers has Nemotron-H."""
    reason = transformers_lacks("nemotron_h")
    if reason:
        pytest.skip(reason)
    return tiny_nemotron_h()


pytestmark = pytest.mark.usefixtures("one_thread")


class TestLlamaLayers(AdapterConformance):
    adapter = LlamaAdapter()
    granularities = ("layer",)

    def make_model(self):
        return tiny_llama()

    def foreign_models(self):
        return [tiny_nemotron_h_or_skip()]


class TestLlamaSublayers(AdapterConformance):
    adapter = LlamaAdapter()
    granularities = ("sublayer",)
    # attention of layer 0 alone (the cache's token count lives there), an MLP alone, both branches of layer 1
    # (a whole layer: plain transformers format), and a mix
    removals = ([0], [3], [2, 3], [0, 3, 6, 7])

    def make_model(self):
        return tiny_llama()


TestQwen3 = conformance_suite(LlamaAdapter(), tiny_qwen3, foreign=[tiny_nemotron_h_or_skip])


@needs_transformers("nemotron_h")
class TestNemotronH(AdapterConformance):
    adapter = NemotronHAdapter()

    def make_model(self):
        return tiny_nemotron_h("M*EM-E*M")

    def foreign_models(self):
        return [tiny_llama(), tiny_qwen3()]


@needs_transformers("nemotron_h")
class TestNemotron3NanoPattern(AdapterConformance):
    """The full 52-block layout of NVIDIA-Nemotron-3-Nano-30B-A3B."""

    adapter = NemotronHAdapter()
    # the first attention block, one Mamba2 and one MoE block, five of the six attention blocks, a spread-out mix
    removals = ([5], [0, 1], [5, 12, 19, 26, 42], [0, 5, 10, 51])

    def make_model(self):
        return tiny_nemotron_h(NEMOTRON_3_NANO_PATTERN)

    def foreign_models(self):
        return [tiny_llama()]


@needs_transformers("nemotron_h")
def test_run_conformance_skips_removals_the_adapter_refuses(tmp_path):
    # one attention block only: the default set that removes it is refused (transformers needs one), the rest run
    from lmshrink.testing import removal_sets, run_conformance

    make = lambda: tiny_nemotron_h("ME*-M")  # noqa: E731
    sets = removal_sets(NemotronHAdapter(), make(), "layer")
    assert [2] not in sets and sets
    run_conformance(NemotronHAdapter(), make, tmp_path=tmp_path, foreign=[tiny_llama()])
