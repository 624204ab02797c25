"""Models saved in lmshrink's format (sub-layer removal, low-rank and PivGa layers) load in plain transformers with
``trust_remote_code=True``, in a process where lmshrink cannot be imported, with the logits and greedy tokens
of :func:`lmshrink.load_compressed`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import lmshrink
from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.compress.io import save_compressed, transforms_of
from lmshrink.compress.remote import CLASS_NAME, MODELING_FILE
from lmshrink.testing import tiny_qwen3
from tests.tiny import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

#: run in a child process: lmshrink is made unimportable before anything else
CHILD = textwrap.dedent("""
    import sys
    sys.modules["lmshrink"] = None  # `import lmshrink` raises ImportError from here on
    import json
    import torch
    from transformers import AutoModelForCausalLM
    try:
        import lmshrink
    except ImportError:
        pass
    else:
        raise SystemExit("lmshrink was importable")
    torch.set_num_threads(1)
    paths, ids_file, out_file = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    ids = torch.load(ids_file)
    out = {}
    for path in paths:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits
            tokens = model.generate(ids[:, :6], max_new_tokens=5, do_sample=False)
        out[path] = {"logits": logits, "tokens": tokens, "class": type(model).__name__,
                     "modules": sorted({type(m).__name__ for m in model.modules()})}
    torch.save(out, out_file)
""")


def _sublayer_model(path, model):
    model = LlamaAdapter().remove(model, [2, 5], "sublayer")  # layer 1's attention, layer 2's MLP
    save_compressed(model, path, tokenizer=tiny_tokenizer())
    return path


def _svd_model(path, text_file, pivga):
    from lmshrink.pipeline.svd import svd_compress

    result = svd_compress(str(path.parent / "source"), ratio=0.7, solver="uniform", pivga=pivga,
                          data=[str(text_file)], samples=2, seq_len=16, evaluate=False, progress=False, out=path)
    return result.out / "model"


@pytest.fixture(scope="module")
def saved(tmp_path_factory, text_file):
    """A sub-layer-pruned, a low-rank and a PivGa tiny Llama saved in lmshrink's format."""
    root = tmp_path_factory.mktemp("remote")
    model = tiny_llama(4)
    model.save_pretrained(root / "source")
    tiny_tokenizer().save_pretrained(root / "source")
    return {"sublayer": _sublayer_model(root / "sublayer", tiny_llama(4)),
            "qwen3_sublayer": _sublayer_model(root / "qwen3_sublayer", tiny_qwen3()),
            "low_rank": _svd_model(root / "low_rank", text_file, pivga=False),
            "pivga": _svd_model(root / "pivga", text_file, pivga=True)}


@pytest.fixture(scope="module")
def without_lmshrink(saved, tmp_path_factory):
    """What the child process (no lmshrink) computed for each saved model."""
    folder = tmp_path_factory.mktemp("child")
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))  # in every model's vocabulary
    torch.save(ids, folder / "ids.pt")
    paths = [str(p) for p in saved.values()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(paths), str(folder / "ids.pt"),
                           str(folder / "out.pt")], env=env, cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return ids, torch.load(folder / "out.pt")


@pytest.mark.parametrize("kind, modules", [
    ("sublayer", {"RemovedAttention", "RemovedMLP"}),
    ("qwen3_sublayer", {"RemovedAttention", "RemovedMLP", "Qwen3DecoderLayer"}),
    ("low_rank", {"LowRankLinear"}),
    ("pivga", {"PivGaLinear"}),
])
def test_transformers_alone_loads_the_model_with_the_logits_of_load_compressed(saved, without_lmshrink, kind,
                                                                              modules):
    ids, out = without_lmshrink
    got = out[str(saved[kind])]
    assert got["class"] == CLASS_NAME and modules <= set(got["modules"])
    model = lmshrink.load_compressed(saved[kind])
    with torch.no_grad():
        expected = model(input_ids=ids, use_cache=False).logits
        tokens = model.generate(ids[:, :6], max_new_tokens=5, do_sample=False)
    torch.testing.assert_close(got["logits"], expected, rtol=0, atol=1e-6)
    assert torch.equal(got["tokens"], tokens)


def test_the_directory_names_its_modeling_code_and_load_compressed_ignores_it(saved, tmp_path):
    from lmshrink.compress.export import export_dense

    path = saved["pivga"]
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"] == {"AutoModelForCausalLM": f"modeling_lmshrink.{CLASS_NAME}"}
    assert [t["type"] for t in config["lmshrink_transforms"]] == ["pivga"]
    source = (path / MODELING_FILE).read_text()
    assert "import lmshrink" not in source and "from lmshrink" not in source
    model = lmshrink.load_compressed(path)
    assert not hasattr(model.config, "auto_map") and not hasattr(model.config, "lmshrink_transforms")
    assert [t["type"] for t in transforms_of(model)] == ["pivga"]
    export_dense(model, tmp_path / "dense")  # a plain model: no pointer to modeling code it does not carry
    assert "auto_map" not in json.loads((tmp_path / "dense" / "config.json").read_text())


def test_a_plugin_transform_gets_no_modeling_code(tmp_path):
    from lmshrink.compress.remote import write_remote_code

    model = tiny_llama(2)
    model.config.save_pretrained(tmp_path)
    assert not write_remote_code(tmp_path, model, [{"type": "someone_elses"}])
    assert not (tmp_path / MODELING_FILE).exists()
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())


def test_lm_eval_hf_model_opens_it(saved):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    path = saved["low_rank"]
    lm = HFLM(pretrained=str(path), trust_remote_code=True, batch_size=1, device="cpu")
    request = Instance("loglikelihood", {}, ("The value of", " the attribute"), 0)
    (loglik, _greedy), = lm.loglikelihood([request], disable_tqdm=True)
    # the same continuation scored by load_compressed directly
    model, tok = lmshrink.load_compressed(path, with_tokenizer=True)
    context, continuation = tok("The value of").input_ids, tok(" the attribute").input_ids
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)[0]
    expected = sum(logp[len(context) - 1 + k, t].item() for k, t in enumerate(continuation))
    assert loglik == pytest.approx(expected, abs=1e-4)
