"""Measurement caches that cannot lie: keyed on every weight, robust to corrupt entries and concurrent writers."""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from lmshrink.cache import cache_dir, cached_arrays
from lmshrink.data import Calibration
from lmshrink.objectives.common import measurement_key
from lmshrink.torch_utils import model_identity, weights_digest
from lmshrink.plugins import find_adapter, get_objective
from lmshrink.staging import TEMP_MARK, host_tag, remove_orphans, temp_path

from tiny import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSHRINK_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def calibration():
    ids = torch.randint(1, 320, (4, 16), generator=torch.Generator().manual_seed(0))
    return Calibration(ids, "random tokens", {"samples": 4, "seq_len": 16})


def test_one_changed_row_changes_the_key(calibration):
    model = tiny_llama(4)
    adapter = find_adapter(model)
    key = measurement_key(model, adapter, calibration, "layer", what="gate_gradients")
    assert measurement_key(tiny_llama(4), adapter, calibration, "layer", what="gate_gradients") == key
    for name in ("model.layers.3.mlp.down_proj.weight", "model.layers.0.self_attn.o_proj.weight"):
        changed = tiny_llama(4)
        with torch.no_grad():
            changed.get_parameter(name)[5] += 1e-6  # one row, far below what a sampled checksum would see
        assert measurement_key(changed, adapter, calibration, "layer", what="gate_gradients") != key
    # the calibration tokens, the measurement and its granularity are part of the key
    other = Calibration(calibration.input_ids.flip(0), "random tokens", calibration.info)
    assert measurement_key(model, adapter, other, "layer", what="gate_gradients") != key
    assert measurement_key(model, adapter, calibration, "layer", what="pair_losses") != key
    assert measurement_key(model, adapter, calibration, "sublayer", what="gate_gradients") != key


def test_weights_digest_is_sha256_of_every_tensor():
    import hashlib

    model = tiny_llama(2)
    expected = hashlib.sha256()
    for name, t in model.state_dict().items():
        expected.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        expected.update(t.numpy().tobytes())
    assert weights_digest(model) == expected.hexdigest()
    assert model_identity(model)["weights"] == expected.hexdigest()


def test_a_model_overwritten_with_changed_rows_is_measured_again(tiny_model_dir, tmp_path, calibration):
    """The reported case: the directory is overwritten with changed down_proj rows; the old entry must not hit."""
    import shutil

    from safetensors.torch import load_file, save_file

    from lmshrink.models import load_model

    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    fisher = get_objective("fisher")
    first = load_model(str(d)).model
    p1 = fisher.build(first, find_adapter(first), calibration, progress=False)
    weights = load_file(d / "model.safetensors")
    weights["model.layers.2.mlp.down_proj.weight"][4:8] *= 1.5  # rows a sampled checksum skips
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    second = load_model(str(d)).model
    p2 = fisher.build(second, find_adapter(second), calibration, progress=False)
    assert not p1.metadata["cached_measurement"] and not p2.metadata["cached_measurement"]
    assert p1.metadata["base_loss"] != p2.metadata["base_loss"]
    again = load_model(str(d)).model
    p3 = fisher.build(again, find_adapter(again), calibration, progress=False)
    assert p3.metadata["cached_measurement"] and p3.metadata["base_loss"] == p2.metadata["base_loss"]
    np.testing.assert_array_equal(p3.quadratic, p2.quadratic)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_corrupt_entry_is_named_and_recomputed(damage):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(1000.0), "b": np.eye(3)}

    arrays, cached = cached_arrays("test", "k1", compute)
    assert not cached and len(calls) == 1
    path = cache_dir() / "test" / "k1.npz"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not an npz " * 50, "empty": b""}[damage])
    with pytest.warns(UserWarning, match=rf"The cache entry {path} is unreadable .*; computing it again\."):
        again, cached = cached_arrays("test", "k1", compute)
    assert not cached and len(calls) == 2
    np.testing.assert_array_equal(again["a"], np.arange(1000.0))
    third, cached = cached_arrays("test", "k1", compute)  # the recomputed entry was stored
    assert cached and len(calls) == 2
    np.testing.assert_array_equal(third["b"], np.eye(3))


def test_concurrent_writers_use_their_own_temp_files():
    assert temp_path(cache_dir() / "x.npz") != temp_path(cache_dir() / "x.npz")
    results, errors = [], []

    def compute():
        time.sleep(0.2)  # all writers measure at once, then store the same key
        return {"a": np.full(100_000, 7.0)}

    def run():
        try:
            results.append(cached_arrays("concurrent", "same", compute)[0]["a"])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 6
    assert all((r == 7.0).all() for r in results)
    folder = cache_dir() / "concurrent"
    assert [p.name for p in folder.iterdir()] == ["same.npz"]


