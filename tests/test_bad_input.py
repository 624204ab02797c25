"""Every bad `lmshrink prune` input gives one sentence, exit code 2 and no output directory.

Inputs that need no model are refused before it loads (``load_model`` is replaced by a function that fails the
test); the others (removing every block, NaN weights) right after it loads, before anything is measured.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

import lmshrink.models
from lmshrink.cli import main
from lmshrink.core import LmshrinkError, Option

pytestmark = pytest.mark.usefixtures("one_thread")


def _no_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (d / name).unlink(missing_ok=True)


def _truncate(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _garbage(d: Path) -> None:
    (d / "model.safetensors").write_bytes(b"\x07" * 4096)


def _empty(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


# (flags, what the message says, a change to a copy of the tiny model directory or None)
BEFORE_LOADING = {
    "samples 0": (["--samples", "0"], "--samples must be at least 1, not 0.", None),
    "samples negative": (["--samples", "-3"], "--samples must be at least 1, not -3.", None),
    "seq-len 1": (["--seq-len", "1"], "--seq-len must be at least 2 (a sample needs a token to predict from and one "
                  "to predict), not 1.", None),
    "eval-tokens 0": (["--eval-tokens", "0"], "--eval-tokens must be at least 2 (perplexity needs a token to "
                      "predict from and one to predict; --no-eval skips it), not 0.", None),
    "rerank -2": (["--rerank", "-2"], "--rerank must be at least 0 (0: no re-ranking), not -2.", None),
    "top-k 0": (["--top-k", "0"], "--top-k must be at least 1, not 0.", None),
    "eval-limit 0": (["--eval-limit", "0"], "--eval-limit must be a count or a fraction above 0, not 0.0.", None),
    "unknown solver option": (["--solver", "anneal", "--option", "num_read=4"], "Solver 'anneal' has no option 'num_read'. Did you mean "
                              "'num_reads'? Valid options: {anneal_options}.", None),
    "solver option with a method": (["--method", "sleb", "--option", "num_reads=4"], "--option and "
                                    "--objective-option set the solver and the objective, which --method replaces; give the "
                                    "method's options with --method-option.",
                                    None),
    "nonexistent model dir": (["--model", "{tmp}/nowhere/model"], "No model at {tmp}/nowhere/model: no such file or "
                              "directory.", None),
    "empty model dir": ([], "--model {model} is an empty directory, not a model (config.json, weights, tokenizer).",
                        _empty),
    "no config": ([], "--model {model} has no config.json: not a Hugging Face model directory.", _no_config),
    "truncated safetensors": ([], "{model}/model.safetensors is truncated or corrupt (incomplete metadata, file not "
                              "fully covered); copy or download it again.", _truncate),
    "garbage safetensors": ([], "{model}/model.safetensors is truncated or corrupt (header too large); copy or "
                            "download it again.", _garbage),
    "no tokenizer": ([], "--model {model} has no tokenizer (tokenizer.json or tokenizer_config.json); save the "
                     "tokenizer into the model directory (tokenizer.save_pretrained).", _no_tokenizer),
    "binary data": (["--data", "{tmp}/data.bin"], "--data {tmp}/data.bin is not UTF-8 text (byte 0x89 at offset "
                    "0); give .txt or .jsonl text files.", None),
    "NUL bytes in data": (["--data", "{tmp}/zeros.txt"], "--data {tmp}/zeros.txt holds NUL bytes: a binary file, "
                          "not text; give .txt or .jsonl text files.", None),
    "unknown heal step": (["--heal", "linaer"], "Unknown healing step 'linaer' in --heal. Did you mean 'linear'? "
                          "Steps: linear, kd (comma-separated, or none).", None),
    "unknown heal option": (["--heal", "kd", "--heal-option", "step=3"], "Healing has no option 'step'. Did you "
                            "mean 'steps'? Valid options: {heal_options}.", None),
    "heal option of another step": (["--heal", "linear", "--heal-option", "steps=3"], "--heal-option steps belongs "
                                    "to KD healing, which --heal does not name.", None),
    "kd steps 0": (["--heal", "kd", "--heal-option", "steps=0"], "KD healing: steps must be a whole number ≥ 1.",
                   None),
    "validation 1": (["--rerank", "3", "--validation", "1"], "--validation must be at least 2 (a standard error "
                     "needs two windows), not 1.", None),
    "unknown candidate source": (["--candidates", "slab"], "Unknown candidate source 'slab'. Did you mean 'sleb'? "
                                 "Sources: {sources}.", None),
    "cuda without CUDA": (["--device", "cuda"], "CUDA was asked for (--device cuda) but this torch has no CUDA "
                          "device; use --device cpu or auto.", None),
    "unknown device": (["--device", "gpu"], "Unknown --device 'gpu'. Did you mean 'cpu'? Devices: auto, cpu, cuda, "
                       "cuda:N.", None),
    "unknown dtype": (["--dtype", "bf16"], "Unknown --dtype 'bf16'. Did you mean 'bfloat16'? Dtypes: auto, "
                      "bfloat16, float16, float32.", None),
    "unknown save dtype": (["--save-dtype", "fp32"], "Unknown --save-dtype 'fp32'. Did you mean 'float32'? Dtypes: "
                           "auto, bfloat16, float16, float32.", None),
    "device map without a GPU": (["--device-map", "auto"], "--device-map auto spreads the model over the GPUs, but "
                                 "this torch has no CUDA device, which leaves nothing on any GPU; drop --device-map.",
                                 None),
    "non-empty out": (["--out", "{tmp}/full"], "--out {tmp}/full already holds files (old.txt); pass --overwrite to "
                      "replace it, or choose another directory.", None),
}
SOLVER_OPTION_VALUES = {  # checked by the solver contract's typed options, called before the model loads
    ("anneal", "num_reads=0"): "Solver 'anneal' option num_reads must be an integer ≥ 1, not '0'.",
    ("anneal", "num_reads=none"): "Solver 'anneal' option num_reads must be an integer ≥ 1, not 'none'.",
    ("exact", "max_states=none"): "Solver 'exact' option max_states must be an integer ≥ 1, not 'none'.",
}
#: whether this tree has the typed solver options (their range and None checks)
TYPED_SOLVER_OPTIONS = "minimum" in {f.name for f in dataclasses.fields(Option)}


@pytest.fixture
def bad_inputs(tmp_path, tiny_model_dir, text_file, monkeypatch):
    """A folder with the bad files, and load_model replaced so that loading fails the test."""
    (tmp_path / "data.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (tmp_path / "zeros.txt").write_bytes(b"\x00" * 1024)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("an earlier run")

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(lmshrink.models, "load_model", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CUDA rows read the same on a GPU machine
    return tmp_path


def _prune(argv: list[str], tiny_model_dir: Path, text_file: Path, out: Path) -> list[str]:
    base = ["prune", "--model", str(tiny_model_dir), "--data", str(text_file), "--samples", "4", "--seq-len", "16",
            "--eval-tokens", "64", "--solver", "exact", "--quiet", "--out", str(out)]
    return base + argv  # later flags win


def _check_refused(capsys, code: int, message: str, out: Path) -> None:
    err = capsys.readouterr().err
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("lmshrink")] == [f"lmshrink: error: {message}"]
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("case", list(BEFORE_LOADING))
def test_bad_input_is_refused_before_loading(case, bad_inputs, tiny_model_dir, text_file, capsys):
    flags, message, damage = BEFORE_LOADING[case]
    tmp = bad_inputs
    model = tiny_model_dir
    if damage is not None:
        model = tmp / "model"
        shutil.copytree(tiny_model_dir, model)
        damage(model)
    from lmshrink.plugins import get_solver

    from lmshrink.pipeline.config import PruneConfig
    from lmshrink.plugins import registry
    from lmshrink.portfolio import PRESETS

    sources = sorted(set(registry("objective").names()) | set(registry("method").names()) | set(PRESETS))
    fill = {"tmp": str(tmp), "model": str(model), "anneal_options": ", ".join(sorted(get_solver("anneal").options)),
            "heal_options": ", ".join(sorted(PruneConfig.heal_option_specs())), "sources": ", ".join(sources)}
    argv = [f.format(**fill) for f in flags]
    out = tmp / "out"
    code = main(_prune(argv, model, text_file, out))
    if case == "non-empty out":
        out = tmp / "full"
        _check_refused(capsys, code, message.format(**fill), tmp / "absent")
        assert [p.name for p in out.iterdir()] == ["old.txt"]
        return
    _check_refused(capsys, code, message.format(**fill), out)


@pytest.mark.skipif(not TYPED_SOLVER_OPTIONS, reason="needs the typed solver options of the solver contract")
@pytest.mark.parametrize("solver, option", list(SOLVER_OPTION_VALUES))
def test_bad_solver_option_values_are_refused_before_loading(solver, option, bad_inputs, tiny_model_dir, text_file,
                                                             capsys):
    out = bad_inputs / "out"
    code = main(_prune(["--solver", solver, "--option", option], tiny_model_dir, text_file, out))
    _check_refused(capsys, code, SOLVER_OPTION_VALUES[solver, option], out)


def test_unknown_lm_eval_task_is_refused_before_loading(bad_inputs, tiny_model_dir, text_file, capsys):
    pytest.importorskip("lm_eval")
    out = bad_inputs / "out"
    code = main(_prune(["--eval-tasks", "lmshrink_pydoc_clze"], tiny_model_dir, text_file, out))
    _check_refused(capsys, code, "Unknown lm-eval task 'lmshrink_pydoc_clze'. Did you mean 'lmshrink_pydoc_cloze'? "
                   "lmshrink's offline task is 'lmshrink_pydoc_cloze'; lm-eval's own tasks (hellaswag, arc_easy, mmlu, "
                   "...) are listed by `lm-eval ls tasks`.", out)


def test_removing_every_block_is_refused_before_measuring(tiny_model_dir, text_file, tmp_path, capsys, monkeypatch):
    import lmshrink.objectives.fisher as fisher

    monkeypatch.setattr(fisher, "gate_gradients", lambda *a, **k: pytest.fail("measured before refusing"))
    out = tmp_path / "out"
    code = main(_prune(["--remove", "6"], tiny_model_dir, text_file, out))
    _check_refused(capsys, code, "--remove 6 would remove all 6 blocks of the model (layer); remove at most 5.", out)
    code = main(_prune(["--remove", "12", "--granularity", "sublayer"], tiny_model_dir, text_file, out))
    _check_refused(capsys, code, "--remove 12 would remove all 12 blocks of the model (sublayer); remove at most 11.",
                   out)
    code = main(_prune(["--remove", "30"], tiny_model_dir, text_file, out))
    _check_refused(capsys, code, "--remove asks for 30 blocks, but the model has only 6.", out)


@pytest.fixture(scope="module")
def nan_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model with NaN in one row of block 2's down_proj."""
    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("nan-model")
    shutil.copytree(tiny_model_dir, d, dirs_exist_ok=True)
    weights = load_file(d / "model.safetensors")
    weights["model.layers.2.mlp.down_proj.weight"][3] = float("nan")
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    return d


