"""KD healing (lmshrink.heal.kd): teacher targets, the loss against a hand computation, training that lowers it,
LoRA merged into a plain model, reproducible with a seed."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lmshrink.adapters.llama import LlamaAdapter
from lmshrink.core import LmshrinkError
from lmshrink.heal.kd import KDConfig, distill, kd_loss, teacher_targets
from lmshrink.testing import sample_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
ADAPTER = LlamaAdapter()


@pytest.fixture(scope="module")
def setup():
    teacher = tiny_llama(layers=4)
    ids = sample_ids(teacher, batch=16, seq_len=12, seed=7)
    student = ADAPTER.remove(copy.deepcopy(teacher), [1])
    return teacher, student, ids


def test_teacher_targets_are_the_renormalised_top_k(setup):
    teacher, _, ids = setup
    t = teacher_targets(teacher, ids[:3], top_k=5, temperature=2.0, batch_size=2)
    with torch.no_grad():
        p = torch.softmax(teacher(input_ids=ids[:3]).logits[:, :-1] / 2.0, dim=-1)
    top = p.topk(5, dim=-1)
    torch.testing.assert_close(t.indices, top.indices)
    torch.testing.assert_close(t.probs, top.values / top.values.sum(-1, keepdim=True))
    torch.testing.assert_close(t.probs.sum(-1), torch.ones(3, 11))


def test_loss_matches_a_hand_computation():
    logits = torch.tensor([[[1.0, 2.0, 0.0]]])
    probs, idx = torch.tensor([[[0.75, 0.25]]]), torch.tensor([[[1, 0]]])
    tau = 2.0
    z = [v / tau for v in (1.0, 2.0, 0.0)]
    logq = [v - math.log(sum(math.exp(u) for u in z)) for v in z]
    expected = -(tau**2) * (0.75 * logq[1] + 0.25 * logq[0])
    assert float(kd_loss(logits, probs, idx, tau)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_distillation_lowers_the_loss_and_leaves_a_plain_model(setup, method, tmp_path):
    from transformers import AutoModelForCausalLM

    teacher, student, ids = setup
    targets = teacher_targets(teacher, ids, top_k=32)
    config = KDConfig(steps=30, batch_size=4, lr=1e-2 if method == "lora" else 1e-3, method=method, lora_rank=4)
    healed, report = distill(copy.deepcopy(student), targets, config)
    d = report.to_dict()
    assert d["loss_last"] < d["loss_first"]
    assert report.trained_parameters > 0
    assert set(healed.state_dict()) == set(student.state_dict())  # LoRA merged away
    healed.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids[:2]).logits, healed(input_ids=ids[:2]).logits)
        before = kd_loss(student(input_ids=ids).logits[:, :-1], targets.probs, targets.indices, 1.0)
        after = kd_loss(healed(input_ids=ids).logits[:, :-1], targets.probs, targets.indices, 1.0)
    assert float(after) < float(before)


def test_a_seed_reproduces_the_run(setup):
    teacher, student, ids = setup
    targets = teacher_targets(teacher, ids, top_k=16)
    config = KDConfig(steps=5, batch_size=4, lr=1e-2, lora_rank=2, seed=3)
    a, ra = distill(copy.deepcopy(student), targets, config)
    b, rb = distill(copy.deepcopy(student), targets, config)
    assert ra.losses == rb.losses
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(lr=0.0), dict(method="dora"), dict(top_k=0), dict(warmup=1.0),
                                 dict(temperature=-1.0)])
def test_bad_settings_are_one_sentence(bad):
    with pytest.raises(LmshrinkError, match="KD healing"):
        KDConfig(**bad)
