"""Healing that travels: the default pipeline calibrated on pydoc alone and on ``mix`` (pydoc and English prose),
scored on pydoc's held-out split, on ``prose`` and on ``literature`` (a domain no calibration reads).

    python -m benchmarks.removal.travel [--model M] [--remove 6] [--seeds 0,1,2] [--out DIR]

Per seed and calibration text: ``lmshrink prune --remove M --data TEXT --seed S --eval-data prose literature``
(everything else at its default), the removed blocks and the held-out perplexity before removal, after removal
and after healing on each text. ``summary.json`` holds the rows, the mean and range over the seeds per text and
calibration, and the ratio mix / pydoc of the healed perplexities; ``report.md`` the table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..common import environment, table, write_json

#: the calibration texts compared, and the texts scored (the first is each calibration's own held-out split)
CALIBRATIONS = ("pydoc", "mix")
OTHER_TEXTS = ("prose", "literature")
DEFAULT_OUT = "benchmarks/reference/travel"


def run_one(model: str | None, remove: str, data: str, seed: int) -> dict[str, Any]:
    """One prune run: its removal and perplexities per text and stage (before, unhealed, after)."""
    from lmshrink import prune

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = prune(model, remove=remove, data=data, seed=seed, eval_data=list(OTHER_TEXTS), save=False,
                       progress=False, out=Path(tmp) / "run").report
    healing = report.healing
    texts = {"pydoc": {"before": report.perplexity_before["perplexity"],
                       "unhealed": healing.perplexity_unhealed["perplexity"] if healing else None,
                       "after": report.perplexity_after["perplexity"],
                       "tokens": report.perplexity_after["tokens"]}}
    for name, stages in (report.other_texts or {}).items():
        texts[name] = {stage: v["perplexity"] for stage, v in stages.items()} | {"tokens": stages["after"]["tokens"]}
    return {"calibration": data, "seed": seed, "removed": report.removed_indices, "texts": texts,
            "seconds": time.perf_counter() - t}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and range over the seeds of each calibration's healed perplexity per text, and mix / pydoc."""
    out: dict[str, Any] = {"healed": [], "ratios": []}
    for text in ("pydoc", *OTHER_TEXTS):
        means = {}
        for cal in CALIBRATIONS:
            got = [r["texts"][text]["after"] for r in rows if r["calibration"] == cal]
            removed = [r["texts"][text]["unhealed"] for r in rows if r["calibration"] == cal]
            if not got:
                continue
            means[cal] = float(np.mean(got))
            out["healed"].append({"text": text, "calibration": cal, "mean": means[cal], "min": float(min(got)),
                                  "max": float(max(got)), "removed_mean": float(np.mean(removed)), "seeds": len(got)})
        if len(means) == 2:
            out["ratios"].append({"text": text, "mix_over_pydoc": means["mix"] / means["pydoc"]})
    return out


def render(summary: dict[str, Any]) -> str:
    """report.md: the healed perplexity per text and calibration (mean, range), and the ratio."""
    rows = [[h["text"], h["calibration"], h["removed_mean"], h["mean"], f"{h['min']:.2f}–{h['max']:.2f}"]
            for h in summary["aggregate"]["healed"]]
    ratios = [[r["text"], r["mix_over_pydoc"]] for r in summary["aggregate"]["ratios"]]
    s = summary["settings"]
    return "\n".join([
        f"# Healing that travels: `lmshrink prune --remove {s['remove']}`, seeds {s['seeds']}", "",
        "Held-out perplexity after removal and after linear healing, mean over the seeds (range of the healed).", "",
        table(["text", "calibration", "removed", "healed", "range"], rows, digits=4), "",
        table(["text", "healed mix / pydoc"], ratios, digits=3), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.removal.travel", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model (default: the embedded default)")
    p.add_argument("--remove", default="6", help="what prune removes (default 6)")
    p.add_argument("--seeds", default="0,1,2", help="calibration seeds (default 0,1,2)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    settings = {"model": a.model, "remove": a.remove, "seeds": seeds, "calibrations": list(CALIBRATIONS),
                "other_texts": list(OTHER_TEXTS)}
    for seed in seeds:
        for cal in CALIBRATIONS:
            rows.append(run_one(a.model, a.remove, cal, seed))
            print(f"seed {seed}, {cal}: removed {rows[-1]['removed']}, healed "
                  + ", ".join(f"{k} {v['after']:.3f}" for k, v in rows[-1]["texts"].items())
                  + f" ({rows[-1]['seconds']:.0f} s)", flush=True)
            summary = {"settings": settings, "rows": rows, "aggregate": aggregate(rows),
                       "environment": environment("benchmarks.removal.travel")}
            write_json(out / "summary.json", summary)
            (out / "report.md").write_text(render(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
