"""Removal quality study: which blocks each objective and each baseline removes, and how good the result is.

For every total M in ``--remove`` the study records, on the same held-out tokens, the perplexity of the model
chosen by

- each objective (``fisher``, ``fisher`` with the first-order term, ``pairs``), from its lowest-energy state, and
  re-ranked (the lowest measured calibration loss among its K lowest states);
- each baseline: the one-shot score objectives ``block-influence`` and ``norm-ratio`` (their lowest state), and
  the removal methods ``block-influence-iterative``, ``angular`` and ``sleb``;

plus, for each objective, the Spearman correlation between the energy and the measured calibration loss over its
K lowest states. Every measurement (gate gradients, pair losses, hidden states) is made once per run; models are
scored with blocks really removed from a copy of the loaded model (no reload).

Run ``python -m benchmarks.removal`` (see benchmarks/README.md); ``--quick`` is the CI-sized version.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..common import Log, dump_settings, environment, pyplot, spearman, study_main, table, write_csv, write_json

#: label → (objective, objective options); the labels are the rows of the report
OBJECTIVES: dict[str, tuple[str, dict[str, Any]]] = {
    "fisher": ("fisher", {}),
    "fisher-fo": ("fisher", {"first_order": True}),
    "pairs": ("pairs", {}),
    "block-influence": ("block-influence", {}),
    "norm-ratio": ("norm-ratio", {}),
}
#: objectives that also get a "+rerank" row (the baselines' score objectives are reported as they are)
RERANKED = ("fisher", "fisher-fo", "pairs")
#: removal methods (lmshrink.baselines)
METHODS = ("block-influence-iterative", "angular", "sleb")
#: objective labels that are baselines (the rest are lmshrink's objectives)
BASELINE_OBJECTIVES = ("block-influence", "norm-ratio")
#: above this many feasible states the K lowest come from simulated annealing instead of enumeration
EXACT_LIMIT = 6_000_000

FULL = {"samples": 64, "seq_len": 128, "loss_samples": 4, "eval_tokens": 4096, "top_k": 10, "remove": "2,4,6,8"}
QUICK = {"samples": 8, "seq_len": 64, "loss_samples": 2, "eval_tokens": 1024, "top_k": 5, "remove": "2,4"}


@dataclass
class Settings:
    """Everything that defines a run (written into the report)."""

    model: str | None = None
    data: str | None = None
    out: str = "benchmarks/results/removal"
    remove: list[int] = field(default_factory=lambda: [2, 4, 6, 8])
    granularity: str | None = None
    samples: int = 64
    seq_len: int = 128
    loss_samples: int = 4
    eval_tokens: int = 4096
    eval_window: int = 512
    top_k: int = 10
    pairs: str = "auto"
    only: list[str] | None = None
    seed: int = 0
    quick: bool = False


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m benchmarks.removal", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory, hub id or .gguf (default: embedded SmolLM2)")
    p.add_argument("--data", default=None, help="calibration/evaluation text (default: pydoc topics)")
    p.add_argument("--out", default="benchmarks/results/removal", help="output folder")
    p.add_argument("--remove", default=None, help="totals M to study, comma-separated (default 2,4,6,8; quick 2,4)")
    p.add_argument("--granularity", default=None, help="layer or sublayer (default: the adapter's first)")
    p.add_argument("--samples", type=int, default=None, help="calibration samples (default 64; quick 8)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per calibration sample (default 128; quick 64)")
    p.add_argument("--loss-samples", type=int, default=None,
                   help="first calibration samples used by every loss measurement: pairs, sleb, re-ranking, "
                        "Spearman (default 4; quick 2)")
    p.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens for perplexity (default 4096)")
    p.add_argument("--top-k", type=int, default=None, help="K lowest states per objective (default 10; quick 5)")
    p.add_argument("--pairs", choices=("auto", "on", "off"), default="auto",
                   help="run the pairs objective (N(N+1)/2 loss measurements); auto: off in --quick when N > 12")
    p.add_argument("--only", default=None, help="comma-separated subset of rows (e.g. fisher,sleb)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="CI-sized run (a few minutes on 2 CPU cores)")
    a = p.parse_args(argv)
    base = QUICK if a.quick else FULL
    pick = lambda v, k: base[k] if v is None else v  # noqa: E731
    return Settings(
        model=a.model, data=a.data, out=a.out,
        remove=sorted({int(m) for m in str(pick(a.remove, "remove")).split(",") if m.strip()}),
        granularity=a.granularity, samples=pick(a.samples, "samples"), seq_len=pick(a.seq_len, "seq_len"),
        loss_samples=pick(a.loss_samples, "loss_samples"), eval_tokens=pick(a.eval_tokens, "eval_tokens"),
        top_k=pick(a.top_k, "top_k"), pairs=a.pairs, only=[s.strip() for s in a.only.split(",")] if a.only else None,
        seed=a.seed, quick=a.quick,
    )


class Measurements:
    """Memoised measured calibration losses (gated, on the loss samples) and perplexities (blocks removed)."""

    def __init__(self, model: Any, adapter: Any, granularity: str, loss_ids: Any, eval_ids: Any, window: int) -> None:
        self.model, self.adapter, self.granularity = model, adapter, granularity
        self.loss_ids, self.eval_ids, self.window = loss_ids, eval_ids, window
        self.losses: dict[tuple[int, ...], float] = {}
        self.ppl: dict[tuple[int, ...], dict[str, float]] = {}
        self.seconds = {"loss": 0.0, "perplexity": 0.0}

    def seed_from_pairs(self, problem: Any) -> None:
        """Take the single and pair losses the pairs objective measured on the same samples: its problem has
        linear d_i and couplings (d_ij − d_i − d_j)/2, so L({i}) = L + d_i and L({i, j}) = L + d_i + d_j + 2Q_ij."""
        base = float(problem.metadata["base_loss"])
        d, q = problem.linear, problem.quadratic
        self.losses.setdefault((), base)
        for i in range(len(d)):
            self.losses.setdefault((i,), base + float(d[i]))
            for j in range(i + 1, len(d)):
                self.losses.setdefault((i, j), base + float(d[i] + d[j] + 2 * q[i, j]))

    def loss(self, removed: Any) -> float:
        from lmshrink.evaluate.loss import calibration_loss

        key = tuple(sorted(int(i) for i in removed))
        if key not in self.losses:
            t = time.perf_counter()
            self.losses[key] = calibration_loss(self.model, self.loss_ids, adapter=self.adapter, removed=key,
                                                granularity=self.granularity)
            self.seconds["loss"] += time.perf_counter() - t
        return self.losses[key]

    def perplexity(self, removed: Any) -> dict[str, float]:
        from lmshrink.evaluate.perplexity import perplexity

        key = tuple(sorted(int(i) for i in removed))
        if key not in self.ppl:
            t = time.perf_counter()
            model = self.model
            if key:
                model = self.adapter.remove(copy.deepcopy(self.model), key, self.granularity)
            self.ppl[key] = perplexity(model, self.eval_ids, window=self.window, progress=False)
            del model
            self.seconds["perplexity"] += time.perf_counter() - t
        return self.ppl[key]


def lowest_states(problem: Any, k: int, seed: int) -> tuple[list[tuple[list[int], float]], str]:
    """The k lowest-energy feasible states (exact enumeration when small enough, else annealing)."""
    from lmshrink.plugins import get_solver
    from lmshrink.solvers.exact import count_feasible

    if count_feasible(problem) <= EXACT_LIMIT:
        name, opts = "exact", {}
    else:
        name, opts = "anneal", {"num_reads": max(64, 8 * k)}
    sols = get_solver(name, problem).solve(problem, num_solutions=k, seed=seed, **opts)
    return [(list(s.indices), float(s.energy)) for s in sols], name


def run(settings: Settings, log: Log | None = None) -> dict[str, Any]:
    """Run the study and write its files under ``settings.out``; returns the summary (also in summary.json)."""
    import torch

    from lmshrink.baselines import get_method
    from lmshrink.core.errors import LmshrinkError
    from lmshrink.core.removal import removal_constraints, with_constraints
    from lmshrink.data import evaluation_ids, load_texts, make_calibration
    from lmshrink.models import load_model
    from lmshrink.plugins import find_adapter, get_objective

    log = log or Log()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    log(f"loading model {settings.model or '(embedded default)'}")
    loaded = load_model(settings.model)
    model, tok = loaded.model, loaded.tokenizer
    model.eval()
    adapter = find_adapter(model)
    gran = settings.granularity or adapter.granularities[0]
    blocks = adapter.blocks(model, gran)
    n = len(blocks)
    ms = [m for m in settings.remove if 0 < m < n]
    if not ms:
        raise LmshrinkError(f"No M in {settings.remove} fits a model with {n} blocks.")
    texts = load_texts(settings.data)
    calib = make_calibration(tok, texts, settings.samples, settings.seq_len, settings.seed)
    loss_ids = calib.input_ids[: settings.loss_samples]
    eval_ids = evaluation_ids(tok, texts, settings.eval_tokens)
    meas = Measurements(model, adapter, gran, loss_ids, eval_ids, min(settings.eval_window, len(eval_ids)))
    log(f"{loaded.name}: {n} blocks ({gran}); calibration {calib.num_samples}×{calib.seq_len}; loss samples "
        f"{loss_ids.shape[0]}; {len(eval_ids)} held-out tokens; M = {ms}")

    wanted = lambda label: settings.only is None or label in settings.only  # noqa: E731
    skipped: dict[str, str] = {}
    use_pairs = settings.pairs == "on" or (settings.pairs == "auto" and not (settings.quick and n > 12))
    if not use_pairs and wanted("pairs"):
        skipped["pairs"] = (f"off (--pairs {settings.pairs}" + (", quick mode with N > 12" if settings.quick else "")
                            + f"): it needs N(N+1)/2 = {n * (n + 1) // 2} loss measurements")

    # --- objectives: one problem each, then its K lowest states for every M ---------------------------------------
    states_rows: list[dict[str, Any]] = []
    choice: dict[tuple[str, int], dict[str, Any]] = {}  # (row label, M) → {"removed", "energy", ...}
    spear: list[dict[str, Any]] = []
    costs: dict[str, dict[str, Any]] = {}
    for label, (name, opts) in OBJECTIVES.items():
        if not (wanted(label) or wanted(f"{label}+rerank")) or label in skipped:
            continue
        objective = get_objective(name)
        o = dict(opts)
        if "granularity" in objective.options:
            o["granularity"] = gran
        if "progress" in objective.options:
            o["progress"] = False
        if name == "pairs":
            o["samples"] = settings.loss_samples
        log(f"objective {label}: building the problem")
        t = time.perf_counter()
        try:
            problem = objective.build(model, adapter, calib, **o)
        except LmshrinkError as exc:
            skipped[label] = str(exc)
            log(f"objective {label}: skipped ({exc})")
            continue
        costs[label] = {"seconds": time.perf_counter() - t, "cached": bool(problem.metadata.get("cached_measurement"))}
        if name == "pairs":
            meas.seed_from_pairs(problem)
        for m in ms:
            constrained = with_constraints(problem, removal_constraints(blocks, {None: m}))
            constrained.save(out / "problems" / f"{label}_M{m}.json")
            t = time.perf_counter()
            states, solver = lowest_states(constrained, settings.top_k, settings.seed)
            solve_s = time.perf_counter() - t
            losses = [meas.loss(idx) for idx, _ in states]
            for rank, ((idx, e), loss) in enumerate(zip(states, losses), 1):
                states_rows.append({"objective": label, "M": m, "rank": rank, "removed": idx, "energy": e,
                                    "loss": loss, "solver": solver})
            rho = spearman([e for _, e in states], losses)
            spear.append({"objective": label, "M": m, "K": len(states), "spearman": rho, "solver": solver})
            choice[(label, m)] = {"removed": states[0][0], "energy": states[0][1], "solve_s": solve_s}
            if label in RERANKED:
                best = int(np.argmin(losses))
                choice[(f"{label}+rerank", m)] = {"removed": states[best][0], "energy": states[best][1],
                                                  "rank": best + 1}
            log(f"objective {label}, M={m}: {solver} top-{len(states)} in {solve_s:.1f} s; chose {states[0][0]}; "
                f"Spearman {rho:.3f}")

    # --- removal methods ---------------------------------------------------------------------------------------
    for name in METHODS:
        if not wanted(name):
            continue
        method = get_method(name)
        if name == "sleb":  # same samples as every other loss measurement: share the memo
            method = type(method)(loss=meas.loss)
        log(f"method {name}")
        t = time.perf_counter()
        cached = None
        try:
            if method.nested:
                sel = method.select(model, adapter, calib, {None: max(ms)}, granularity=gran,
                                    **({"samples": settings.loss_samples} if name == "sleb" else {}))
                for m in ms:
                    choice[(name, m)] = {"removed": sorted(sel.order[:m])}
            else:
                for m in ms:
                    sel = method.select(model, adapter, calib, {None: m}, granularity=gran)
                    choice[(name, m)] = {"removed": sel.best, "score": (sel.scores or [None])[0]}
                    cached = sel.info.get("cached_measurement")
        except LmshrinkError as exc:
            skipped[name] = str(exc)
            log(f"method {name}: skipped ({exc})")
            continue
        costs[name] = {"seconds": time.perf_counter() - t,
                       "cached": cached if not method.nested else sel.info.get("cached_measurement")}
        log(f"method {name}: {costs[name]['seconds']:.1f} s; " +
            "; ".join(f"M={m}: {choice[(name, m)]['removed']}" for m in ms))

    # --- perplexity of every chosen model (and the full one) ------------------------------------------------------
    log("perplexity of the full model and of every chosen removal")
    full = meas.perplexity(())
    labels = [lab for lab in _row_order() if any((lab, m) in choice for m in ms)]
    rows = []
    for lab in labels:
        for m in ms:
            c = choice.get((lab, m))
            if c is None:
                continue
            ppl = meas.perplexity(c["removed"])
            rows.append({"method": lab, "kind": _kind(lab), "M": m, "removed": c["removed"],
                         "perplexity": ppl["perplexity"], "nll": ppl["nll"], "tokens": ppl["tokens"],
                         "calibration_loss": meas.loss(c["removed"]), "energy": c.get("energy"),
                         "candidate_rank": c.get("rank")})
    log(f"{len(meas.ppl)} perplexities and {len(meas.losses)} losses measured")

    summary = {
        "settings": asdict(settings) | {"granularity": gran},
        "model": loaded.name, "num_blocks": n, "blocks": [b.to_dict() for b in blocks],
        "calibration": {"source": calib.source, **calib.info}, "eval_tokens": int(full["tokens"]),
        "full_model": full, "base_loss": meas.loss(()), "results": rows, "spearman": spear, "costs": costs,
        "skipped": skipped, "measurement_seconds": meas.seconds, "total_seconds": log.elapsed,
        "environment": environment("benchmarks.removal"),
    }
    write_csv(out / "results.csv", rows, ["method", "kind", "M", "removed", "perplexity", "nll", "tokens",
                                          "calibration_loss", "energy", "candidate_rank"])
    write_csv(out / "states.csv", states_rows, ["objective", "M", "rank", "removed", "energy", "loss", "solver"])
    write_csv(out / "spearman.csv", spear, ["objective", "M", "K", "spearman", "solver"])
    plots = make_plots(out, summary, states_rows, n)
    summary["plots"] = plots
    summary["total_seconds"] = log.elapsed
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(render(summary, states_rows))
    log(f"wrote {out}/report.md")
    return summary


def _row_order() -> list[str]:
    out = []
    for label in OBJECTIVES:
        out.append(label)
        if label in RERANKED:
            out.append(f"{label}+rerank")
    return out + list(METHODS)


def _kind(label: str) -> str:
    base = label.split("+")[0]
    return "baseline" if base in BASELINE_OBJECTIVES or base in METHODS else "objective"


# --- plots -------------------------------------------------------------------------------------------------------
def make_plots(out: Path, summary: dict[str, Any], states_rows: list[dict[str, Any]], n: int) -> list[str]:
    """perplexity_vs_m.png, energy_vs_loss.png, removal_maps.png, method_choices.png; returns the file names."""
    plt = pyplot()
    files = []
    rows = summary["results"]
    ms = summary["settings"]["remove"]
    labels = list(dict.fromkeys(r["method"] for r in rows))

    fig, ax = plt.subplots(figsize=(8, 5))
    palette = plt.cm.tab20(np.linspace(0, 1, 20))
    for k, lab in enumerate(labels):
        pts = sorted((r["M"], r["perplexity"]) for r in rows if r["method"] == lab)
        style = "-" if _kind(lab) == "objective" else ":"
        style = "--" if lab.endswith("+rerank") else style
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="os^D"[k % 4], color=palette[(2 * k) % 20
                if k < 10 else (2 * k + 1) % 20], label=lab)
    ax.axhline(summary["full_model"]["perplexity"], color="k", lw=0.8, label="full model")
    ax.set_yscale("log")
    ax.set_xticks(ms)
    ax.set_xlabel("blocks removed (M)")
    ax.set_ylabel(f"held-out perplexity ({summary['eval_tokens']} tokens)")
    ax.set_title("Perplexity of the model each method chooses")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out / "perplexity_vs_m.png", dpi=120)
    plt.close(fig)
    files.append("perplexity_vs_m.png")

    objectives = list(dict.fromkeys(r["objective"] for r in states_rows))
    if objectives:
        fig, axes = plt.subplots(1, len(objectives), figsize=(3.6 * len(objectives), 3.4), squeeze=False)
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(ms)))
        for ax, obj in zip(axes[0], objectives):
            for m, col in zip(ms, colors):
                pts = [(r["energy"], r["loss"]) for r in states_rows if r["objective"] == obj and r["M"] == m]
                if not pts:
                    continue
                rho = next((s["spearman"] for s in summary["spearman"] if s["objective"] == obj and s["M"] == m),
                           float("nan"))
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=col, label=f"M={m} ρ={rho:.2f}")
            ax.set_title(obj, fontsize=10)
            ax.set_xlabel("energy")
            ax.set_yscale("log")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("measured calibration loss")
        fig.suptitle(f"Energy vs measured loss over each objective's {summary['settings']['top_k']} lowest states")
        fig.tight_layout()
        fig.savefig(out / "energy_vs_loss.png", dpi=120)
        plt.close(fig)
        files.append("energy_vs_loss.png")

        fig, axes = plt.subplots(len(objectives), len(ms), figsize=(3.2 * len(ms) + 1, 1.9 * len(objectives) + 0.6),
                                 squeeze=False)
        for i, obj in enumerate(objectives):
            for j, m in enumerate(ms):
                ax = axes[i][j]
                st = sorted((r for r in states_rows if r["objective"] == obj and r["M"] == m), key=lambda r: r["rank"])
                grid = np.zeros((max(len(st), 1), n))
                for k, r in enumerate(st):
                    grid[k, r["removed"]] = 1
                ax.imshow(grid, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
                if st:
                    best = int(np.argmin([r["loss"] for r in st]))
                    ax.add_patch(plt.Rectangle((-0.5, best - 0.5), n, 1, fill=False, ec="tab:red", lw=1.2))
                ax.set_yticks(range(len(st)))
                ax.set_yticklabels([str(r["rank"]) for r in st], fontsize=6)
                ax.set_xticks(range(0, n, max(1, n // 10)))
                ax.tick_params(axis="x", labelsize=6)
                if i == 0:
                    ax.set_title(f"M = {m}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{obj}\nstate rank", fontsize=8)
                if i == len(objectives) - 1:
                    ax.set_xlabel("block", fontsize=8)
        fig.suptitle("Removal maps of the lowest-energy states (black = removed; red box = lowest measured loss)",
                     fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "removal_maps.png", dpi=120)
        plt.close(fig)
        files.append("removal_maps.png")

    fig, axes = plt.subplots(1, len(ms), figsize=(3.4 * len(ms) + 1.5, 0.32 * len(labels) + 1.4), squeeze=False)
    for j, m in enumerate(ms):
        ax = axes[0][j]
        grid = np.zeros((len(labels), n))
        for i, lab in enumerate(labels):
            r = next((r for r in rows if r["method"] == lab and r["M"] == m), None)
            if r is not None:
                grid[i, r["removed"]] = 1
        ax.imshow(grid, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if j == 0 else [], fontsize=7)
        ax.set_xticks(range(0, n, max(1, n // 10)))
        ax.tick_params(axis="x", labelsize=6)
        ax.set_title(f"M = {m}", fontsize=9)
        ax.set_xlabel("block", fontsize=8)
    fig.suptitle("Blocks each method removes (black)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "method_choices.png", dpi=120)
    plt.close(fig)
    files.append("method_choices.png")
    return files


# --- report ------------------------------------------------------------------------------------------------------
def render(summary: dict[str, Any], states_rows: list[dict[str, Any]]) -> str:
    """report.md of the study."""
    s = summary["settings"]
    ms = s["remove"]
    rows = summary["results"]
    labels = list(dict.fromkeys(r["method"] for r in rows))
    get = lambda lab, m, key: next((r[key] for r in rows if r["method"] == lab and r["M"] == m), None)  # noqa: E731
    full = summary["full_model"]
    lines = [
        f"# Removal quality study: {summary['model']}",
        "",
        f"{summary['num_blocks']} blocks ({s['granularity']} granularity). Calibration: {s['samples']} samples × "
        f"{s['seq_len']} tokens from {summary['calibration']['source']}. Every loss measurement (the pairs objective, "
        f"the sleb method, re-ranking, the Spearman figures) uses the first {s['loss_samples']} calibration samples. "
        f"Perplexity: {summary['eval_tokens']} held-out tokens (windows of {s['eval_window']}), the same tokens for "
        f"every model; the full model scores **{full['perplexity']:.3f}** (calibration loss "
        f"{summary['base_loss']:.4f}). Run time {summary['total_seconds'] / 60:.1f} min"
        + (" (quick mode)." if s["quick"] else "."),
        "",
        "Rows: `fisher` (xᵀHx from gate gradients), `fisher-fo` (with the first-order term −ḡ·x + ½xᵀHx), "
        "`pairs` (measured single and pair removals) take their lowest-energy state; `+rerank` takes, among the "
        f"{s['top_k']} lowest states, the one with the lowest measured calibration loss. Baselines: "
        "`block-influence` (ShortGPT, one-shot: the M lowest BI = 1 − cos(in, out)), `norm-ratio` (the M smallest "
        "mean ‖out − in‖ / mean ‖in‖), "
        "`block-influence-iterative` (BI recomputed after each removal), `angular` (Gromov et al.: the M consecutive "
        "layers whose input and output are closest in angle), `sleb` (greedy: remove the block whose removal gives "
        "the lowest measured loss, repeat).",
        "",
        "## Held-out perplexity (lower is better)",
        "",
        table(["method", "kind", *[f"M={m}" for m in ms]],
              [[lab, _kind(lab), *[get(lab, m, "perplexity") for m in ms]] for lab in labels]),
        "",
        "Best per M: " + "; ".join(
            f"M={m}: {min((r for r in rows if r['M'] == m), key=lambda r: r['perplexity'])['method']}" for m in ms
            if any(r["M"] == m for r in rows)) + ".",
        "",
        "![perplexity vs M](perplexity_vs_m.png)",
        "",
        "## Measured calibration loss of the chosen models",
        "",
        f"Mean next-token loss on the {s['loss_samples']} loss samples (full model {summary['base_loss']:.4f}).",
        "",
        table(["method", *[f"M={m}" for m in ms]], [[lab, *[get(lab, m, "calibration_loss") for m in ms]]
                                                  for lab in labels]),
        "",
        "## Removed blocks",
        "",
        table(["method", *[f"M={m}" for m in ms]], [[lab, *[get(lab, m, "removed") for m in ms]] for lab in labels]),
        "",
        "![method choices](method_choices.png)",
        "",
    ]
    if summary["spearman"]:
        objs = list(dict.fromkeys(r["objective"] for r in summary["spearman"]))
        sp = {(r["objective"], r["M"]): r["spearman"] for r in summary["spearman"]}
        solvers = sorted({r["solver"] for r in summary["spearman"]})
        lines += [
            "## Does the energy predict the measured loss?",
            "",
            f"Spearman correlation between energy and measured calibration loss over each objective's "
            f"{s['top_k']} lowest states (found by {' and '.join(solvers)}; 1 = the energy orders the states exactly "
            "as the measured loss does).",
            "",
            table(["objective", *[f"M={m}" for m in ms]], [[o, *[sp.get((o, m)) for m in ms]] for o in objs], 3),
            "",
            "![energy vs loss](energy_vs_loss.png)",
            "",
            "Removal maps (as in the paper's Figure 2): each row is one of the lowest-energy states, rank 1 at the "
            "top; black cells are removed blocks; the red box marks the state with the lowest measured loss (the "
            "re-ranked choice).",
            "",
            "![removal maps](removal_maps.png)",
            "",
        ]
    cost_rows = [[k, v["seconds"], {True: "yes", False: "no"}.get(v["cached"], "—")]
                 for k, v in summary["costs"].items()]
    lines += [
        "## Cost",
        "",
        "Seconds to build each objective's problem (its measurement, unless it came from lmshrink's disk cache) and "
        "to run each method up to the largest M (— : the method measures as it goes, nothing to cache)."
        + (f" Load average of the machine (1, 5, 15 min) at the end of the run: "
           f"{summary['environment']['load_average']} on {summary['environment']['cpus']} CPUs."
           if summary["environment"].get("load_average") else ""),
        "",
        table(["row", "seconds", "measurement cached"], cost_rows),
        "",
        f"Loss measurements: {summary['measurement_seconds']['loss']:.1f} s; perplexities: "
        f"{summary['measurement_seconds']['perplexity']:.1f} s.",
        "",
    ]
    if summary["skipped"]:
        lines += ["## Skipped", "", *[f"- `{k}`: {v}" for k, v in summary["skipped"].items()], ""]
    lines += [
        "## Files",
        "",
        "`results.csv` (one row per method and M), `states.csv` (each objective's lowest states with energy and "
        "measured loss), `spearman.csv`, `summary.json`, `problems/<objective>_M<M>.json` (each objective's problem "
        "for each M: `lmshrink solve problems/fisher_M4.json --solver exact --top-k 10` reproduces its states), "
        "and the plots above.",
        "",
        "## Settings",
        "",
        dump_settings(s),
        "",
        "Command: `" + summary["environment"]["command"] + "`",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["environment"]["versions"].items())
        + f"; {summary['environment']['cpus']} CPUs, torch threads {summary['environment'].get('torch_threads')}.",
        "",
    ]
    return "\n".join(lines)


def rerender(out: str | Path) -> Path:
    """Redraw the plots and rewrite report.md of a finished run from its summary.json and states.csv."""
    import csv
    import json

    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    with (out / "states.csv").open(newline="") as f:
        states = [{"objective": r["objective"], "M": int(r["M"]), "rank": int(r["rank"]),
                   "removed": [int(v) for v in r["removed"].split()], "energy": float(r["energy"]),
                   "loss": float(r["loss"]), "solver": r["solver"]} for r in csv.DictReader(f)]
    make_plots(out, summary, states, summary["num_blocks"])
    path = out / "report.md"
    path.write_text(render(summary, states))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.removal [options]``, or ``--render DIR`` to redo a run's report."""
    return study_main(argv, run=run, parse_args=parse_args, rerender=rerender, default_dir="benchmarks/results/removal")
