"""Healing that travels: the default pipeline calibrated on pydoc alone and on ``mix`` (pydoc and English prose),
scored on pydoc's held-out split, on ``prose`` and on ``literature`` (a domain no calibration reads).

    python -m benchmarks.removal.travel [--model M] [--remove 6] [--seeds 0,1,2] [--out DIR]
    python -m benchmarks.removal.travel --svd 0.8 [--solver milp --objective-option error_weights=fisher]

Per seed and calibration text: ``lmshrink prune --remove M --data TEXT --seed S --eval-data prose literature``
(everything else at its default), the removed blocks and the held-out perplexity before removal, after removal
and after healing on each text; with ``--svd RATIO``, ``lmshrink svd --ratio RATIO`` the same way (no healing:
"after" is the compressed model). ``summary.json`` holds the rows, the mean and range over the seeds per text and
calibration, and the ratio mix / pydoc of the final perplexities; ``report.md`` the table.
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


def run_one(model: str | None, remove: str, data: str, seed: int, svd: dict[str, Any] | None = None) -> dict[str, Any]:
    """One prune run (or, with ``svd``, an svd run with those settings): its removal and perplexities per text and
    stage (before, unhealed, after)."""
    from lmshrink import prune, svd_compress

    t = time.perf_counter()
    common = dict(data=data, seed=seed, eval_data=list(OTHER_TEXTS), save=False, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        report = (svd_compress(model, **svd, **common).report if svd is not None else
                  prune(model, remove=remove, out=Path(tmp) / "run", **common).report)
    healing = report.healing
    texts = {"pydoc": {"before": report.perplexity_before["perplexity"],
                       "unhealed": healing.perplexity_unhealed["perplexity"] if healing else None,
                       "after": report.perplexity_after["perplexity"],
                       "tokens": report.perplexity_after["tokens"]}}
    for name, stages in (report.other_texts or {}).items():
        texts[name] = {stage: stages[stage]["perplexity"] if stage in stages else None
                       for stage in ("before", "unhealed", "after")} | {"tokens": stages["after"]["tokens"]}
    removed = report.removed_indices if svd is None else report.params["kept_ratio_stored"]
    return {"calibration": data, "seed": seed, "removed": removed, "texts": texts, "seconds": time.perf_counter() - t}


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
                                  "max": float(max(got)), "seeds": len(got),
                                  "removed_mean": float(np.mean(removed)) if None not in removed else None,
                                  "before": float(np.mean([r["texts"][text]["before"] for r in rows]))})
        if len(means) == 2:
            out["ratios"].append({"text": text, "mix_over_pydoc": means["mix"] / means["pydoc"]})
    return out


def render(summary: dict[str, Any]) -> str:
    """report.md: the healed perplexity per text and calibration (mean, range), and the ratio."""
    s = summary["settings"]
    svd = bool(s.get("svd"))  # no healing: no stage between dense and compressed
    rows = [[h["text"], h["calibration"], h.get("before"), *([] if svd else [h["removed_mean"]]), h["mean"],
             f"{h['min']:.2f}–{h['max']:.2f}"] for h in summary["aggregate"]["healed"]]
    ratios = [[r["text"], r["mix_over_pydoc"]] for r in summary["aggregate"]["ratios"]]
    if svd:
        title = f"# Compression that travels: `lmshrink svd {_flags(s['svd'])}`, seeds {s['seeds']}"
        what = "Held-out perplexity dense and compressed, mean over the seeds (range of the compressed)."
        columns = ["text", "calibration", "dense", "compressed", "range"]
    else:
        title = f"# Healing that travels: `lmshrink prune --remove {s['remove']}`, seeds {s['seeds']}"
        what = ("Held-out perplexity dense, after removal and after linear healing, mean over the seeds (range of the "
                "healed).")
        columns = ["text", "calibration", "dense", "removed", "healed", "range"]
    return "\n".join([title, "", what, "", table(columns, rows, digits=4), "",
                      table(["text", "final mix / pydoc"], ratios, digits=3), ""])


def _flags(svd: dict[str, Any]) -> str:
    """The svd command line of ``svd`` settings."""
    flags = [f"--ratio {svd['ratio']}"] + ([f"--solver {svd['solver']}"] if "solver" in svd else [])
    return " ".join(flags + [f"--objective-option {k}={v}" for k, v in svd.get("objective_options", {}).items()])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.removal.travel", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model (default: the embedded default)")
    p.add_argument("--remove", default="6", help="what prune removes (default 6)")
    p.add_argument("--seeds", default="0,1,2", help="calibration seeds (default 0,1,2)")
    p.add_argument("--svd", type=float, default=None, metavar="RATIO",
                   help="run lmshrink svd --ratio RATIO instead of prune")
    p.add_argument("--solver", default=None, help="svd's rank solver (default: svd's)")
    p.add_argument("--objective-option", action="append", default=[], metavar="KEY=VALUE",
                   help="svd's objective option (repeatable)")
    p.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_OUT}, or {DEFAULT_OUT}-svd)")
    a = p.parse_args(argv)
    if (a.solver or a.objective_option) and a.svd is None:
        p.error("--solver and --objective-option apply to --svd runs")
    seeds = [int(s) for s in a.seeds.split(",")]
    svd = None
    if a.svd is not None:
        svd = {"ratio": a.svd, **({"solver": a.solver} if a.solver else {}),
               "objective_options": dict(o.split("=", 1) for o in a.objective_option)}
    out = Path(a.out or (DEFAULT_OUT + ("-svd" if svd else "")))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    settings = {"model": a.model, "remove": a.remove, "svd": svd, "seeds": seeds, "calibrations": list(CALIBRATIONS),
                "other_texts": list(OTHER_TEXTS)}
    for seed in seeds:
        for cal in CALIBRATIONS:
            rows.append(run_one(a.model, a.remove, cal, seed, svd))
            print(f"seed {seed}, {cal}: removed {rows[-1]['removed']}, final "
                  + ", ".join(f"{k} {v['after']:.3f}" for k, v in rows[-1]["texts"].items())
                  + f" ({rows[-1]['seconds']:.0f} s)", flush=True)
            summary = {"settings": settings, "rows": rows, "aggregate": aggregate(rows),
                       "environment": environment("benchmarks.removal.travel")}
            write_json(out / "summary.json", summary)
            (out / "report.md").write_text(render(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
