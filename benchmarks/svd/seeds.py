"""The SVD benchmark over several calibration seeds, summarised as mean and per-seed range per method and ratio.

    python benchmarks/svd/seeds.py --seeds 0 1 2 --ratios 1.0 0.8 0.6 --data mix --eval-data pydoc \\
        --heldout-data literature --methods uniform fermigrad milp-fisher milp-fisher+seq+pivga \\
        --out benchmarks/reference/svd

Every other flag goes to ``run.py`` unchanged. Each seed runs in full (its own calibration draw, whitening and
allocations) into ``OUT/seed-N``; a seed whose folder already holds ``results.csv`` is read, not run again, so an
interrupted study resumes. ``--summarise`` only rewrites the summary from the seed folders. Writes
``OUT/summary.json`` (per method, ratio and held-out text: mean, min, max, per-seed values and the ratio to the
dense model; per method and ratio the mean solve and refit seconds; per ratio and text the best row) and
``OUT/report.md`` (the same as tables).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="calibration seeds (default 0 1 2)")
    p.add_argument("--out", required=True, help="study folder: seed-N/ per seed, summary.json, report.md")
    p.add_argument("--summarise", action="store_true", help="only summarise the seed folders already there")
    args, rest = p.parse_known_args(argv)
    if any(a == "--seed" or a.startswith("--seed=") for a in rest):
        p.error("give the seeds with --seeds, not --seed")
    return args, rest


def _float(value: str) -> float | None:
    return float(value) if value not in ("", "None") else None


def read_seed(folder: Path) -> list[dict[str, Any]]:
    """The rows of one seed's ``results.csv``, numbers as floats."""
    with open(folder / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (v if k == "method" else _float(v)) for k, v in r.items()} for r in rows]


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "per_seed": values}


def summarise(by_seed: dict[int, list[dict[str, Any]]], texts: tuple[str, str | None]) -> dict[str, Any]:
    """Mean, range and ratio to dense per (method, ratio, text); costs per (method, ratio); best row per ratio/text.

    The dense perplexity of a text is the same model on the same tokens for every seed (the held-out tokens do not
    depend on the calibration seed); its mean over the seeds is used all the same."""
    seeds = sorted(by_seed)
    columns = {texts[0]: "perplexity", **({texts[1]: "heldout_perplexity"} if texts[1] else {})}
    dense: dict[str, float] = {}
    if not all(any(r["ratio"] >= 1.0 for r in by_seed[s]) for s in seeds):
        raise SystemExit("a seed has no dense row: give --ratios with 1.0 among them (the dense model's score)")
    for text, col in columns.items():
        dense[text] = statistics.fmean(r[col] for s in seeds for r in by_seed[s] if r["ratio"] >= 1.0)
    keys = list(dict.fromkeys((r["method"], r["ratio"]) for s in seeds for r in by_seed[s] if r["ratio"] < 1.0))
    rows, costs = [], []
    for method, ratio in keys:
        found = [next((r for r in by_seed[s] if r["method"] == method and r["ratio"] == ratio), None) for s in seeds]
        if any(f is None for f in found):
            continue  # a method not run on every seed is left out of the summary
        for text, col in columns.items():
            spread = _spread([f[col] for f in found])
            rows.append({"method": method, "ratio": ratio, "text": text, **spread,
                         "vs_dense": spread["mean"] / dense[text]})
        costs.append({"method": method, "ratio": ratio,
                      "solve_s": statistics.fmean(f["solve_s"] for f in found),
                      "refit_s": statistics.fmean(f["refit_s"] for f in found),
                      "heal_s": statistics.fmean(f.get("heal_s") or 0.0 for f in found),  # absent: run before +kd
                      "kept_ratio": statistics.fmean(f["kept_ratio"] for f in found)})
    best = []
    for ratio in dict.fromkeys(r for _, r in keys):
        for text in columns:
            here = [r for r in rows if r["ratio"] == ratio and r["text"] == text]
            if here:
                b = min(here, key=lambda r: r["mean"])
                best.append({"ratio": ratio, "text": text, "method": b["method"], "mean": b["mean"],
                             "vs_dense": b["vs_dense"]})
    return {"seeds": seeds, "texts": list(columns), "dense": dense, "rows": rows, "costs": costs, "best": best}


def report(summary: dict[str, Any], settings: list[str]) -> str:
    texts = summary["texts"]
    lines = ["# SVD compression over calibration seeds", "",
             f"Seeds {', '.join(map(str, summary['seeds']))}; `run.py {' '.join(settings)}`. Held-out perplexity, "
             "mean over the seeds (per-seed range; ratio to the dense model). Dense: "
             + ", ".join(f"{t} {summary['dense'][t]:.2f}" for t in texts) + ".", ""]
    costs = {(c["method"], c["ratio"]): c for c in summary["costs"]}
    head = "| ratio | method | kept | " + " | ".join(texts) + " | solve s | refit s | heal s |"
    lines += [head, "|---|---|---|" + "---|" * len(texts) + "---|---|---|"]
    by = {(r["method"], r["ratio"], r["text"]): r for r in summary["rows"]}
    for method, ratio in costs:
        cells = []
        for t in texts:
            r = by[method, ratio, t]
            cells.append(f"{r['mean']:.2f} ({r['min']:.2f}–{r['max']:.2f}; {r['vs_dense']:.2f}×)")
        c = costs[method, ratio]
        lines.append(f"| {ratio:.2f} | {method} | {c['kept_ratio']:.4f} | " + " | ".join(cells)
                     + f" | {c['solve_s']:.0f} | {c['refit_s']:.0f} | {c.get('heal_s', 0.0):.0f} |")
    lines += ["", "Best row per ratio and text:", "", "| ratio | text | method | perplexity | × dense |",
              "|---|---|---|---|---|"]
    lines += [f"| {b['ratio']:.2f} | {b['text']} | {b['method']} | {b['mean']:.2f} | {b['vs_dense']:.3f} |"
              for b in summary["best"]]
    return "\n".join(lines) + "\n"


def _flag(rest: list[str], name: str) -> str | None:
    """The first value of ``--name`` among the flags passed through (None when absent)."""
    for i, a in enumerate(rest):
        if a == name and i + 1 < len(rest):
            return rest[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(argv)
    from benchmarks.svd import run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[int, float] = {}
    for seed in args.seeds:
        folder = out / f"seed-{seed}"
        if (folder / "results.csv").exists():
            run.log(f"seed {seed}: read from {folder}")
            continue
        if args.summarise:
            continue
        t = time.perf_counter()
        run.main([*rest, "--seed", str(seed), "--out", str(folder)])
        seconds[seed] = time.perf_counter() - t
    by_seed = {s: read_seed(out / f"seed-{s}") for s in args.seeds if (out / f"seed-{s}" / "results.csv").exists()}
    if not by_seed:
        raise SystemExit(f"no seed folder with results.csv under {out}")
    first = _flag(rest, "--eval-data") or _flag(rest, "--data") or "pydoc"
    summary = summarise(by_seed, (first, _flag(rest, "--heldout-data")))
    previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    summary["seconds"] = {**previous.get("seconds", {}), **{str(k): v for k, v in seconds.items()}}
    summary["settings"] = rest
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "report.md").write_text(report(summary, rest))
    print(report(summary, rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
