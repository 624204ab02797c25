"""Aggregation over seeds, tables, plots and report.md of the removal study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..common import dump_settings, pyplot, table, write_csv, write_json
from .seed_run import BASELINES, OBJECTIVES, PIPELINES

#: lmshrink's pipelines compared with the best baseline: (row, healed), unhealed choices first; the first present of
#: each kind is the headline (the README's default command when it ran)
PLAIN_ROWS = ("default (--heal none)", "portfolio", "portfolio+surrogate")
HEALED_ROWS = ("default", "portfolio (heal-aware)", "portfolio+surrogate (heal-aware)")
#: drawn thicker in the plot
MAIN = (*PLAIN_ROWS[:1], *HEALED_ROWS[:1])


def _rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for s in summary["seeds"] for r in s["rows"]]


def aggregate(rows: list[dict[str, Any]], keys: tuple[str, ...] = ("method", "M", "healed")
              ) -> dict[tuple[Any, ...], dict[str, Any]]:
    """(method, M, healed) (or the row fields ``keys``) → mean / min / max perplexity over seeds, and mean
    costs."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = {}
    for key, rs in groups.items():
        ppl = np.array([r["perplexity"] for r in rs])
        out[key] = {"mean": float(ppl.mean()), "min": float(ppl.min()), "max": float(ppl.max()),
                    "sd": float(ppl.std(ddof=1)) if len(ppl) > 1 else 0.0, "seeds": len(rs),
                    "per_seed": {r["seed"]: r["perplexity"] for r in rs},
                    "search_evaluations": float(np.mean([r["search_evaluations"] for r in rs])),
                    "validation_evaluations": float(np.mean([r["validation_evaluations"] for r in rs])),
                    "seconds": float(np.mean([r["seconds"] for r in rs]))}
    return out


