"""lmshrink's own model format read as untrusted input: every transform in ``lmshrink_config.json`` is checked
against the model its config builds before anything real is built; one tampered file per row below."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmshrink
from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.compress import io
from lmshrink.compress.io import CONFIG_FILE, record_transform, save_compressed, set_transform, transforms_of
from lmshrink.compress.pivga import PivGaLinear
from lmshrink.compress.svd import LowRankLinear
from lmshrink.core import LmshrinkError
from lmshrink.testing import logits, sample_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

UP = "model.layers.0.mlp.up_proj"  # 32 → 64
DOWN = "model.layers.2.mlp.down_proj"  # 64 → 32


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama with three transforms: layer 1's attention removed, a rank-4 ``low_rank`` up_proj in layer 0 and
    a rank-5 ``pivga`` down_proj in layer 2; saved, with its logits."""
    model = tiny_llama()
    LlamaAdapter().remove(model, [2], "sublayer")
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(64, 4, generator=g) / 4, torch.randn(4, 32, generator=g) / 4
    model.model.layers[0].mlp.up_proj = LowRankLinear.from_factors(A, B)
    record_transform(model, {"type": "low_rank", "layers": {UP: 4}})
    A, B = torch.randn(32, 5, generator=g) / 4, torch.randn(5, 64, generator=g) / 4
    model.model.layers[2].mlp.down_proj = PivGaLinear.from_factors(A, B, torch.linalg.qr(A).Q, None)
    record_transform(model, {"type": "pivga", "layers": {DOWN: 5}})
    path = tmp_path_factory.mktemp("saved") / "model"
    save_compressed(model, path)
    ids = sample_ids(model)
    return path, ids, logits(model, ids)


def test_the_untampered_model_loads_with_identical_logits(saved):
    path, ids, expected = saved
    model = lmshrink.load_compressed(path)
    assert [t["type"] for t in transforms_of(model)] == ["remove_sublayers", "low_rank", "pivga"]
    assert torch.equal(logits(model, ids), expected)


def _set(key, value):
    def edit(meta):
        meta[key] = value

    return edit


def _spec(k, key, value):
    def edit(meta):
        meta["transforms"][k][key] = value

    return edit


def _removed(value):
    return _spec(0, "removed", value)


def _rank(path, value, k=1):
    return _spec(k, "layers", {path: value})


TAMPERED = [
    # the file itself
    ("not json", "{", "is not valid JSON"),
    ("a list", [], "holds a JSON list, not an object"),
    ("format", _set("format", "lmshrink.compressed/2"), "has format 'lmshrink.compressed/2', expected"),
    ("no transforms", _set("transforms", None), "has no list of 'transforms'"),
    ("transform not an object", _set("transforms", ["low_rank"]), "transform 0 is not an object with a string 'type'"),
    ("unknown type", _spec(0, "type", "run_code"), "Transform 'run_code' is unknown to this lmshrink"),
    # remove_sublayers
    ("dunder path", _spec(0, "layers", "__class__.__init__"), "'__class__.__init__' is not a module path"),
    ("private path", _spec(0, "layers", "model._modules"), "'model._modules' is not a module path"),
    ("missing path", _spec(0, "layers", "model.decoder.layers"), "is not a module of the LlamaForCausalLM"),
    ("not a layer list", _spec(0, "layers", "model.embed_tokens"),
     "model.embed_tokens (Embedding) is not a list of decoder layers"),
    ("layer out of range", _removed([[7, "self_attn"]]), "A layer index in 'removed' is 7, outside 0..3"),
    ("negative layer", _removed([[-1, "self_attn"]]), "outside 0..3"),
    ("string layer", _removed([["1", "self_attn"]]), "is '1', not an integer"),
    ("float layer", _removed([[1.0, "self_attn"]]), "is 1.0, not an integer"),
    ("unknown branch", _removed([[1, "__dict__"]]), "Branch '__dict__' of layer 1 is not one of ['self_attn', 'mlp']"),
    ("not a pair", _removed([[1]]), "Entry [1] of 'removed' is not a [layer, branch] pair"),
    ("removed not a list", _removed({"1": "self_attn"}), "'removed' is a dict, not a list"),
    ("listed twice", _removed([[1, "self_attn"], [1, "self_attn"]]), "Branch self_attn of layer 1 is listed twice"),
    ("unknown key", _spec(0, "eval", "print(1)"), "has an unknown key 'eval'"),
    ("missing key", lambda meta: meta["transforms"][0].pop("removed"), "has no 'removed'"),
    ("another branch", _removed([[2, "self_attn"]]),
     "holds model.layers.2.self_attn.k_proj.weight, which the model described by its configs does not have"),
    # low_rank and pivga
    ("huge rank", _rank(UP, 10**9), "The rank of model.layers.0.mlp.up_proj is 1000000000, outside 0..32"),
    ("negative rank", _rank(UP, -1), "is -1, outside 0..32"),
    ("boolean rank", _rank(UP, True), "is True, not an integer"),
    ("string rank", _rank(UP, "4"), "is '4', not an integer"),
    ("not a linear layer", _rank("model.layers.0.mlp", 4), "model.layers.0.mlp (LlamaMLP) is not a linear layer"),
    ("a parameter", _rank("lm_head.weight", 4), "'lm_head.weight' is not a module of the LlamaForCausalLM"),
    ("layers not an object", _spec(1, "layers", [UP, 4]), "'layers' is a list, not an object"),
    ("factored twice", _rank(UP, 4, k=2), "model.layers.0.mlp.up_proj (LowRankLinear) is not a linear layer"),
    ("rank unlike the weights", _rank(UP, 3),
     "holds model.layers.0.mlp.up_proj.left of shape [64, 4], but the model described by its configs expects [64, 3]"),
]