@pytest.mark.parametrize("how", [["--objective", "fisher"], ["--objective", "pairs"],
                                 ["--objective", "block-influence"], ["--objective", "norm-ratio"],
                                 ["--method", "sleb"], ["--method", "angular"]], ids=lambda h: h[1])
def test_nan_weights_are_named_and_nothing_is_written(how, nan_model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(_prune(["--remove", "2", *how], nan_model_dir, text_file, out))
    _check_refused(capsys, code, "The model would produce non-finite values: its weights hold 64 NaN or infinite "
                   "value(s) in model.layers.2.mlp.down_proj.weight (block 2, model.layers.2).", out)


@pytest.mark.parametrize("objective", ["fisher", "pairs", "block-influence", "norm-ratio"])
def test_objectives_refuse_non_finite_measurements_and_say_where(objective):
    """Called directly (no pipeline, no weight check), each measurement names the block where NaN starts."""
    from lmshrink.data import Calibration
    from lmshrink.plugins import find_adapter, get_objective
    from tiny import tiny_llama

    model = tiny_llama(4)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight[0, 0] = float("nan")
    ids = torch.randint(1, 320, (2, 16), generator=torch.Generator().manual_seed(0))
    calibration = Calibration(ids, "random tokens", {"samples": 2, "seq_len": 16})
    with pytest.raises(LmshrinkError, match=r"^The model produced non-finite values while measuring .*, "
                       r"first in the output of block 1 \(model\.layers\.1\)\.$"):
        get_objective(objective).build(model, find_adapter(model), calibration, progress=False)


def test_sleb_refuses_non_finite_losses_and_says_where():
    from lmshrink.baselines import get_method
    from lmshrink.data import Calibration
    from lmshrink.plugins import find_adapter
    from tiny import tiny_llama

    model = tiny_llama(4)
    with torch.no_grad():
        model.model.embed_tokens.weight[:] = float("inf")
    ids = torch.randint(1, 320, (2, 16), generator=torch.Generator().manual_seed(0))
    calibration = Calibration(ids, "random tokens", {"samples": 2, "seq_len": 16})
    with pytest.raises(LmshrinkError, match=r"non-finite values while measuring the calibration loss "
                       r"without blocks \[0\] .*first in the output of the input embeddings\.$"):
        get_method("sleb").select(model, find_adapter(model), calibration, 1)



def test_a_model_in_lmshrink_format_without_tokenizer_is_refused(tmp_path, text_file, capsys):
    """lmshrink's own format is validated while the model is built; a missing tokenizer is said right after."""
    from lmshrink.compress.io import save_compressed
    from lmshrink.plugins import find_adapter
    from tiny import tiny_llama

    model = tiny_llama(4)
    adapter = find_adapter(model)
    assert adapter.save_format(model, [0], "sublayer") == "lmshrink"
    path = save_compressed(adapter.remove(model, [0], "sublayer"), tmp_path / "model")
    out = tmp_path / "out"
    code = main(_prune([], path, text_file, out))
    _check_refused(capsys, code, f"--model {path} has no tokenizer (tokenizer.json or tokenizer_config.json); save "
                   "the tokenizer into the model directory (tokenizer.save_pretrained).", out)