def _compare(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Means, spreads and the ratio of the means over the seeds both rows have (a row grown onto some seeds only
    is compared on those), with the range of the per-seed ratios; None when they share no seed."""
    if not ours or not theirs:
        return None
    seeds = sorted(set(ours["per_seed"]) & set(theirs["per_seed"]))
    if not seeds:
        return None
    a = np.array([ours["per_seed"][s] for s in seeds])
    b = np.array([theirs["per_seed"][s] for s in seeds])
    sd = lambda v: float(v.std(ddof=1)) if v.size > 1 else 0.0  # noqa: E731
    return {"ours": float(a.mean()), "ours_sd": sd(a), "baseline": float(b.mean()), "baseline_sd": sd(b),
            "ratio": float(a.mean() / b.mean()), "per_seed_min": float((a / b).min()),
            "per_seed_max": float((a / b).max()), "seeds": seeds}


def ratios(agg: dict, ms: list[int]) -> list[dict[str, Any]]:
    """Per M: the best baseline (lowest mean, unhealed and healed) and, for each of lmshrink's pipelines, the ratio
    of its mean to the best baseline's (unhealed choices against the unhealed baseline; healed ones against both),
    with the range of the per-seed ratios. ``plain`` / ``healed_vs_*`` hold the headline rows."""
    out = []
    for m in ms:
        base = {h: min((b for b in BASELINES if (b, m, h) in agg), key=lambda b: agg[(b, m, h)]["mean"], default=None)
                for h in ("none", "linear")}
        row: dict[str, Any] = {"M": m, "best_baseline": base["none"], "best_baseline_healed": base["linear"],
                               "pipelines": []}
        for name in PLAIN_ROWS:
            c = _compare(agg.get((name, m, "none")), agg.get((base["none"], m, "none")))
            if c:
                row["pipelines"].append({"row": name, "healed": "none", "vs": "unhealed", **c})
        for name in HEALED_ROWS:
            for vs, key in (("unhealed", (base["none"], m, "none")), ("healed", (base["linear"], m, "linear"))):
                c = _compare(agg.get((name, m, "linear")), agg.get(key))
                if c:
                    row["pipelines"].append({"row": name, "healed": "linear", "vs": vs, **c})
        plain = [p for p in row["pipelines"] if p["healed"] == "none"]
        if plain:
            row["plain"] = plain[0]
        for vs in ("unhealed", "healed"):
            healed = [p for p in row["pipelines"] if p["healed"] == "linear" and p["vs"] == vs]
            if healed:
                row[f"healed_vs_{vs}_baseline"] = healed[0]
        out.append(row)
    return out


def _cell(a: dict[str, Any] | None) -> str:
    if not a:
        return ""
    return f"{a['mean']:.2f} ({a['min']:.2f}–{a['max']:.2f})" if a["seeds"] > 1 else f"{a['mean']:.2f}"


def _order() -> list[str]:
    return [*BASELINES, *OBJECTIVES, *PIPELINES]


def write_report(out: Path, summary: dict[str, Any]) -> Path:
    """summary.json, results.csv, kd.csv, plots and report.md."""
    out = Path(out)
    rows = _rows(summary)
    s = summary["settings"]
    ms = s["remove"]
    agg = aggregate(rows)
    rat = ratios(agg, ms)
    summary["aggregate"] = [{"method": k[0], "M": k[1], "healed": k[2], **v} for k, v in agg.items()]
    summary["ratios"] = rat
    write_json(out / "summary.json", summary)
    write_csv(out / "results.csv", rows, ["seed", "method", "M", "healed", "removed", "perplexity", "loss",
                                          "loss_se", "validation_loss", "search_loss", "search_evaluations",
                                          "validation_evaluations", "seconds"])
    kd = [k for sd in summary["seeds"] for k in sd.get("kd", [])]
    if kd:
        write_csv(out / "kd.csv", kd, ["seed", "M", "method", "removed", "perplexity_linear", "perplexity_kd",
                                       "seconds"])
    plots = _plots(out, agg, ms, summary)
    path = out / "report.md"
    path.write_text(render(summary, agg, rat, kd, plots))
    return path


def _plots(out: Path, agg: dict, ms: list[int], summary: dict[str, Any]) -> list[str]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    methods = [m for m in _order() if any((m, M, "none") in agg for M in ms)]
    palette = plt.cm.tab20(np.linspace(0, 1, 20))
    for ax, healed in zip(axes, ("none", "linear")):
        for k, method in enumerate(methods):
            pts = [(M, agg[(method, M, healed)]) for M in ms if (method, M, healed) in agg]
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = np.array([p[1]["mean"] for p in pts])
            # the mean of equal perplexities can round below their min: clip, as matplotlib refuses negative errors
            err = np.clip([[p[1]["mean"] - p[1]["min"] for p in pts], [p[1]["max"] - p[1]["mean"] for p in pts]],
                          0, None)
            style = ":" if method in BASELINES else "--" if method in OBJECTIVES else "-"
            ax.errorbar(x, y, yerr=err, fmt=style, marker="os^D"[k % 4], capsize=2, color=palette[(2 * k) % 20
                        if k < 10 else (2 * k + 1) % 20], label=method, lw=2.2 if method in MAIN else 1)
        ax.axhline(summary["held_out"]["perplexity"], color="k", lw=0.8, label="full model")
        ax.set_yscale("log")
        ax.set_xticks(ms)
        ax.set_xlabel("blocks removed (M)")
        ax.set_title("removed plainly" if healed == "none" else "with linear healing")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"held-out perplexity ({summary['held_out']['tokens']} tokens), mean and range over seeds")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "perplexity_vs_m.png", dpi=120)
    plt.close(fig)
    return ["perplexity_vs_m.png"]


def _coverage(seeds: list[dict[str, Any]], ms: list[int]) -> str:
    """A sentence naming the seeds behind each M when not every seed has every M (empty otherwise)."""
    have = {m: [sd["seed"] for sd in seeds if any(r["M"] == m for r in sd["rows"])] for m in ms}
    everyone = [sd["seed"] for sd in seeds]
    partial = {m: got for m, got in have.items() if got != everyone}
    if not partial:
        return ""
    return (" Not every seed has every M: " + "; ".join(f"M = {m} from {_seeds(got)}" for m, got in partial.items())
            + " (means, spreads and ratios there are over those seeds).")


def _finite_mean(values: list[float]) -> float | None:
    """The mean of the finite values (None when there are none: a fit over too few rounds is NaN)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _seed_time(seed: dict[str, Any]) -> str:
    """``seed 0 69.4 min``, or the runs it combines: ``seed 0 69.4 min (M = 6, 8, 10) + 40.2 min (M = 4, 12)``."""
    parts = seed.get("parts") or []
    if len(parts) < 2:
        return f"seed {seed['seed']} {seed['wall_seconds'] / 60:.1f} min"
    return f"seed {seed['seed']} " + " + ".join(
        f"{p['wall_seconds'] / 60:.1f} min (M = {', '.join(map(str, p['remove']))}"
        + (f"; rows {', '.join(p['rows'])}" if p.get("rows") else "") + ")" for p in parts)


def _refreshed(seeds: list[dict[str, Any]],
               how: str = "of {seeds} were chosen again with the pipeline as it is now (`--refresh`, from each seed's "
                          "stored candidates; the other rows as first run)") -> str:
    """The sentence naming the rows ``--refresh`` chose again, ``how`` (``{seeds}`` stands for which seeds), and the
    minutes each seed's refresh took (empty if none)."""
    done = [sd for sd in seeds if (sd.get("refreshed") or {}).get("rows")]
    if not done:
        return ""
    rows = sorted({r for sd in done for r in sd["refreshed"]["rows"]})
    return (" Rows " + ", ".join(f"`{r}`" for r in rows) + " " + how.format(seeds=_seeds([sd["seed"] for sd in done]))
            + ": " + ", ".join(f"seed {sd['seed']} {sd['refreshed']['seconds'] / 60:.1f} min" for sd in done) + ".")


def render(summary: dict[str, Any], agg: dict, rat: list[dict[str, Any]], kd: list[dict[str, Any]],
           plots: list[str]) -> str:
    s = summary["settings"]
    ms = s["remove"]
    first = summary["seeds"][0]
    methods = [m for m in _order() if any((m, M, "none") in agg for M in ms)]
    kind = lambda m: "baseline" if m in BASELINES else "objective" if m in OBJECTIVES else "lmshrink"  # noqa: E731
    lines = [
        f"# Removal quality study: {summary['model']}",
        "",
        f"{summary['num_blocks']} blocks. Calibration seeds {s['seeds']} (each draws {s['samples']} samples × "
        f"{s['seq_len']} tokens from {first['calibration']['source']}); search windows: the first "
        f"{s['search_samples']} samples (what `sleb` and surrogate search measure); validation: {s['validation']} "
        f"windows of {s['seq_len']} tokens disjoint from the samples (where lmshrink's pipelines choose). Held-out: "
        f"{summary['held_out']['tokens']} tokens of text no method saw, in {summary['held_out']['windows']} windows; "
        f"the full model scores **{summary['held_out']['perplexity']:.3f}**. Run time "
        f"{summary['total_seconds'] / 60:.1f} min" + (" (quick mode)" if s["quick"] else "")
        + ("; each seed's own run: " + ", ".join(_seed_time(sd) for sd in summary["seeds"])
           if all("wall_seconds" in sd for sd in summary["seeds"]) else "")
        + "." + _refreshed(summary["seeds"]) + _coverage(summary["seeds"], ms),
        "",
        "Cells: mean held-out perplexity over the seeds, (min–max) across seeds.",
        "",
        "## lmshrink against the best baseline",
        "",
        "Each of lmshrink's pipelines against the best baseline at that M (the baseline with the lowest mean over "
        "seeds): choices made without healing against the best baseline removed plainly; heal-aware choices, "
        "healed, against the best baseline removed plainly and against the best baseline healed the same way. "
        "`default` is exactly what `lmshrink prune --remove M` chooses. Cells: ratio of the means "
        "[range of the per-seed ratios]; perplexity mean ± sd over seeds.",
        "",
        table(["M", "pipeline", "healed", "against", "pipeline ppl", "baseline ppl", "ratio"],
              [[r["M"], p["row"], p["healed"],
                f"{r['best_baseline'] if p['vs'] == 'unhealed' else r['best_baseline_healed']}"
                + (" (healed)" if p["vs"] == "healed" else ""),
                _mean_sd(p["ours"], p["ours_sd"], p["seeds"]), _mean_sd(p["baseline"], p["baseline_sd"], p["seeds"]),
                _ratio(p) + _subset(p["seeds"], s["seeds"])] for r in rat for p in r["pipelines"]]),
        "",
        *[line for healed, title, note in (
            ("none", "removed plainly", None),
            ("linear", "with linear healing", "Each choice healed by a least-squares map per run of removed layers, "
             f"folded into the weights (ridge {s['ridge']}, fitted on the {s['samples']} calibration samples)."))
          for line in (f"## Held-out perplexity, {title}", "", *([note, ""] if note else []),
                       table(["method", "kind", *[f"M={m}" for m in ms]],
                             [[m, kind(m), *[_cell(agg.get((m, M, healed))) for M in ms]] for m in methods]), "")],
        *[f"![{p}]({p})" for p in plots],
        "",
        "## Cost",
        "",
        f"Mean over seeds at each M: loss evaluations on the {s['search_samples']} search windows, on the "
        f"{s['validation']} validation windows, and seconds of the row's own work and everything it reuses "
        "(the portfolio counts the objectives and baselines it draws on).",
        "",
        table(["method", *[f"M={m} evals" for m in ms], *[f"M={m} s" for m in ms]],
              [[m, *[_evals(agg.get((m, M, "none"))) for M in ms],
                *[agg[(m, M, "none")]["seconds"] if (m, M, "none") in agg else None for M in ms]] for m in methods]),
        "",
        *_unpriced(summary),
    ]
    lines += _surrogate_against_sleb(summary, agg, ms)
    fits = [(r["M"], r["seed"], r.get("fit")) for r in _rows(summary) if r["method"] == "surrogate"
            and r["healed"] == "none" and r.get("fit")]
    if fits:
        lines += ["## Surrogate fit", "",
                  "Out-of-sample fit of the surrogate over its last 10 rounds (each round's proposals predicted "
                  "before they were measured): R² and Spearman ρ, mean over seeds.", "",
                  table(["M", "R²", "Spearman"], [[m, _finite_mean([f["r2"] for M, _, f in fits if M == m]),
                                                   _finite_mean([f["spearman"] for M, _, f in fits if M == m])]
                                                  for m in ms if any(M == m for M, _, _ in fits)]), ""]
    if kd:
        lines += ["## KD healing", "",
                  f"Knowledge distillation (LoRA, merged) from the full model on top of linear healing, "
                  f"{s['kd_steps']} steps, for the heal-aware choice.", "",
                  table(["seed", "M", "removed", "linear healing", "+ KD", "seconds"],
                        [[k["seed"], k["M"], k["removed"], k["perplexity_linear"], k["perplexity_kd"], k["seconds"]]
                         for k in kd]), ""]
    notes = [(sd["seed"], m, t) for sd in summary["seeds"] for m, t in (sd.get("portfolio_tables") or {}).items()]
    lines += ["## Removed blocks (first seed)", "",
              table(["method", *[f"M={m}" for m in ms]],
                    [[m, *[next((r["removed"] for r in first["rows"] if r["method"] == m and r["M"] == M), None)
                           for M in ms]] for m in methods]), ""]
    lines += footer(summary, "`results.csv` (every seed, method, M, plain and healed), `kd.csv`, `seed-<s>.json` "
                             "(everything one seed measured, including every portfolio candidate with its sources, "
                             f"energies and validation loss; {len(notes)} tables), `summary.json`.")
    return "\n".join(lines)


def footer(summary: dict[str, Any], files: str) -> list[str]:
    """The end of a report: the rows left out (when any), the files (``files``, a sentence), the settings, the
    command and the versions it ran with."""
    env = summary["environment"]
    skipped = {k: v for sd in summary["seeds"] for k, v in sd.get("skipped", {}).items()}
    return [
        *(["## Skipped", "", *[f"- `{k}`: {v}" for k, v in skipped.items()], ""] if skipped else []),
        "## Files", "", files, "",
        "## Settings", "", dump_settings(summary["settings"]), "",
        "Command: `" + env["command"] + "`", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; {env['cpus']} CPUs, torch threads {env.get('torch_threads')}; load average at the end "
        f"{env.get('load_average')}.", "",
    ]


def _surrogate_against_sleb(summary: dict[str, Any], agg: dict, ms: list[int]) -> list[str]:
    """The section comparing surrogate search with SLEB on the same search windows and evaluation budget (and half of
    it), over the seeds that ran surrogate search: the search loss each found, and held-out perplexity plain and
    healed with the ratio to SLEB's (empty when either is missing)."""
    search: dict[tuple[str, int], dict[int, float]] = {}
    for r in _rows(summary):
        if r["healed"] == "none" and r["method"] in ("sleb", "surrogate", "surrogate@half"):
            search.setdefault((r["method"], r["M"]), {})[r["seed"]] = r["search_loss"]
    rows = []
    for m in ms:
        seeds = sorted(set(search.get(("surrogate", m), {})) & set(search.get(("sleb", m), {})))
        if not seeds:
            continue
        loss = [f"{np.mean([search[(k, m)][s] for s in seeds]):.4f}" if set(seeds) <= set(search.get((k, m), {}))
                else "" for k in ("sleb", "surrogate", "surrogate@half")]
        cells = []
        for healed in ("none", "linear"):
            compared = [_compare(agg.get((row, m, healed)), agg.get(("sleb", m, healed)))
                        for row in ("surrogate", "surrogate@half")]
            cells += [next((f"{c['baseline']:.2f}" for c in compared if c), ""),
                      *[f"{c['ours']:.2f} ({_ratio(c)})" if c else "" for c in compared]]
        rows.append([m, ", ".join(map(str, seeds)), agg[("sleb", m, "none")]["search_evaluations"], *loss, *cells])
    if not rows:
        return []
    return ["## Surrogate search against SLEB", "",
            "Both search the same windows (the first search samples) with the same number of loss evaluations "
            "(SLEB's; `surrogate@half` half of them). Over the seeds that ran surrogate search: the search loss of "
            "the chosen set on those windows (mean), then held-out perplexity, plainly removed and linearly healed, "
            "with the ratio to SLEB's mean [range of per-seed ratios].", "",
            table(["M", "seeds", "evaluations", "SLEB search loss", "surrogate", "surrogate@half", "SLEB held-out",
                   "surrogate", "surrogate@half", "SLEB healed", "surrogate healed", "surrogate@half healed"], rows),
            ""]


def _unpriced(summary: dict[str, Any]) -> list[str]:
    """A sentence naming the rows whose measurement was read from a disk-cache entry that kept no seconds (their
    seconds leave it out), or nothing."""
    seeds: dict[str, set[int]] = {}
    for r in _rows(summary):
        if r.get("cached_unpriced"):
            seeds.setdefault(r["method"], set()).add(r["seed"])
    if not seeds:
        return []
    return ["Seconds without the measurement (read from a disk-cache entry of an earlier run that did not keep "
            "what it cost): " + "; ".join(f"`{m}` on {_seeds(sorted(s))}" for m, s in seeds.items()) + ".", ""]


def _ratio(r: dict[str, Any] | None) -> str:
    """The ratio of the means with the range of the per-seed ratios (no range for a single seed)."""
    if not r:
        return ""
    if len(r["seeds"]) == 1:
        return f"{r['ratio']:.3f}"
    return f"{r['ratio']:.3f} [{r['per_seed_min']:.3f}–{r['per_seed_max']:.3f}]"


def _mean_sd(mean: float, sd: float, seeds: list[int]) -> str:
    """Mean ± sd over the compared seeds (the mean alone for one seed: it has no spread)."""
    return f"{mean:.2f} ± {sd:.2f}" if len(seeds) > 1 else f"{mean:.2f}"


def _subset(compared: list[int], study: list[int]) -> str:
    """Which seeds a comparison covers, when a row grown onto some seeds only leaves out others."""
    if set(study) <= set(compared):
        return ""
    return f" ({_seeds(compared)})"


def _seeds(seeds: list[int]) -> str:
    """``seed 0``, ``seeds 0, 2`` (``seeds none`` for no seed)."""
    return f"seed{'' if len(seeds) == 1 else 's'} {', '.join(map(str, seeds)) or 'none'}"


def _evals(a: dict[str, Any] | None) -> str:
    if not a:
        return ""
    parts = [f"{a['search_evaluations']:.0f}" if a["search_evaluations"] else "0"]
    if a["validation_evaluations"]:
        parts.append(f"+{a['validation_evaluations']:.0f}v")
    return " ".join(parts)

