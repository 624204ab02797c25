"""GGUF export of pruned Llama models: the file reloads through transformers' GGUF loader with the logits of the
safetensors copy (exactly in f32; in f16 and q8_0 equal to the safetensors weights quantized independently by
numpy / gguf.quants), the tokenizer survives, and what GGUF cannot express is refused before anything is written."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.cli import main
from lmshrink.compress.gguf_export import export_gguf, export_gguf_dir, interleave_rotary_rows
from lmshrink.compress.io import save_compressed
from lmshrink.core import LmshrinkError
from lmshrink.evaluate.perplexity import perplexity
from tests.tiny import tiny_llama, tiny_text, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

REMOVED = [1, 4]
#: the layers removed from the embedded default (an explicit set: nothing is measured)
DEFAULT_REMOVED = [3, 8, 13, 17, 21, 25]


def _gguf_model(folder, name):
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """A 6-layer tiny Llama with layers 1 and 4 removed, saved as safetensors with its tokenizer."""
    tok = tiny_tokenizer()
    model = LlamaAdapter().remove(tiny_llama(6), REMOVED, "layer")
    folder = tmp_path_factory.mktemp("gguf") / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(tiny_text()[:3000], return_tensors="pt").input_ids[:, :384]
    return folder, saved, tok, ids


def _quantized_copy(model, encode):
    """``model`` with every matrix but the norms replaced by ``encode(matrix)`` (quantized and read back)."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            if p.dim() == 2:
                p.copy_(torch.from_numpy(encode(p.detach().numpy().astype(np.float32))))
    return out


def _q8_0(w):
    import gguf

    t = gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.dequantize(gguf.quants.quantize(w, t), t).reshape(w.shape)


@pytest.mark.parametrize("kind, encode, ppl_tol", [
    ("f32", None, 0.0),
    ("f16", lambda w: w.astype(np.float16).astype(np.float32), 0.01),
    ("q8_0", _q8_0, 0.01),
])
def test_gguf_reloads_with_the_logits_of_the_safetensors_copy(pruned, tmp_path, kind, encode, ppl_tol):
    folder, saved, _tok, ids = pruned
    out = export_gguf_dir(folder, tmp_path / f"m-{kind}.gguf", type=kind)
    loaded = _gguf_model(tmp_path, out.name)
    assert loaded.config.num_hidden_layers == 4
    got = _logits(loaded, ids[:, :64])
    if encode is None:
        torch.testing.assert_close(got, _logits(saved, ids[:, :64]), rtol=0, atol=1e-5)
    else:  # equal to the same quantization applied to the safetensors weights by numpy / gguf.quants directly
        torch.testing.assert_close(got, _logits(_quantized_copy(saved, encode), ids[:, :64]), rtol=0, atol=1e-4)
    ppl_gguf = perplexity(loaded, ids, window=128, progress=False)["perplexity"]
    ppl_saved = perplexity(saved, ids, window=128, progress=False)["perplexity"]
    assert abs(ppl_gguf / ppl_saved - 1) <= max(ppl_tol, 1e-6)


def test_the_gguf_tokenizer_encodes_like_the_source(pruned, tmp_path):
    from transformers import AutoTokenizer

    folder, _saved, tok, _ids = pruned
    export_gguf_dir(folder, tmp_path / "m.gguf", type="f32")
    loaded = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    text = tiny_text()[5000:5600]
    assert loaded(text).input_ids == tok(text).input_ids


def test_metadata_says_the_new_layer_count_and_names_follow_llama_cpp(pruned, tmp_path):
    import gguf

    folder, saved, _tok, _ids = pruned
    out = export_gguf_dir(folder, tmp_path / "m.gguf", type="bf16")
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["llama.block_count"].contents() == 4
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"  # the tiny tokenizer splits as GPT-2 does
    names = {t.name: t.tensor_type.name for t in reader.tensors}
    assert names["blk.3.attn_q.weight"] == "BF16" and names["blk.3.attn_norm.weight"] == "F32"
    assert "blk.4.attn_q.weight" not in names and names["output.weight"] == "BF16"


