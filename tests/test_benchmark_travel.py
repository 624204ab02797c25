"""The healing-that-travels study's aggregation: means, ranges and the mix / pydoc ratio, by hand."""

from __future__ import annotations

import pytest

from benchmarks.removal.travel import aggregate, render


def _row(cal, seed, pydoc, literature):
    texts = {"pydoc": {"before": 15.0, "unhealed": 34.0, "after": pydoc, "tokens": 100},
             "prose": {"before": 30.0, "unhealed": 60.0, "after": 50.0, "tokens": 100},
             "literature": {"before": 40.0, "unhealed": 80.0 + seed, "after": literature, "tokens": 100}}
    return {"calibration": cal, "seed": seed, "removed": [1, 2], "texts": texts, "seconds": 1.0}


def test_aggregate_gives_the_mean_range_and_ratio_of_the_healed_perplexities():
    rows = [_row("pydoc", 0, 24.0, 84.0), _row("mix", 0, 25.0, 68.0),
            _row("pydoc", 1, 26.0, 82.0), _row("mix", 1, 25.0, 66.0)]
    got = aggregate(rows)
    lit = {h["calibration"]: h for h in got["healed"] if h["text"] == "literature"}
    assert lit["pydoc"]["mean"] == 83.0 and (lit["pydoc"]["min"], lit["pydoc"]["max"]) == (82.0, 84.0)
    assert lit["mix"]["removed_mean"] == 80.5 and lit["mix"]["seeds"] == 2
    ratios = {r["text"]: r["mix_over_pydoc"] for r in got["ratios"]}
    assert ratios["literature"] == pytest.approx(67.0 / 83.0)
    assert ratios["pydoc"] == pytest.approx(1.0) and ratios["prose"] == pytest.approx(1.0)
    page = render({"settings": {"remove": "6", "seeds": [0, 1]}, "aggregate": got})
    assert "| literature | mix |" in page and "82.00–84.00" in page


def test_an_svd_run_scores_every_text_dense_and_compressed(tiny_model_dir):
    from lmshrink.data import default_calibration

    if default_calibration() != "mix":
        pytest.skip("Debian's fortunes package is not installed")
    from benchmarks.removal.travel import run_one

    row = run_one(str(tiny_model_dir), "1", "mix", 0, {"ratio": 0.6, "solver": "uniform", "samples": 4,
                                                       "seq_len": 16, "eval_tokens": 128, "eval_window": 32})
    assert row["removed"] == pytest.approx(0.6, abs=0.05)
    assert set(row["texts"]) == {"pydoc", "prose", "literature"}
    for stages in row["texts"].values():
        assert stages["unhealed"] is None and stages["after"] != stages["before"] and stages["before"] > 1
    assert len({stages["tokens"] for stages in row["texts"].values()}) == 1  # the same count on every text
