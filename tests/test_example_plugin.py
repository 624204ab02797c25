"""The example adapter plugins (examples/adapter_plugin for GPT-2, examples/gpt_neox_plugin for GPT-NeoX) installed
for real: pip builds them and installs them into a temporary folder put on sys.path, lmshrink discovers them through
their entry points, and the conformance suite passes on each."""

from __future__ import annotations

import copy
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lmshrink.plugins as plugins
from lmshrink.compat import output_cache
from lmshrink.testing import (
    check_generation,
    check_refuses,
    logits,
    run_conformance,
    sample_ids,
    single_thread,
    tiny_gpt2,
    tiny_gpt_neox,
    tiny_llama,
    tiny_tokenizer,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: adapter name → (example folder, import package, distribution, tiny model factory)
PLUGINS = {
    "gpt2": ("adapter_plugin", "lmshrink_gpt2", "lmshrink-gpt2", tiny_gpt2),
    "gpt_neox": ("gpt_neox_plugin", "lmshrink_gpt_neox", "lmshrink-gpt-neox", tiny_gpt_neox),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _install(folder: str, target: Path) -> None:
    """``pip install --no-deps`` an example plugin into ``target`` (offline: no index, no build isolation),
    building from a copy so that the source tree gets no build/ or egg-info folders."""
    source = target.parent / f"{folder}-src"
    shutil.copytree(EXAMPLES / folder, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=target.parent)
    if done.returncode != 0:
        pytest.fail(f"pip could not install the example plugin {folder}:\n{done.stdout}\n{done.stderr}")


def _forget_plugin_modules() -> None:
    packages = {package for _, package, _, _ in PLUGINS.values()}
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    target = root / "site"
    target.mkdir()
    for folder, _, _, _ in PLUGINS.values():
        _install(folder, target)
    sys.path.insert(0, str(target))
    _forget_plugin_modules()  # import them from the fresh install, not from an earlier import
    plugins.reset()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        _forget_plugin_modules()
        plugins.reset()


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_the_installed_plugin_is_found_through_its_entry_point(installed, name):
    folder, package, distribution, make = PLUGINS[name]
    assert list(installed.glob(f"{package}-*.dist-info/entry_points.txt"))
    entry = plugins.registry("adapter").entry(name)
    assert entry.package == distribution and entry.version == "0.1.0"
    assert str(installed) in sys.modules[package].__file__
    assert plugins.find_adapter(make()).name == name
    assert not any(plugins.get_adapter(builtin).matches(make()) for builtin in ("llama", "nemotron_h"))
    # built-in adapters still win for their own models
    assert plugins.find_adapter(tiny_llama()).name == "llama"


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_conformance_suite_passes_on_the_plugin(installed, name, tmp_path):
    make = PLUGINS[name][3]
    adapter = plugins.find_adapter(make())
    others = [PLUGINS[other][3]() for other in PLUGINS if other != name]
    run_conformance(adapter, make, tmp_path=tmp_path, foreign=[tiny_llama(), *others])


def test_the_gpt_neox_adapter_is_one_short_file():
    source = EXAMPLES / "gpt_neox_plugin" / "src" / "lmshrink_gpt_neox" / "adapter.py"
    assert len(source.read_text().splitlines()) < 60


def test_unsupported_models_are_refused_naming_the_plugin_adapters(installed):
    with single_thread():
        check_refuses(plugins.get_adapter("gpt2"))
    from lmshrink.core import LmshrinkError
    from lmshrink.testing import UnsupportedModel

    with pytest.raises(LmshrinkError) as info:
        plugins.find_adapter(UnsupportedModel())
    message = str(info.value)
    assert "gpt2 (GPT-2 decoders" in message and "gpt_neox (GPT-NeoX decoders" in message
    assert "nemotron_h" in message and "llama" in message and "lmshrink_register_adapters" in message


def test_gpt_neox_decodes_through_its_cache_after_removal(installed):
    adapter = plugins.get_adapter("gpt_neox")
    model = adapter.remove(tiny_gpt_neox(layers=5), [0, 2])
    layers = model.gpt_neox.layers
    assert model.config.num_hidden_layers == 3
    assert [layer.attention.layer_idx for layer in layers] == [0, 1, 2]
    ids = sample_ids(model, batch=1, seq_len=6)
    with torch.no_grad():
        cache = output_cache(model(input_ids=ids, use_cache=True))
    assert len(cache.layers) == 3 and [layer.get_seq_length() for layer in cache.layers] == [6, 6, 6]
    check_generation(model)  # step-by-step logits equal a full pass; greedy generate equal with and without cache

    # the same model with its layers' old indices (1, 3, 4) cannot decode: the renumbering is what makes it work
    stale = copy.deepcopy(model)
    for old, layer in zip((1, 3, 4), stale.gpt_neox.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = old
    with pytest.raises((IndexError, AssertionError)):
        check_generation(stale)


def test_gpt_neox_mid_stack_measurement_and_linear_layers(installed):
    import torch.nn as nn

    from lmshrink.evaluate.loss import per_sample_loss
    from lmshrink.evaluate.midstack import capture_layer_inputs, loss_from_hidden

    adapter = plugins.get_adapter("gpt_neox")
    model = tiny_gpt_neox()
    ids = sample_ids(model, batch=2, seq_len=10)
    store: dict[int, torch.Tensor] = {}
    with torch.no_grad(), capture_layer_inputs(model, adapter, store):
        full = per_sample_loss(model, ids)
    with torch.no_grad():
        for layer in (1, 3):
            mid = loss_from_hidden(model, adapter, layer, store[layer], ids)
            torch.testing.assert_close(mid, full, atol=1e-5, rtol=0)
    linear = adapter.linear_layers(model)
    assert len(linear) == 16 and all(isinstance(m, nn.Linear) for m in linear.values())
    assert linear["gpt_neox.layers.2.attention.query_key_value"] is model.gpt_neox.layers[2].attention.query_key_value


def test_lmshrink_prune_runs_on_a_gpt_neox_model_through_the_plugin(installed, tmp_path):
    from pydoc_data.topics import topics
    from transformers import AutoModelForCausalLM

    from lmshrink.cli import main

    model_dir = tmp_path / "tiny-gpt-neox"
    tiny_gpt_neox(layers=6).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    text = tmp_path / "docs.txt"
    text.write_text("\n\n".join(topics[k] for k in sorted(topics)[:10]))
    out = tmp_path / "out"
    argv = ["prune", "--model", str(model_dir), "--data", str(text), "--samples", "8", "--seq-len", "32",
            "--remove", "2", "--solver", "exact", "--no-eval", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    removed = [b["index"] for b in report["removed"]]
    assert len(removed) == 2 and all(b["name"].startswith("gpt_neox.layers.") for b in report["removed"])
    reloaded = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    assert type(reloaded).__name__ == "GPTNeoXForCausalLM" and len(reloaded.gpt_neox.layers) == 4
    # the kept layers are the original ones, in order: the reloaded model equals the original with the gates off
    original = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    gates = torch.ones(6)
    gates[removed] = 0
    ids = sample_ids(original)
    adapter = plugins.get_adapter("gpt_neox")
    torch.testing.assert_close(logits(reloaded, ids), logits(original, ids, adapter, gates), atol=1e-5, rtol=0)
    check_generation(reloaded)