def test_rotary_interleave_pairs_the_halves_of_each_head():
    # 2 heads of dimension 4: rows (h0: a0 a1 | b0 b1), (h1: c0 c1 | d0 d1) → (a0 b0 a1 b1), (c0 d0 c1 d1)
    w = np.arange(8, dtype=np.float32)[:, None]
    assert interleave_rotary_rows(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_auto_keeps_the_saved_dtype(tmp_path):
    import gguf

    model = tiny_llama(2).to(torch.bfloat16)
    out = export_gguf(model, tmp_path / "m.gguf", tiny_tokenizer())
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.ffn_up.weight"] == "BF16" and types["output_norm.weight"] == "F32"


@pytest.mark.parametrize("what", ["sublayer", "svd", "architecture"])
def test_what_gguf_cannot_express_is_refused_and_nothing_written(tmp_path, what):
    tok = tiny_tokenizer()
    folder = tmp_path / "model"
    if what == "sublayer":
        model = LlamaAdapter().remove(tiny_llama(4), [2], "sublayer")  # layer 1 loses its attention
        save_compressed(model, folder, tokenizer=tok)
    elif what == "svd":
        from lmshrink.compress.io import record_transform
        from lmshrink.compress.svd import LowRankLinear

        model = tiny_llama(2)
        model.model.layers[0].mlp.up_proj = LowRankLinear.from_factors(torch.randn(64, 4), torch.randn(4, 32))
        record_transform(model, {"type": "low_rank", "layers": {"model.layers.0.mlp.up_proj": 4}})
        save_compressed(model, folder, tokenizer=tok)
    else:
        from transformers import MistralConfig, MistralForCausalLM

        config = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=320)
        MistralForCausalLM(config).save_pretrained(folder)
        tok.save_pretrained(folder)
    out = tmp_path / "m.gguf"
    with pytest.raises(LmshrinkError, match="GGUF"):
        export_gguf_dir(folder, out)
    assert main(["export", str(folder), "--out", str(out), "--quiet"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_export_command_writes_the_file(pruned, tmp_path, capsys):
    import gguf

    folder, *_ = pruned
    out = tmp_path / "cli.gguf"
    assert main(["export", str(folder), "--format", "gguf", "--type", "q8_0", "--out", str(out), "--quiet"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert gguf.GGUFReader(str(out)).fields["llama.block_count"].contents() == 4
    assert main(["export", str(folder), "--type", "q4_k", "--out", str(tmp_path / "x.gguf")]) == 2
    assert main(["export", str(folder), "--out", str(out)]) == 2  # exists, no --overwrite


def test_prune_refuses_gguf_at_sublayer_granularity_before_running(tmp_path):
    assert main(["prune", "--granularity", "sublayer", "--save-format", "gguf", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def default_pruned(tmp_path_factory):
    """The embedded default with 6 layers removed (an explicit set, no measuring), saved, and its GGUF file."""
    from lmshrink.compress.gguf_export import source_gguf_of
    from lmshrink.models import load_model
    from lmshrink.pipeline.outputs import write_gguf

    try:
        loaded = load_model(None)
    except LmshrinkError as exc:
        pytest.skip(str(exc))
    model = LlamaAdapter().remove(loaded.model, DEFAULT_REMOVED, "layer")
    out = tmp_path_factory.mktemp("default")
    model.save_pretrained(out / "model")
    loaded.tokenizer.save_pretrained(out / "model")
    path = write_gguf(out, model, loaded.tokenizer, None, DEFAULT_REMOVED, 30, progress=False)
    return model, loaded.tokenizer, path, source_gguf_of(None)


def test_default_model_pruned_at_6_is_the_source_gguf_less_six_blocks_byte_for_byte(default_pruned):
    """Every tensor of the pruned file, in the source's type (Q8_0 embedding, Q4_1 matrices, F32 norms), holds the
    bytes of the source's tensor of the block kept: re-quantizing de-quantized Q4_1/Q8_0 blocks and re-ordering
    the rotary rows both land exactly where the source was."""
    import gguf

    _model, _tok, path, source = default_pruned
    reader, src = gguf.GGUFReader(str(path)), gguf.GGUFReader(str(source))
    assert reader.fields["llama.block_count"].contents() == 24
    assert reader.fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert reader.fields["tokenizer.ggml.tokens"].contents() == src.fields["tokenizer.ggml.tokens"].contents()
    kept = [i for i in range(30) if i not in DEFAULT_REMOVED]
    src_tensors = {t.name: t for t in src.tensors}
    for t in reader.tensors:
        name = t.name
        if name.startswith("blk."):
            _, block, rest = name.split(".", 2)
            name = f"blk.{kept[int(block)]}.{rest}"
        original = src_tensors[name]
        assert t.tensor_type == original.tensor_type, t.name
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(original.data).view(np.uint8)), t.name
    assert len(reader.tensors) == len(src.tensors) - 6 * 9  # 9 tensors a block
    assert path.stat().st_size < 0.9 * source.stat().st_size  # 24 of 30 blocks; the Q8_0 embedding stays


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_runs_the_file_like_transformers(default_pruned):
    """llama.cpp (llama-cpp-python) reads the pruned file: same tokens, and a perplexity within 3% of what
    transformers computes from the same file (llama.cpp multiplies Q4_1 weights by Q8-quantized activations)."""
    from llama_cpp import Llama

    _model, tok, path, _source = default_pruned
    text = tiny_text()[:3000]
    ids = tok(text).input_ids[:128]
    llm = Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False)[:128] == ids
    llm.eval(ids)
    scores = torch.as_tensor(np.asarray(llm.scores[: len(ids)]), dtype=torch.float64)
    nll_cpp = -torch.log_softmax(scores, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].mean()
    loaded = _gguf_model(path.parent, path.name)
    ppl = perplexity(loaded, torch.tensor([ids]), window=128, progress=False)["perplexity"]
    assert abs(float(torch.exp(nll_cpp)) / ppl - 1) < 0.03


def test_prune_with_save_format_gguf_writes_the_file_beside_the_model(tiny_model_dir, text_file, tmp_path):
    import gguf

    out = tmp_path / "run"
    assert main(["prune", "--model", str(tiny_model_dir), "--data", str(text_file), "--remove", "2", "--method",
                 "angular", "--samples", "4", "--seq-len", "16", "--validation", "0", "--no-eval", "--quiet",
                 "--save-format", "gguf", "--gguf-type", "f32", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model", "model.gguf", "report.json", "report.md"]
    removed = [b["index"] for b in json.loads((out / "report.json").read_text())["removed"]]
    assert gguf.GGUFReader(str(out / "model.gguf")).fields["llama.block_count"].contents() == 6 - len(removed)
    saved = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    ids = torch.randint(3, 320, (1, 24), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(_gguf_model(out, "model.gguf"), ids), _logits(saved, ids), rtol=0, atol=1e-5)


def test_export_of_a_prune_run_finds_its_source_gguf_and_kept_layers(pruned, tmp_path):
    import gguf

    from lmshrink.pipeline.outputs import gguf_source_of_run

    folder, *_ = pruned
    source = export_gguf_dir(folder, tmp_path / "source.gguf", type="f16")  # stands in for the run's source
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "report.json").write_text(json.dumps({"model_source": str(source), "granularity": "layer",
                                                 "num_blocks": 6, "removed": [{"index": 1}, {"index": 4}]}))
    assert gguf_source_of_run(run / "model") == (source, [0, 2, 3, 5])
    assert gguf_source_of_run(folder) == (None, None)  # no report beside it
    for file in folder.iterdir():
        (run / "model" / file.name).write_bytes(file.read_bytes())
    assert main(["export", str(run / "model"), "--out", str(tmp_path / "again.gguf"), "--quiet"]) == 0
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "again.gguf")).tensors}
    assert types["blk.0.ffn_up.weight"] == "F16"  # the source's type, though model/ holds float32
