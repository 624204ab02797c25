"""SVD compression benchmark: held-out perplexity against kept-parameter ratio for each rank-allocation method.

    python benchmarks/svd/run.py            # SmolLM2, ratios 1.0 0.9 0.8 0.7 0.6, methods uniform milp fermigrad
    python benchmarks/svd/run.py --quick    # ratios 1.0 0.8 0.6, smaller calibration / evaluation / fewer steps

The whitening statistics and the whitened SVDs are computed once and shared by every method and ratio. Each
(method, ratio) builds the rank-allocation problem from them, solves it, compresses a copy of the model and
scores it on the same held-out tokens. Writes ``results.csv``, ``results.md`` (the table), ``perplexity.png``
and ``runs.json`` (ranks and solver facts) under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller, faster run")
    p.add_argument("--model", default=None, help="model (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", default=None, help="calibration/evaluation text (default: pydoc topics)")
    p.add_argument("--ratios", type=float, nargs="+", default=None, help="kept-parameter ratios")
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods: uniform, milp, milp-normalized, fermigrad, fermigrad-ce (default: uniform milp fermigrad)")
    p.add_argument("--samples", type=int, default=None, help="calibration samples (default 64; quick 32)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample (default 256)")
    p.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens (default 16384; quick 8192)")
    p.add_argument("--steps", type=int, default=None, help="fermigrad steps (default 60; quick 30)")
    p.add_argument("--batch-size", type=int, default=2, help="calibration samples per fermigrad step (default 2)")
    p.add_argument("--lr", type=float, default=None, help="fermigrad learning rate (default: the solver's)")
    p.add_argument("--teacher-top-k", type=int, default=128, help="fermigrad KL: cached teacher top-K (0: full)")
    p.add_argument("--init", default="uniform", help="fermigrad start: uniform or greedy")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--pivga", action="store_true", help="cost model r(m+n)−r² (PivGa) instead of r(m+n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--factors-cache", default=None, help="torch file to keep the whitened SVDs in between runs")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/svd[-quick])")
    args = p.parse_args(argv)
    args.ratios = args.ratios or ([1.0, 0.8, 0.6] if args.quick else [1.0, 0.9, 0.8, 0.7, 0.6])
    args.methods = args.methods or ["uniform", "milp", "fermigrad"]
    args.samples = args.samples or (32 if args.quick else 64)
    args.eval_tokens = args.eval_tokens or (8192 if args.quick else 16384)
    args.steps = args.steps or (30 if args.quick else 60)
    args.out = Path(args.out or ROOT / "benchmarks" / "results" / ("svd-quick" if args.quick else "svd"))
    return args


def log(msg: str) -> None:
    print(f"[svd-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


_ORACLES: dict[str, Any] = {}


def solve(method: str, problem: Any, model: Any, factors: Any, calibration: Any, args: argparse.Namespace) -> Any:
    """Solve ``problem`` with ``method``; returns the SolutionSet."""
    import dataclasses

    import numpy as np

    from lmshrink.objectives.fermi_rank import SoftTruncationLoss
    from lmshrink.plugins import get_solver

    if method == "uniform":
        return get_solver("uniform", problem).solve(problem)
    if method in ("milp", "milp-normalized"):
        if method == "milp-normalized":
            weights = np.array([1.0 / max(float((s**2).sum()), 1e-300) for s in problem.singular_values])
            problem = dataclasses.replace(problem, weights=weights)
        return get_solver("milp", problem).solve(problem)
    if method.startswith("fermigrad"):
        target = "ce" if method.endswith("-ce") else "kl"
        if target not in _ORACLES:  # one oracle per target for the whole run: its teacher cache is shared
            _ORACLES[target] = SoftTruncationLoss(model, factors, problem.names, calibration.input_ids,
                                                  target=target, batch_size=args.batch_size, seed=args.seed,
                                                  teacher_top_k=args.teacher_top_k)
        problem.loss = _ORACLES[target]
        opts: dict[str, Any] = {"steps": args.steps, "progress": True, "init": args.init}
        if args.lr is not None:
            opts["lr"] = args.lr
        try:
            return get_solver("fermigrad", problem).solve(problem, seed=args.seed, **opts)
        finally:
            problem.loss = None
    raise SystemExit(f"unknown method {method!r}")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["kept_ratio"], r["perplexity"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xlabel("kept ratio of the decomposed matrices' parameters")
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]], ratios: list[float], methods: list[str]) -> str:
    by = {(r["method"], r["ratio"]): r for r in rows}
    head = "| ratio | " + " | ".join(methods) + " |"
    lines = [head, "|---|" + "---|" * len(methods)]
    for ratio in ratios:
        cells = []
        for m in methods:
            r = by.get((m, ratio))
            cells.append("" if r is None else f"{r['perplexity']:.3f}")
        lines.append(f"| {ratio:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from lmshrink.compress.svd import compress_model, svd_factors
    from lmshrink.data import evaluation_ids, load_texts, make_calibration
    from lmshrink.evaluate.perplexity import perplexity
    from lmshrink.models import load_model
    from lmshrink.objectives.fermi_rank import rank_problem
    from lmshrink.plugins import find_adapter

    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    log(f"loading model; ratios {args.ratios}; methods {args.methods}; torch threads {torch.get_num_threads()}")
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    adapter = find_adapter(model)
    texts = load_texts(args.data)
    calibration = make_calibration(tokenizer, texts, args.samples, args.seq_len, args.seed)
    eval_ids = evaluation_ids(tokenizer, texts, args.eval_tokens)

    t = time.perf_counter()
    cache = Path(args.factors_cache) if args.factors_cache else None
    key = {"model": loaded.name, "samples": args.samples, "seq_len": args.seq_len, "seed": args.seed,
           "data": args.data}
    factors = None
    cached = False
    if cache is not None and cache.exists():
        saved = torch.load(cache, weights_only=False)
        if saved.get("key") == key:
            factors = saved["factors"]
            cached = True
            log(f"whitened SVDs read from {cache}")
    if factors is None:
        log(f"whitening statistics over {args.samples}×{args.seq_len} tokens and whitened SVDs (computed once)")
        factors = svd_factors(model, adapter.linear_layers(model), calibration.input_ids, progress=False)
        if cache is not None:
            torch.save({"key": key, "factors": factors}, cache)
    factor_time = time.perf_counter() - t
    log(f"factors ready in {factor_time:.0f} s; whitening {factors.info.get('whitening')}")

    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    base = perplexity(model, eval_ids, progress=False)
    log(f"uncompressed perplexity {base['perplexity']:.3f} on {base['tokens']} tokens")
    for ratio in args.ratios:
        for method in args.methods:
            if ratio >= 1.0:  # nothing to compress: every method keeps every matrix dense
                rows.append({"method": method, "ratio": ratio, "kept_ratio": 1.0, "kept_ratio_pivga": 1.0,
                             "perplexity": base["perplexity"], "nll": base["nll"], "energy": 0.0, "solve_s": 0.0,
                             "dense_matrices": len(factors.names)})
                continue
            problem = rank_problem(factors, ratio, pivga=args.pivga)
            t = time.perf_counter()
            log(f"ratio {ratio}: solving with {method}")
            result = solve(method, problem, model, factors, calibration, args)
            solve_s = time.perf_counter() - t
            x = result.best.x
            ranks = dict(zip(problem.names, x))
            net = copy.deepcopy(model)
            summary = compress_model(net, factors, ranks, pivga=args.pivga)
            ppl = perplexity(net, eval_ids, progress=False)
            del net
            gc.collect()
            row = {"method": method, "ratio": ratio, "kept_ratio": summary.params_stored / summary.params_dense,
                   "kept_ratio_pivga": summary.params_pivga / summary.params_dense, "perplexity": ppl["perplexity"],
                   "nll": ppl["nll"], "energy": problem.energy(x), "solve_s": solve_s,
                   "dense_matrices": sum(1 for v in summary.kinds.values() if v == "dense")}
            rows.append(row)
            info = {k: v for k, v in result.info.items() if k not in ("history",)}
            runs.append({**row, "ranks": {k: int(v) for k, v in ranks.items()}, "solver_info": info,
                         "history": result.info.get("history")})
            log(f"ratio {ratio} {method}: perplexity {ppl['perplexity']:.3f} (kept {row['kept_ratio']:.4f}, "
                f"energy {row['energy']:.4g}, {solve_s:.0f} s)")
            with open(args.out / "runs.json", "w") as fh:
                json.dump(runs, fh, indent=1, default=str)

    fields = list(rows[0])
    with open(args.out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    kind = "PivGa" if args.pivga else "low-rank"
    title = f"{loaded.name.split(' (')[0]}: whitened SVD ({kind})"
    plot(rows, args.out / "perplexity.png", title)
    table = markdown(rows, args.ratios, args.methods)
    total = time.perf_counter() - started
    text = [
        f"# SVD rank allocation: {title}",
        "",
        f"Held-out perplexity ({base['tokens']} tokens of {texts.source}) against the kept ratio of the decomposed "
        f"matrices' parameters. Calibration {args.samples}×{args.seq_len} tokens; fermigrad: {args.steps} steps of "
        f"{args.batch_size} samples, KL to the uncompressed model (teacher top-{args.teacher_top_k} cached). "
        + (f"Whitened SVDs read from {cache} (computed once by an earlier run)." if cached
           else f"Whitened SVDs computed once ({factor_time:.0f} s)."),
        "",
        table,
        "",
        "![perplexity](perplexity.png)",
        "",
        f"Total run time {total / 60:.1f} min; torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
    ]
    (args.out / "results.md").write_text("\n".join(text))
    log(f"done in {total / 60:.1f} min; wrote {args.out}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
