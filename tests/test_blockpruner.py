"""BlockPruner against a greedy recomputed by hand with whole forward passes, on a tiny Llama."""

from __future__ import annotations

import math

import pytest
import torch

from lmshrink.baselines import get_method
from lmshrink.core import LmshrinkError
from lmshrink.core.removal import ParameterBudget, removal_constraints
from lmshrink.data import Calibration
from lmshrink.evaluate.loss import calibration_loss
from lmshrink.plugins import find_adapter

from tiny import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    model = tiny_llama(4)
    adapter = find_adapter(model)
    ids = torch.randint(0, 320, (3, 20), generator=torch.Generator().manual_seed(0))
    return model, adapter, Calibration(ids, "random tokens", {"samples": 3, "seq_len": 20})


def by_hand(model, adapter, ids, constraint):
    """The greedy of BlockPruner written out: each step removes the sub-layer with the lowest perplexity (whole
    passes, no cached layer inputs) among those that fit under the band's upper bound, until the lower bound."""
    w = dict(zip(constraint.indices, constraint.weight_array()))
    removed, total, ppl = [], 0.0, []
    while total < constraint.lower:
        allowed = [i for i in constraint.indices if i not in removed and total + w[i] <= constraint.upper]
        scores = {i: math.exp(calibration_loss(model, ids, adapter=adapter, removed=removed + [i],
                                               granularity="sublayer")) for i in allowed}
        pick = min(scores, key=lambda i: (scores[i], i))
        removed.append(pick)
        total += w[pick]
        ppl.append(scores[pick])
    return removed, ppl


def test_blockpruner_repeats_the_greedy_by_perplexity_under_a_parameter_budget(setup):
    model, adapter, calib = setup
    sel = get_method("blockpruner").select(model, adapter, calib, "30%", granularity="sublayer", samples=None)
    blocks = adapter.blocks(model, "sublayer")
    params = adapter.unit_parameters(model, blocks)
    (band,) = removal_constraints(blocks, {None: ParameterBudget(0.3)}, parameters=params,
                                  decoder=adapter.decoder_parameters(model))
    order, ppl = by_hand(model, adapter, calib.input_ids, band)
    assert sel.order == order
    assert [t["score"] for t in sel.trace] == pytest.approx(ppl, rel=1e-5)
    removed = sum(params[i] for i in sel.best)
    assert band.lower <= removed <= band.upper
    assert sel.info["step_score"] == "calibration perplexity with the sub-layer removed"


def test_blockpruner_honours_per_kind_amounts_and_works_on_sublayers_only(setup):
    model, adapter, calib = setup
    sel = get_method("blockpruner").select(model, adapter, calib, "attention=50%,mlp=1", granularity="sublayer",
                                           samples=2)
    kinds = [adapter.blocks(model, "sublayer")[i].kind for i in sel.best]
    assert kinds.count("mlp") == 1 and kinds.count("attention") == 2  # half of 4 equal attention sub-layers
    with pytest.raises(LmshrinkError, match="granularity sublayer"):
        get_method("blockpruner").select(model, adapter, calib, 1, granularity="layer")
