"""The baseline removal methods against values computed by hand on a tiny model."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmshrink.baselines import get_method
from lmshrink.baselines.angular import window_distances
from lmshrink.baselines.hidden_states import residual_statistics
from lmshrink.core import LmshrinkError
from lmshrink.core.removal import removal_constraints, with_constraints
from lmshrink.data import Calibration
from lmshrink.plugins import find_adapter, get_objective, get_solver, registry

from tiny import tiny_llama

N = 5


@pytest.fixture(scope="module")
def setup():
    model = tiny_llama(N)
    adapter = find_adapter(model)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 320, (4, 24), generator=gen)
    ids[0, :3] = 0  # the padding token: its embedding is zero, a token with no direction
    return model, adapter, Calibration(ids, "random tokens", {"samples": 4, "seq_len": 24})


def boundary_states(model, ids):
    """x_0 .. x_N: the input of every layer and the output of the last, from transformers' own hidden states plus
    a hook on the final norm (whose input is the last layer's output)."""
    seen = {}
    handle = model.model.norm.register_forward_hook(lambda m, a, o: seen.setdefault("x", a[0]))
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    layers = len(model.model.layers)
    return [h.double() for h in out.hidden_states[:layers]] + [seen["x"].double()]


def cos_tokens(a, b):
    return F.cosine_similarity(a, b, dim=-1)


def test_methods_and_objectives_are_registered():
    assert {"block-influence-iterative", "angular", "sleb"} <= set(registry("method").names())
    assert {"block-influence", "norm-ratio"} <= set(registry("objective").names())
    with pytest.raises(LmshrinkError, match="is an objective"):
        get_method("block-influence")


def test_block_influence_and_norm_ratio_match_hand_computation(setup):
    model, adapter, calib = setup
    x = boundary_states(model, calib.input_ids)
    bi = np.array([1 - cos_tokens(x[i], x[i + 1]).mean().item() for i in range(N)])
    ratio = np.array([(x[i + 1] - x[i]).norm(dim=-1).mean().item() / x[i].norm(dim=-1).mean().item()
                      for i in range(N)])

    stats = residual_statistics(model, adapter, calib.input_ids, batch_size=3)  # batches of 3 and 1
    np.testing.assert_allclose(1 - stats["cosine"], bi, atol=1e-6)
    np.testing.assert_allclose(stats["norm_ratio"], ratio, rtol=1e-6)

    blocks = adapter.blocks(model)
    for name, score in (("block-influence", bi), ("norm-ratio", ratio)):
        problem = get_objective(name).build(model, adapter, calib, progress=False)
        np.testing.assert_allclose(problem.linear, score, rtol=1e-6, atol=1e-7)
        assert not problem.quadratic.any()
        p = with_constraints(problem, removal_constraints(blocks, {None: 2}))
        best = get_solver("exact", p).solve(p).best
        assert sorted(best.indices) == sorted(np.argsort(score)[:2].tolist())


def test_angular_distance_window(setup):
    model, adapter, calib = setup
    x = boundary_states(model, calib.input_ids)
    stats = residual_statistics(model, adapter, calib.input_ids)
    for n in (1, 2, 3):
        d = [(torch.arccos(cos_tokens(x[l], x[l + n]).clamp(-1, 1)) / math.pi).mean().item() for l in range(N - n + 1)]
        np.testing.assert_allclose(window_distances(stats["angular"], n), d, atol=1e-6)
        sel = get_method("angular").select(model, adapter, calib, n)
        start = int(np.argmin(d))
        assert sel.best == list(range(start, start + n))
        assert sel.scores[0] == pytest.approx(min(d), abs=1e-6)
        assert len(sel.candidates) == N - n + 1  # every window, by distance


def test_iterative_block_influence_recomputes_on_the_pruned_model(setup):
    model, adapter, calib = setup
    sel = get_method("block-influence-iterative").select(model, adapter, calib, 2)
    x = boundary_states(model, calib.input_ids)
    first = int(np.argmin([1 - cos_tokens(x[i], x[i + 1]).mean().item() for i in range(N)]))
    assert sel.order[0] == first
    # step 2 by hand: really remove the first block from a copy and recompute BI of the rest
    pruned = adapter.remove(copy.deepcopy(model), [first])
    y = boundary_states(pruned, calib.input_ids)
    kept = [i for i in range(N) if i != first]
    bi2 = {kept[j]: 1 - cos_tokens(y[j], y[j + 1]).mean().item() for j in range(N - 1)}
    assert sel.order[1] == min(bi2, key=bi2.get)
    for i, v in sel.trace[1]["scores"].items():
        assert v == pytest.approx(bi2[i], abs=1e-5)
    assert sel.best == sorted(sel.order)


def _loss(model, ids):
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    return nll.view(ids.shape[0], -1).mean(dim=1).mean().item()


def test_sleb_greedy_matches_brute_force(setup):
    model, adapter, calib = setup
    sel = get_method("sleb").select(model, adapter, calib, 2, samples=2)
    ids = calib.input_ids[:2]
    removed = []
    for step in range(2):
        losses = {i: _loss(adapter.remove(copy.deepcopy(model), removed + [i]), ids)
                  for i in range(N) if i not in removed}
        pick = min(losses, key=losses.get)
        assert sel.order[step] == pick
        assert sel.trace[step]["score"] == pytest.approx(losses[pick], rel=1e-5)
        removed.append(pick)
    assert sel.info["loss_measurements"] == N + N - 1


def test_sleb_resumed_from_known_sets_repeats_the_fresh_order(setup):
    """Given its own choices at M = 2 and 3, a run to M = 4 measures only inside the smallest known set holding
    what it removed so far (2, 1, then 1 blocks), then every block left (2), and removes the fresh run's order."""
    from lmshrink.baselines.sleb import GreedyLossRemoval

    model, adapter, calib = setup
    fresh = get_method("sleb").select(model, adapter, calib, 4, samples=2)
    known = [sorted(fresh.order[:2]), sorted(fresh.order[:3])]
    resumed = GreedyLossRemoval(known=known).select(model, adapter, calib, 4, samples=2)
    assert resumed.order == fresh.order
    assert resumed.info["loss_measurements"] == 2 + 1 + 1 + 2
    assert fresh.info["loss_measurements"] == 5 + 4 + 3 + 2
    assert [t["score"] for t in resumed.trace] == pytest.approx([t["score"] for t in fresh.trace], rel=1e-6)


def test_per_kind_specs_honoured_or_refused(setup):
    model, adapter, calib = setup
    sel = get_method("sleb").select(model, adapter, calib, "attention=1,mlp=2", granularity="sublayer", samples=1)
    blocks = adapter.blocks(model, "sublayer")
    kinds = sorted(blocks[i].kind for i in sel.best)
    assert kinds == ["attention", "mlp", "mlp"]
    with pytest.raises(LmshrinkError, match="only a total"):
        _angular_per_kind(model, adapter, calib)
    with pytest.raises(LmshrinkError, match="granularity"):
        get_method("angular").select(model, adapter, calib, 2, granularity="sublayer")
    with pytest.raises(LmshrinkError, match="granularity 'layer'"):
        get_objective("block-influence").build(model, adapter, calib, granularity="sublayer", progress=False)


def _angular_per_kind(model, adapter, calib):
    """Angular on a model with two kinds (sub-layers): a per-kind count is refused before any measurement."""
    from lmshrink.baselines.angular import AngularDistance

    method = AngularDistance()
    method.granularities = ("layer", "sublayer")  # reach the per-kind check
    return method.select(model, adapter, calib, "attention=1", granularity="sublayer")


def test_prune_with_a_method(tiny_model_dir, tmp_path):
    import lmshrink

    result = lmshrink.prune(str(tiny_model_dir), remove=2, method="sleb", method_options={"samples": 2}, samples=4,
                            seq_len=32, eval_tokens=256, rerank=1, out=tmp_path / "run", progress=False)
    r = result.report
    assert r["method"]["name"] == "sleb" and r["problem"] is None and r["solver"] is None
    assert len(r["removed"]) == 2 and r["candidates"][0]["loss"] is not None
    assert r["parameters_after"] < r["parameters_before"]
    text = (tmp_path / "run" / "report.md").read_text()
    assert "Removal method `sleb`" in text
    assert not (tmp_path / "run" / "problem.json").exists()