@pytest.mark.parametrize("edit,message", [row[1:] for row in TAMPERED], ids=[row[0] for row in TAMPERED])
def test_a_tampered_lmshrink_config_is_refused_in_one_sentence_before_anything_is_built(
    saved, tmp_path, monkeypatch, edit, message
):
    path = tmp_path / "model"
    shutil.copytree(saved[0], path)
    file = path / CONFIG_FILE
    if isinstance(edit, str):
        file.write_text(edit)
    elif callable(edit):
        meta = json.loads(file.read_text())
        edit(meta)
        file.write_text(json.dumps(meta))
    else:
        file.write_text(json.dumps(edit))
    built = []
    stock = io._stock_model
    monkeypatch.setattr(io, "_stock_model", lambda config, meta=False: built.append(meta) or stock(config, meta))
    with pytest.raises(LmshrinkError) as info:
        lmshrink.load_compressed(path)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and str(path) in text
    assert True not in [not m for m in built], "a real model was built before the file was refused"


def test_every_refusal_of_a_transform_names_it(saved, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(saved[0], path)
    meta = json.loads((path / CONFIG_FILE).read_text())
    meta["transforms"][2]["layers"] = {DOWN: 33}
    (path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(LmshrinkError, match=r"lmshrink_config\.json, transform 2 \(pivga\): The rank of "
                                            r"model\.layers\.2\.mlp\.down_proj is 33, outside 0\.\.32\."):
        lmshrink.load_compressed(path)


def test_the_command_line_says_it_in_one_line(saved, tmp_path, capsys):
    from lmshrink.cli import main

    path = tmp_path / "model"
    shutil.copytree(saved[0], path)
    meta = json.loads((path / CONFIG_FILE).read_text())
    meta["transforms"][1]["layers"] = {UP: 10**9}
    (path / CONFIG_FILE).write_text(json.dumps(meta))
    text = tmp_path / "docs.txt"
    text.write_text("Some text to calibrate on. " * 200)
    argv = ["prune", "--model", str(path), "--data", str(text), "--samples", "4", "--seq-len", "16", "--remove", "1",
            "--no-eval", "--quiet", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmshrink: error: ") and "outside 0..32" in err and len(err.splitlines()) == 1


def test_set_transform_keeps_the_record_in_place():
    model = torch.nn.Linear(2, 2)
    record_transform(model, {"type": "a"})
    record_transform(model, {"type": "b", "v": 1})
    record_transform(model, {"type": "c"})
    set_transform(model, "b", {"type": "b", "v": 2})
    assert transforms_of(model) == [{"type": "a"}, {"type": "b", "v": 2}, {"type": "c"}]
    set_transform(model, "b", None)
    set_transform(model, "d", {"type": "d"})
    assert transforms_of(model) == [{"type": "a"}, {"type": "c"}, {"type": "d"}]
    with pytest.raises(LmshrinkError, match="must have type 'a'"):
        set_transform(model, "a", {"type": "z"})
    io.clear_transforms(model)
    assert transforms_of(model) == []


def test_adapter_transforms_are_found_through_the_plugin_registry(monkeypatch):
    # nothing registers remove_sublayers on import: the llama adapter declares it in transforms()
    from lmshrink.adapters.sublayer import SUBLAYER_TRANSFORM

    monkeypatch.delitem(io._TRANSFORMS, "remove_sublayers", raising=False)
    assert io.transform_type("remove_sublayers") is SUBLAYER_TRANSFORM
    assert LlamaAdapter().transforms() == {"remove_sublayers": SUBLAYER_TRANSFORM}
    assert {"low_rank", "pivga"} <= set(io._TRANSFORMS)
    with pytest.raises(LmshrinkError, match=r"'nope' is unknown .*'low_rank', 'pivga', 'remove_sublayers'"):
        io.transform_type("nope")
