"""Aggregation over seeds, tables and report.md of the removal study's budget mode (:mod:`.budget`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..common import table, write_csv, write_json
from .settings import BUDGET_ROWS
from .report import _cell, _compare, _mean_sd, _ratio, _refreshed, _seed_time, aggregate, footer

#: what the budget mode aggregates over seeds by
KEYS = ("method", "budget", "text", "healed")
#: the row lmshrink's choice is compared with the best of the others by
OURS = "default"
#: results.csv columns
COLUMNS = ("seed", "method", "budget", "text", "healed", "units", "removed", "parameters_removed",
           "share_of_decoder", "perplexity", "loss", "loss_se", "tokens", "search_evaluations",
           "validation_evaluations", "seconds")


def budget_ratios(agg: dict[tuple[Any, ...], dict[str, Any]], budgets: list[str],
                  texts: list[str]) -> list[dict[str, Any]]:
    """Per budget, held-out text and healing: lmshrink's default against the other row with the lowest mean
    perplexity, as the ratio of the means over the seeds both have, with the range of the per-seed ratios."""
    out = []
    for budget in budgets:
        for text in texts:
            for healed in ("none", "linear"):
                ours = agg.get((OURS, budget, text, healed))
                others = [k[0] for k in agg if k[1:] == (budget, text, healed) and k[0] != OURS]
                if ours is None or not others:
                    continue
                best = min(others, key=lambda m: agg[(m, budget, text, healed)]["mean"])
                compared = _compare(ours, agg[(best, budget, text, healed)])
                if compared:
                    out.append({"budget": budget, "text": text, "healed": healed, "best_row": best, **compared})
    return out


def row_costs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (row, budget), means over the seeds: the share of the decoder removed, tokens the search spent (None
    for rows that do not search), loss evaluations, candidates validated, seconds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["text"] == rows[0]["text"] and r["healed"] == "none":  # one row per seed carries the costs
            groups.setdefault((r["method"], r["budget"]), []).append(r)
    mean = lambda rs, k: None if any(r.get(k) is None for r in rs) else float(np.mean([r[k] for r in rs]))  # noqa: E731
    return [{"method": m, "budget": b, "units": rs[0]["units"], "seeds": len(rs),
             **{k: mean(rs, k) for k in ("parameters_removed", "share_of_decoder", "tokens", "search_evaluations",
                                          "validation_evaluations", "seconds")}}
            for (m, b), rs in groups.items()]


def write_budget_report(out: Path, summary: dict[str, Any]) -> Path:
    """summary.json (with the aggregates, ratios and costs), results.csv and report.md."""
    out = Path(out)
    rows = [r for sd in summary["seeds"] for r in sd["rows"]]
    agg = aggregate(rows, KEYS)
    ratios = budget_ratios(agg, summary["settings"]["budget"], list(summary["held_out"]))
    costs = row_costs(rows)
    summary["aggregate"] = [{**dict(zip(KEYS, k)), **v} for k, v in agg.items()]
    summary["ratios"] = ratios
    summary["costs"] = costs
    write_json(out / "summary.json", summary)
    write_csv(out / "results.csv", rows, COLUMNS)
    path = out / "report.md"
    path.write_text(render_budget(summary, agg, ratios, costs))
    return path


def _order(agg: dict[tuple[Any, ...], Any], budget: str) -> list[str]:
    """The rows present at ``budget``, in the study's order."""
    return [m for m in BUDGET_ROWS if any(k[0] == m and k[1] == budget for k in agg)]


def _budget_section(budget: str, texts: list[str], agg: dict, ratios: list[dict[str, Any]],
                    costs: list[dict[str, Any]], study: list[int]) -> list[str]:
    """The tables of one budget: the default against the best other row, held-out perplexity, cost."""
    methods = _order(agg, budget)
    cost = {c["method"]: c for c in costs if c["budget"] == budget}
    share = lambda c: "" if c.get("share_of_decoder") is None else f"{c['share_of_decoder']:.1%}"  # noqa: E731
    return [
        f"## Budget {budget} of the decoder's parameters", "",
        "### lmshrink's default against the best other row", "",
        table(["text", "healed", "default ppl", "best other row", "its ppl", "ratio"],
              [[r["text"], r["healed"], _mean_sd(r["ours"], r["ours_sd"], r["seeds"]), r["best_row"],
                _mean_sd(r["baseline"], r["baseline_sd"], r["seeds"]),
                _ratio(r) + ("" if set(study) <= set(r["seeds"]) else f" (seeds {r['seeds']})")]
               for r in ratios if r["budget"] == budget]), "",
        "### Held-out perplexity", "",
        table(["method", "units", "share removed",
               *[f"{t}, {'plain' if h == 'none' else 'healed'}" for t in texts for h in ("none", "linear")]],
              [[m, cost.get(m, {}).get("units"), share(cost.get(m, {})),
                *[_cell(agg.get((m, budget, t, h))) for t in texts for h in ("none", "linear")]] for m in methods]),
        "",
        "### Cost", "",
        table(["method", "tokens", "evaluations", "validated", "seconds"],
              [[m, None if cost[m]["tokens"] is None else round(cost[m]["tokens"]), cost[m]["search_evaluations"],
                cost[m]["validation_evaluations"], cost[m]["seconds"]] for m in methods if m in cost]), "",
    ]


def render_budget(summary: dict[str, Any], agg: dict, ratios: list[dict[str, Any]],
                  costs: list[dict[str, Any]]) -> str:
    """report.md of a budget run."""
    s, first = summary["settings"], summary["seeds"][0]
    texts = list(summary["held_out"])
    held = "; ".join(f"`{name}` {h['tokens']} tokens in {h['windows']} windows (the full model scores "
                     f"**{h['perplexity']:.3f}**)" for name, h in summary["held_out"].items())
    lines = [
        f"# Removal study at budgets in parameters: {summary['model']}", "",
        f"{summary['num_units']} units ({s['granularity']}); budgets {', '.join(s['budget'])} of the decoder's "
        f"parameters. Calibration seeds {s['seeds']} (each draws {s['samples']} samples × {s['seq_len']} tokens from "
        f"{first['calibration']['source']}). Held-out: {held}. Every search (sleb, blockpruner, evopress, "
        f"surrogate-race) may spend {s['search_tokens']:,} tokens measuring candidates. "
        f"This run took {summary['total_seconds'] / 60:.1f} min"
        + (" (quick mode)" if s["quick"] else "") + "; each seed's own run: "
        + ", ".join(_seed_time(sd) for sd in summary["seeds"]) + "."
        + _refreshed(summary["seeds"], "were chosen and scored again with the code as it is now (`--refresh`; every "
                                       "other row as first run)"), "",
        "Rows in layers (block-influence, block-influence-iterative, angular, sleb, and the default at "
        "`lmshrink prune`'s own granularity) are scored in the study's units; `angular` removes the fewest "
        "consecutive layers that hold the budget, so its share may be larger. Healed: least-squares maps per run of "
        f"removed units, fitted on the calibration samples (ridge {s['ridge']}). Cells: mean held-out perplexity "
        "over the seeds (min–max across seeds); ratios: of the means [range of the per-seed ratios]; costs: means "
        "over the seeds.", "",
    ]
    for budget in s["budget"]:
        lines += _budget_section(budget, texts, agg, ratios, costs, s["seeds"])
    lines += footer(summary, "`results.csv` (every seed, row, budget, held-out text, plain and healed), "
                             "`seed-<s>.json`, `summary.json` (with the aggregates, ratios and costs).")
    return "\n".join(lines)
