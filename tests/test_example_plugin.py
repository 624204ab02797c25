"""The example adapter plugin (examples/adapter_plugin) installed for real: pip builds it and installs it into a
temporary folder put on sys.path, lmshrink discovers it through its entry point, and the conformance suite
passes on it."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lmshrink.plugins as plugins
from lmshrink.testing import check_refuses, run_conformance, single_thread, tiny_llama

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "adapter_plugin"


def _install(target: Path) -> None:
    """``pip install --no-deps`` the plugin into ``target`` (offline: no index, no build isolation), building
    from a copy so that the source tree gets no build/ or egg-info folders."""
    source = target.parent / "lmshrink-gpt2-src"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=target.parent)
    if done.returncode != 0:
        pytest.fail(f"pip could not install the example plugin:\n{done.stdout}\n{done.stderr}")


def _forget_plugin_modules() -> None:
    for name in [m for m in sys.modules if m == "lmshrink_gpt2" or m.startswith("lmshrink_gpt2.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    _install(target)
    sys.path.insert(0, str(target))
    _forget_plugin_modules()  # import it from the fresh install, not from an earlier import
    plugins.reset()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        _forget_plugin_modules()
        plugins.reset()


def tiny_gpt2(layers: int = 4, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=128, n_positions=128, n_embd=32, n_layer=layers, n_head=4,
                        initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def test_the_installed_plugin_is_found_through_its_entry_point(installed):
    assert list(installed.glob("lmshrink_gpt2-*.dist-info/entry_points.txt"))
    entry = plugins.registry("adapter").entry("gpt2")
    assert entry.package == "lmshrink-gpt2" and entry.version == "0.1.0"
    assert str(installed) in sys.modules["lmshrink_gpt2"].__file__
    adapter = plugins.find_adapter(tiny_gpt2())
    assert type(adapter).__name__ == "GPT2Adapter"
    # built-in adapters still win for their own models
    assert plugins.find_adapter(tiny_llama()).name == "llama"


def test_conformance_suite_passes_on_the_plugin(installed, tmp_path):
    adapter = plugins.find_adapter(tiny_gpt2())
    run_conformance(adapter, tiny_gpt2, tmp_path=tmp_path, foreign=[tiny_llama()])


def test_unsupported_models_are_refused_naming_the_plugin_adapter(installed):
    with single_thread():
        check_refuses(plugins.get_adapter("gpt2"))
    from lmshrink.core import LmshrinkError
    from lmshrink.testing import UnsupportedModel

    with pytest.raises(LmshrinkError) as info:
        plugins.find_adapter(UnsupportedModel())
    message = str(info.value)
    assert "gpt2 (GPT-2 decoders" in message and "nemotron_h" in message and "llama" in message
    assert "lmshrink_register_adapters" in message