def test_orphans_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = host_tag()
    other_host = "000000" if host != "000000" else "111111"
    orphan_file = tmp_path / f".k.npz{TEMP_MARK}{host}.{dead.pid}-0123abcd.npz"
    orphan_dir = tmp_path / f".out{TEMP_MARK}{host}.{dead.pid}-89abcdef"
    elsewhere = tmp_path / f".out{TEMP_MARK}{other_host}.{dead.pid}-89abcdef"  # another machine's: unknown state
    live = temp_path(tmp_path / "mine")
    orphan_file.write_bytes(b"half")
    orphan_dir.mkdir()
    (orphan_dir / "model").mkdir()
    elsewhere.mkdir()
    live.write_text("being written")
    (tmp_path / "unrelated.txt").write_text("kept")
    assert sorted(remove_orphans(tmp_path)) == sorted([orphan_file, orphan_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, "unrelated.txt"])


def test_prune_sweeps_the_whole_cache_before_it_starts(tmp_path, capsys):
    """A measurement kind this run never writes is swept too (no orphan survives the next run)."""
    from lmshrink.cli import main

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = cache_dir() / "pairs" / f".k.npz{TEMP_MARK}{host_tag()}.{dead.pid}-0123abcd.npz"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half")
    assert main(["prune", "--samples", "0", "--out", str(tmp_path / "out")]) == 2  # refused, after the sweep
    assert not orphan.exists() and "--samples must be at least 1" in capsys.readouterr().err


def test_an_unreadable_converted_model_is_converted_again(tmp_path, monkeypatch):
    """The de-quantized default model lives in the cache; a damaged copy is named and replaced, not loaded."""
    import lmshrink.models as models
    from tiny import tiny_tokenizer

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    conversions = []

    def convert(path, dtype, label):
        conversions.append(path)
        return models.LoadedModel(tiny_llama(2), tiny_tokenizer(), label)

    monkeypatch.setattr(models, "_load_gguf", convert)
    first = models._load_gguf_cached(gguf, torch.float32, "tiny")
    import transformers

    target = cache_dir() / "models" / f"model-{gguf.stat().st_size}-float32-transformers{transformers.__version__}"
    assert len(conversions) == 1 and (target / "model.safetensors").exists()
    again = models._load_gguf_cached(gguf, torch.float32, "tiny")  # read from the cache
    assert len(conversions) == 1 and weights_digest(again.model) == weights_digest(first.model)
    half = models._load_gguf_cached(gguf, torch.bfloat16, "tiny")  # the same entry, loaded in bfloat16
    assert len(conversions) == 1 and half.model.dtype == torch.bfloat16
    data = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[:100])
    with pytest.warns(UserWarning, match=rf"The converted model cached in {target} is unreadable .*; converting the "
                                         "GGUF file again\\."):
        models._load_gguf_cached(gguf, torch.float32, "tiny")
    assert len(conversions) == 2
    assert weights_digest(models._load_gguf_cached(gguf, torch.float32, "tiny").model) == weights_digest(first.model)


def test_the_perplexity_before_removal_is_measured_once(tiny_model_dir, monkeypatch):
    import torch

    import lmshrink.evaluate.perplexity as ppl_module
    from lmshrink.evaluate.perplexity import perplexity
    from lmshrink.models import load_model
    from lmshrink.pipeline.evaluation import perplexity_before

    model = load_model(str(tiny_model_dir)).model
    adapter = find_adapter(model)
    ids = torch.randint(0, model.config.vocab_size, (96,))
    first = perplexity_before(model, ids, window=32, progress=False, adapter=adapter, granularity="layer")
    assert first == perplexity(model, ids, window=32, progress=False)

    def not_again(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(ppl_module, "perplexity", not_again)
    assert perplexity_before(model, ids, window=32, progress=False, adapter=adapter, granularity="layer") == first
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    with pytest.raises(AssertionError, match="measured again"):  # other weights: another entry
        perplexity_before(model, ids, window=32, progress=False, adapter=adapter, granularity="layer")


def test_a_cached_measurement_keeps_what_it_cost(calibration):
    """The seconds a computation took come back with its arrays, from the cache as when first made."""
    from lmshrink.cache import measurement_seconds

    def slow():
        time.sleep(0.2)
        return {"x": np.arange(3.0)}

    made, cached = cached_arrays("test", "cost", slow)
    again, hit = cached_arrays("test", "cost", slow)
    assert not cached and hit
    assert measurement_seconds(made) >= 0.2 and measurement_seconds(again) == measurement_seconds(made)
    np.testing.assert_array_equal(again["x"], made["x"])
    assert measurement_seconds({"x": made["x"]}) is None  # an entry written before entries kept their cost
    # objectives say so in their metadata: pairs read from the cache reports the seconds its measurement took
    model = tiny_llama(3)
    adapter = find_adapter(model)
    first = get_objective("pairs").build(model, adapter, calibration, progress=False)
    second = get_objective("pairs").build(model, adapter, calibration, progress=False)
    assert not first.metadata["cached_measurement"] and second.metadata["cached_measurement"]
    assert second.metadata["measurement_seconds"] == first.metadata["measurement_seconds"] > 0
