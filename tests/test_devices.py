"""Devices and precision: --device, --dtype, --device-map, --save-dtype.

Measurements accumulate in float64 whatever the model's dtype; the saved model holds the save dtype and reloads
with plain transformers; bad settings are refused in one sentence before the model loads. CUDA is simulated by
replacing ``torch.cuda.is_available`` / ``device_count`` (no GPU is needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lmshrink.models
from lmshrink.cli import main
from lmshrink.core import Gates, LmshrinkError
from lmshrink.devices import Placement, cast_saved, resolve_placement, source_dtype

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def refuse_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad setting was refused")

    monkeypatch.setattr(lmshrink.models, "load_model", refuse)


def _calibration(samples: int = 8, seq_len: int = 16):
    from lmshrink.data import Calibration

    ids = torch.randint(1, 320, (samples, seq_len), generator=torch.Generator().manual_seed(0))
    return Calibration(ids, "random tokens", {"samples": samples, "seq_len": seq_len})


def _prune_argv(model: Path, text: Path, out: Path, *flags: str) -> list[str]:
    return ["prune", "--model", str(model), "--data", str(text), "--samples", "4", "--seq-len", "16", "--remove", "2",
            "--objective", "fisher", "--solver", "exact", "--no-eval", "--quiet", "--out", str(out), *flags]


def _refused(capsys, code: int, message: str, out: Path) -> None:
    err = capsys.readouterr().err
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("lmshrink")] == [f"lmshrink: error: {message}"]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if "lmshrink-tmp" in p.name]


# --- float64 accumulation --------------------------------------------------------------------------------------
def test_bfloat16_fisher_is_float64_and_close_to_float32():
    from lmshrink.objectives.fisher import gate_gradients
    from lmshrink.plugins import find_adapter, get_objective
    from tiny import tiny_llama

    model = tiny_llama(4)
    half = tiny_llama(4).to(torch.bfloat16)
    calibration = _calibration()
    adapter = find_adapter(model)
    A, losses = gate_gradients(half, adapter, calibration.input_ids, progress=False)
    assert A.dtype == np.float64 and losses.dtype == np.float64
    H32 = get_objective("fisher").build(model, adapter, calibration, progress=False).quadratic
    H16 = get_objective("fisher").build(half, adapter, calibration, progress=False).quadratic
    assert H16.dtype == np.float64
    assert np.linalg.norm(H16 - H32) < 0.1 * np.linalg.norm(H32)


def test_losses_and_perplexity_of_a_bfloat16_model_are_float64():
    from lmshrink.evaluate.loss import per_sample_loss
    from lmshrink.evaluate.perplexity import perplexity
    from tiny import tiny_llama

    model, half = tiny_llama(2), tiny_llama(2).to(torch.bfloat16)
    ids = _calibration(2, 16).input_ids
    assert per_sample_loss(half, ids).dtype == torch.float64
    full, low = (perplexity(m, ids.reshape(-1), window=16, progress=False) for m in (model, half))
    assert low["tokens"] == full["tokens"] == 30
    assert low["nll"] == pytest.approx(full["nll"], rel=0.02)


def test_gates_follow_the_activation_device_and_dtype():
    like = torch.empty(2, 4, 5, device="meta", dtype=torch.bfloat16)
    g = Gates(torch.ones(2, 3))(1, like)
    assert (g.device.type, g.dtype, tuple(g.shape)) == ("meta", torch.bfloat16, (2, 1, 1))


# --- placement ------------------------------------------------------------------------------------------------
def test_auto_is_float32_on_the_cpu_and_bfloat16_on_a_gpu(no_cuda):
    assert resolve_placement() == Placement("cpu", "float32", None)
    assert resolve_placement("cpu", "bfloat16") == Placement("cpu", "bfloat16", None)


def test_auto_picks_the_gpu_and_the_device_map_needs_one(two_gpus):
    assert resolve_placement() == Placement("cuda", "bfloat16", None)
    assert resolve_placement("cuda:1", "float32") == Placement("cuda:1", "float32", None)
    assert resolve_placement(device_map="auto") == Placement("cuda", "bfloat16", "auto")
    with pytest.raises(LmshrinkError, match=r"^--device cuda:3 names GPU 3, but this machine has 2 CUDA device\(s\) "
                       r"\(cuda:0 to cuda:1\)\.$"):
        resolve_placement("cuda:3")
    with pytest.raises(LmshrinkError, match="cannot be combined with --device cpu"):
        resolve_placement("cpu", device_map="auto")


def test_the_device_map_reaches_from_pretrained(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen: dict = {}
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        kwargs.pop("device_map", None)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    loaded = lmshrink.models.load_model(str(tiny_model_dir), dtype="bfloat16", device_map="auto")
    assert seen["device_map"] == "auto" and seen["dtype"] == torch.bfloat16
    assert loaded.model.dtype == torch.bfloat16


def test_prune_with_the_device_map_loads_on_the_gpus(two_gpus, tiny_model_dir, text_file, tmp_path, monkeypatch,
                                                     capsys):
    seen: dict = {}

    def fake_load(name, **kwargs):
        seen.update(kwargs)
        raise LmshrinkError("stopped after the load call")

    monkeypatch.setattr(lmshrink.models, "load_model", fake_load)
    out = tmp_path / "out"
    code = main(_prune_argv(tiny_model_dir, text_file, out, "--device-map", "auto"))
    _refused(capsys, code, "stopped after the load call", out)
    assert seen == {"dtype": "bfloat16", "device": "cuda", "device_map": "auto"}


@pytest.mark.parametrize("command", ["prune", "svd", "eval", "heal"])
def test_every_command_refuses_cuda_without_it(command, no_cuda, refuse_loading, tiny_model_dir, text_file,
                                               tmp_path, capsys):
    out = tmp_path / "out"
    argv = {"prune": _prune_argv(tiny_model_dir, text_file, out),
            "svd": ["svd", "--model", str(tiny_model_dir), "--out", str(out), "--quiet"],
            "eval": ["eval", str(tiny_model_dir), "--out", str(out)],
            "heal": ["heal", str(tiny_model_dir), "--teacher", str(tiny_model_dir), "--out", str(out), "--quiet"]}
    code = main([*argv[command], "--device", "cuda"])
    _refused(capsys, code, "CUDA was asked for (--device cuda) but this torch has no CUDA device; use --device cpu "
             "or auto.", out)


def test_float16_on_a_cpu_without_half_matmul_is_refused(monkeypatch, refuse_loading, tiny_model_dir, text_file,
                                                         tmp_path, capsys):
    import lmshrink.devices

    monkeypatch.setattr(lmshrink.devices, "_matmul_fails",
                        lambda device, dtype: "\"addmm_impl_cpu_\" not implemented for 'Half'")
    out = tmp_path / "out"
    code = main(_prune_argv(tiny_model_dir, text_file, out, "--device", "cpu", "--dtype", "float16"))
    _refused(capsys, code, "This torch cannot multiply float16 matrices on the CPU (\"addmm_impl_cpu_\" not "
             "implemented for 'Half'); use --dtype bfloat16 or float32.", out)


def test_running_out_of_memory_while_measuring_names_what_to_lower(tiny_model_dir, text_file, tmp_path, capsys,
                                                                   monkeypatch):
    import lmshrink.objectives.fisher as fisher

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fisher, "gate_gradients", oom)
    monkeypatch.setenv("LMSHRINK_CACHE", str(tmp_path / "cache"))  # measured, not read from another test's entry
    out = tmp_path / "out"
    code = main(_prune_argv(tiny_model_dir, text_file, out))
    _refused(capsys, code, "Ran out of memory while measuring on cpu (CUDA out of memory. Tried to allocate 2.00 "
             "GiB); lower --seq-len, --samples or --validation.", out)


# --- saving -----------------------------------------------------------------------------------------------------
def test_source_dtype(tiny_model_dir, tmp_path):
    assert source_dtype("smollm2") == "bfloat16"
    assert source_dtype(str(tmp_path / "model.gguf")) == "bfloat16"
    assert source_dtype(str(tiny_model_dir)) == "float32"
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    assert source_dtype(str(tmp_path)) == "float16"
    assert source_dtype(None) is None


@pytest.mark.parametrize("dtype, save_dtype, saved", [("bfloat16", "auto", "float32"),
                                                      ("float32", "bfloat16", "bfloat16")])
def test_the_saved_model_follows_save_dtype_and_reloads(dtype, save_dtype, saved, tiny_model_dir, text_file,
                                                        tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    assert main(_prune_argv(tiny_model_dir, text_file, out, "--dtype", dtype, "--save-dtype", save_dtype)) == 0
    report = json.loads((out / "report.json").read_text())
    assert {k: report["settings"][k] for k in ("device", "dtype", "device_map", "save_dtype")} == \
        {"device": "cpu", "dtype": dtype, "device_map": None, "save_dtype": saved}
    reloaded = AutoModelForCausalLM.from_pretrained(out / "model", dtype="auto")
    assert reloaded.dtype == getattr(torch, saved)
    assert reloaded.config.num_hidden_layers == 4
    ids = _calibration(1, 16).input_ids
    with torch.no_grad():
        assert torch.isfinite(reloaded(input_ids=ids).logits).all()


def test_cast_saved_rewrites_every_shard_and_the_index(tmp_path):
    from transformers import AutoModelForCausalLM
    from tiny import tiny_llama

    model = tiny_llama(2)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    cast_saved(tmp_path, "bfloat16")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    assert reloaded.dtype == torch.bfloat16
    assert index["metadata"]["total_size"] == sum(p.numel() * 2 for p in model.state_dict().values())
    expected = model.model.embed_tokens.weight.to(torch.bfloat16)
    assert torch.equal(reloaded.model.embed_tokens.weight, expected)


def test_svd_saves_in_the_save_dtype(tiny_model_dir, text_file, tmp_path):
    from lmshrink.compress.io import load_compressed
    from lmshrink.pipeline.svd import svd_compress

    result = svd_compress(str(tiny_model_dir), ratio=0.7, solver="uniform", data=[str(text_file)], samples=2,
                          seq_len=16, evaluate=False, progress=False, out=tmp_path / "out", save_dtype="bfloat16")
    assert result.report["settings"]["save_dtype"] == "bfloat16"
    assert result.report["verify"]["max_abs_logit_diff"] < 1.0
    assert load_compressed(result.out / "model").dtype == torch.bfloat16
