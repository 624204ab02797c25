"""The removal study's budget mode (``python -m benchmarks.removal --budget``): a quick run on a tiny random model
with every row on both held-out texts, plain and healed; its ratios against a hand computation; bad budgets."""

from __future__ import annotations

import copy
import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmshrink import data  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

needs_fortunes = pytest.mark.skipif(not (data.FORTUNES_DIR / "literature").is_file(),
                                    reason="Debian's fortunes is not installed")

#: the quick run of the tests: two seeds, 25% of the decoder, tiny windows
QUICK_ARGS = ["--quick", "--budget", "25%", "--samples", "6", "--seq-len", "32", "--validation", "4",
              "--eval-tokens", "256", "--eval-window", "64", "--search-tokens", "8192"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_fortunes
def test_budget_study_has_every_row_on_both_texts_and_its_ratios(tiny_model_dir, tmp_path):
    import torch

    from benchmarks.common import Log
    from benchmarks.removal import parse_args, run
    from benchmarks.removal.settings import BUDGET_ROWS
    from lmshrink.evaluate.loss import per_sample_loss
    from lmshrink.models import load_model
    from lmshrink.plugins import find_adapter

    out = tmp_path / "budget"
    summary = run(parse_args(["--model", str(tiny_model_dir), *QUICK_ARGS, "--out", str(out)]), Log(quiet=True))
    for name in ("report.md", "results.csv", "summary.json", "seed-0.json", "seed-1.json"):
        assert (out / name).exists(), name
    rows = _read_csv(out / "results.csv")
    keys = {(r["seed"], r["method"], r["text"], r["healed"]) for r in rows}
    assert {(s, m, t, h) for s in "01" for m in BUDGET_ROWS for t in ("pydoc", "literature")
            for h in ("none", "linear")} <= keys

    # every row removes at least a quarter of the decoder; the rows in the study's units stay in the band
    loaded = load_model(str(tiny_model_dir))
    adapter = find_adapter(loaded.model)
    units = adapter.blocks(loaded.model, "sublayer")
    sizes = adapter.unit_parameters(loaded.model, units)
    decoder = adapter.decoder_parameters(loaded.model)
    for r in rows:
        removed = [int(v) for v in r["removed"].split()]
        assert int(r["parameters_removed"]) == sum(sizes[i] for i in removed) >= 0.25 * decoder
        if r["units"] == "sublayer":
            assert int(r["parameters_removed"]) <= math.ceil(0.25 * decoder) + min(sizes)
    # the searches stay within the token budget, and record what they spent
    for r in rows:
        if r["method"] in ("sleb", "blockpruner", "evopress", "surrogate-race"):
            assert 0 < int(r["tokens"]) <= 8192 and int(r["search_evaluations"]) > 0, r["method"]

    # a sub-layer row's perplexity on the second text is that of a really pruned copy on the same windows
    from benchmarks.removal.seed_run import held_out_windows

    ids = held_out_windows(loaded.tokenizer, data.load_texts("literature"), 256, 64)
    row = next(r for r in rows if r["method"] == "evopress" and r["text"] == "literature" and r["healed"] == "none")
    pruned = adapter.remove(copy.deepcopy(loaded.model), [int(v) for v in row["removed"].split()], "sublayer")
    with torch.no_grad():
        expected = math.exp(float(per_sample_loss(pruned, ids).double().mean()))
    assert float(row["perplexity"]) == pytest.approx(expected, rel=1e-5)

    # the ratio of lmshrink's default to the best other row, by hand from the rows
    assert {(r["text"], r["healed"]) for r in summary["ratios"]} == {
        (t, h) for t in ("pydoc", "literature") for h in ("none", "linear")}
    for ratio in summary["ratios"]:
        means = {m: np.mean([float(r["perplexity"]) for r in rows if r["method"] == m and r["budget"] == "25%"
                             and r["text"] == ratio["text"] and r["healed"] == ratio["healed"]])
                 for m in BUDGET_ROWS}
        best = min((m for m in means if m != "default"), key=means.get)
        assert ratio["best_row"] == best
        assert ratio["ratio"] == pytest.approx(means["default"] / means[best], rel=1e-9)
    report = (out / "report.md").read_text()
    assert "## Budget 25% of the decoder's parameters" in report and "| evopress | sublayer |" in report

    # --refresh default chooses and scores the default's rows again (here: the same, as the code is unchanged) and
    # keeps every other row as it was stored
    import json

    stored = json.loads((out / "seed-0.json").read_text())
    spoiled = [{**r, "perplexity": 1e9, "removed": []} if r["method"] == "default" else r for r in stored["rows"]]
    (out / "seed-0.json").write_text(json.dumps({**stored, "rows": spoiled}))
    run(parse_args(["--model", str(tiny_model_dir), *QUICK_ARGS, "--out", str(out), "--refresh", "default"]),
        Log(quiet=True))
    again = json.loads((out / "seed-0.json").read_text())
    assert again["refreshed"]["rows"] == ["default"]
    key = lambda r: (r["method"], r["text"], r["healed"])  # noqa: E731
    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in sorted(rows, key=key)]
    assert timeless(again["rows"]) == timeless(stored["rows"])
    assert [r for r in again["rows"] if r["method"] != "default"] == [
        r for r in stored["rows"] if r["method"] != "default"]
    assert "Rows `default` were chosen and scored again" in (out / "report.md").read_text()


@pytest.mark.parametrize("budget, words", [
    ("150%", "strictly between 0 and 100"),
    ("6", "is not a budget in parameters"),
    ("99%", "ask for at most"),
    ("1p", "less than the smallest removable unit"),
])
def test_a_bad_budget_is_refused_in_one_sentence(tiny_model_dir, tmp_path, capsys, budget, words):
    from benchmarks.removal.study import main

    code = main(["--model", str(tiny_model_dir), "--quick", "--budget", budget, "--out", str(tmp_path / "out")])
    said = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the loading bars
    assert code == 2 and len(said) == 1 and words in said[0], said
    assert said[0].startswith("python -m benchmarks.removal: error: ")
    assert not (tmp_path / "out").exists()


def test_budget_flags_and_count_flags_do_not_mix(capsys):
    from benchmarks.removal import parse_args
    from benchmarks.removal.settings import BUDGET_OUT, BudgetSettings, Settings

    settings = parse_args(["--budget", "25%,37.5%,25%"])
    assert isinstance(settings, BudgetSettings) and settings.budget == ["25%", "37.5%"]
    assert settings.out == BUDGET_OUT and settings.granularity == "sublayer" and settings.heldout_data == "literature"
    assert type(parse_args([])) is Settings and parse_args([]).out == Settings.out
    assert parse_args(["--budget", "25%", "--refresh", "surrogate-race,default"]).refresh == "default,surrogate-race"
    for argv, words in ((["--granularity", "layer"], "--granularity applies to runs with --budget"),
                        (["--budget", "25%", "--remove", "6"], "--remove applies to runs of totals M"),
                        (["--budget", "25%", "--skip", "fisher"], "Unknown row 'fisher'"),
                        (["--budget", "25%", "--refresh"], "--refresh default does"),
                        (["--budget", "25%", "--refresh", "surogate-race"], "Unknown row 'surogate-race' in --refresh"),
                        (["--refresh", "sleb"], "--refresh takes pipelines or default")):
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        assert exc.value.code == 2 and words in capsys.readouterr().err, argv
