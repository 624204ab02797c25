"""KD healing of factored (SVD-compressed) models: the factors are trained (LoRA deltas folded into them, or
directly) and stay factored; a healed model reloads with the logits it had; ``lmshrink heal`` on an svd run's model
and ``lmshrink svd --heal kd``."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import lmshrink
from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.cli import main
from lmshrink.compress.io import load_compressed, save_compressed
from lmshrink.compress.svd import compress_model, svd_factors
from lmshrink.heal.factored import factored_layers
from lmshrink.heal.kd import KDConfig, distill, kd_loss, teacher_targets
from lmshrink.pipeline.svd import svd_compress
from lmshrink.report.svd import svd_summary
from tiny import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

#: a short, quick distillation
FAST_KD = {"steps": 3, "batch_size": 2, "top_k": 16}


def _factored(pivga: bool, dense: bool):
    """A tiny Llama (its dense copy, the teacher) compressed to rank 6; with ``dense`` one matrix per layer stays
    dense (its rank at the break-even), so peft's LoRA has a layer to adapt too."""
    teacher = tiny_llama(num_layers=2, vocab_size=96, hidden_size=48, intermediate_size=96)
    ids = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(1))
    student = copy.deepcopy(teacher)
    linears = LlamaAdapter().linear_layers(student)
    factors = svd_factors(student, linears, ids, batch_size=4, progress=False)
    ranks = {name: 48 if dense and name.endswith("o_proj") else 6 for name in factors.factors}
    compress_model(student, factors, ranks, pivga=pivga)
    return teacher, student, ids


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _layout(model):
    return [(name, type(m).__name__, {k: tuple(v.shape) for k, v in m.state_dict().items()})
            for name, m in factored_layers(model)]


@pytest.mark.parametrize("pivga, dense, method", [(False, True, "lora"), (True, True, "lora"), (True, False, "lora"),
                                                  (False, False, "full"), (True, True, "full")])
def test_kd_trains_a_factored_model_and_keeps_it_factored(tmp_path, pivga, dense, method):
    teacher, student, ids = _factored(pivga, dense)
    targets = teacher_targets(teacher, ids, top_k=32)
    layout, count = _layout(student), sum(p.numel() for p in student.parameters())
    config = KDConfig(steps=20, batch_size=4, lr=1e-2 if method == "lora" else 1e-3, method=method, lora_rank=4)
    healed, report = distill(copy.deepcopy(student), targets, config)
    assert report.to_dict()["loss_last"] < report.to_dict()["loss_first"]
    assert _layout(healed) == layout and sum(p.numel() for p in healed.parameters()) == count
    assert set(healed.state_dict()) == set(student.state_dict())
    with torch.no_grad():
        before = kd_loss(_logits(student, ids)[:, :-1], targets.probs, targets.indices, 1.0)
        after = kd_loss(_logits(healed, ids)[:, :-1], targets.probs, targets.indices, 1.0)
    assert float(after) < float(before)
    # the factors themselves moved (not only the dense layers), and the saved model computes what the healed one does
    changed = [k for k, v in healed.state_dict().items()
               if k.endswith((".left", ".right", ".rows", ".coef")) and not torch.equal(v, student.state_dict()[k])]
    assert changed
    save_compressed(healed, tmp_path / "m")
    assert torch.equal(_logits(load_compressed(tmp_path / "m"), ids), _logits(healed, ids))


@pytest.fixture(scope="module", params=[False, True], ids=["low-rank", "pivga"])
def svd_run(request, tmp_path_factory, tiny_model_dir, text_file):
    out = tmp_path_factory.mktemp("svd") / "run"
    return svd_compress(str(tiny_model_dir), out=out, ratio=0.6, solver="uniform", pivga=request.param,
                        data=[str(text_file)], samples=4, seq_len=16, evaluate=False, progress=False)


def test_heal_command_heals_an_svd_model_which_reloads_with_identical_logits(svd_run, tiny_model_dir, text_file,
                                                                             tmp_path):
    model_dir = svd_run.out / "model"
    result = lmshrink.heal_model(model_dir, teacher=str(tiny_model_dir), out=tmp_path / "healed",
                                 data=[str(text_file)], samples=4, seq_len=16, eval_tokens=128, kd_options=FAST_KD,
                                 progress=False)
    assert len(result.report.kd["losses"]) == 3
    reloaded = load_compressed(tmp_path / "healed" / "model")
    assert _layout(reloaded) == _layout(load_compressed(model_dir))
    probe = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(reloaded, probe), _logits(result.model, probe))
    assert not torch.equal(_logits(reloaded, probe), _logits(load_compressed(model_dir), probe))


def test_the_heal_command_line_heals_an_svd_run_towards_the_model_its_report_names(svd_run, tiny_model_dir,
                                                                                  text_file, tmp_path):
    # no --teacher: the svd run's report.json names the model it compressed
    assert json.loads((svd_run.out / "report.json").read_text())["model_source"] == str(tiny_model_dir)
    code = main(["heal", str(svd_run.out / "model"), "--out", str(tmp_path / "h"),
                 "--data", str(text_file), "--samples", "4", "--seq-len", "16", "--eval-tokens", "128",
                 *[a for k, v in FAST_KD.items() for a in ("--heal-option", f"{k}={v}")], "--quiet"])
    assert code == 0
    assert _layout(load_compressed(tmp_path / "h" / "model")) == _layout(svd_run.model)
    assert json.loads((tmp_path / "h" / "report.json").read_text())["teacher"] == str(tiny_model_dir)


def test_svd_heal_kd_distills_from_the_dense_model_before_saving(tiny_model_dir, text_file, tmp_path):
    result = svd_compress(str(tiny_model_dir), out=tmp_path / "run", ratio=0.6, solver="uniform", pivga=True,
                          data=[str(text_file)], samples=4, seq_len=16, eval_tokens=128, progress=False, heal="kd",
                          heal_options=FAST_KD)
    report = json.loads((result.out / "report.json").read_text())
    healing = report["healing"]
    assert healing["steps"] == ["kd"] and len(healing["kd"]["losses"]) == 3
    assert healing["perplexity_unhealed"]["perplexity"] != report["perplexity_after"]["perplexity"]
    assert report["verify"]["identical"]
    assert report["params"]["model_after"] == sum(p.numel() for p in result.model.parameters())
    assert {"heal: teacher targets", "heal: distill", "perplexity unhealed"} <= set(report["timings_s"])
    assert "after compression" in (result.out / "report.md").read_text()
    assert " compressed -> " in svd_summary(result.report)[-1] and "healed (kd)" in svd_summary(result.report)[-1]
    reloaded = load_compressed(result.out / "model")
    probe = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(reloaded, probe), _logits(result.model, probe))


@pytest.mark.parametrize("args, message", [
    (["--heal", "linear"], "svd removes none; heal an svd run with --heal kd."),
    (["--heal", "kd", "--heal-option", "steps=0"], "KD healing: steps must be"),
    (["--heal-option", "steps=3"], "which --heal does not name."),
])
def test_svd_refuses_healing_it_cannot_do_in_one_sentence(tiny_model_dir, tmp_path, capsys, args, message):
    code = main(["svd", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
