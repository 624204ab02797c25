"""SVD compression benchmark: held-out perplexity against kept-parameter ratio for each rank-allocation method.

    python benchmarks/svd/run.py            # SmolLM2, ratios 1.0 0.9 0.8 0.7 0.6, methods uniform milp fermigrad
    python benchmarks/svd/run.py --quick    # ratios 1.0 0.8 0.6, smaller calibration / evaluation / fewer steps
    python benchmarks/svd/run.py --quick --methods fermigrad fermigrad+seq fermigrad+seq+ls milp-fisher+seq+ls \
        --data mix.jsonl --heldout-data prose-heldout.jsonl      # the sequential refit and a second held-out text

It runs the same stages as ``lmshrink svd``, through the same contract: the ``fermi-rank`` objective whitens the
matrices once (the factors are shared by every method and ratio) and, per ratio, poses the rank-allocation
problem; each method's solver solves it (fermigrad gets the objective's loss oracle as its ``loss`` option, one
oracle per target for the whole run, so the teacher's cache is shared); the best solution becomes a rank plan,
which is applied to a copy of the model, scored on the same held-out tokens. A method may name variants after its
allocation: ``+seq`` recomputes the factors with the allocated ranks by sequential whitening (each decoder layer on
the inputs of the compressed layers before it), ``+ls`` / ``+joint`` also refit the kept factors by least squares
(:mod:`lmshrink.compress.sequential`); variants of one method share its allocation. ``--heldout-data`` scores every
model on a second text the calibration never sees (all of it), reported as a second column. Writes ``results.csv``,
``results.md`` (the table), ``perplexity.png`` and ``runs.json`` (ranks and solver facts) under ``--out``.
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
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller, faster run")
    p.add_argument("--model", default=None, help="model (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", nargs="+", default=None,
                   help="calibration text (default: lmshrink's, mix when Debian's fortunes is installed, else pydoc)")
    p.add_argument("--eval-data", nargs="+", default=None,
                   help="text whose evaluation split is the first held-out column (default: --data's)")
    p.add_argument("--heldout-data", nargs="+", default=None,
                   help="a second text, never calibrated on, scored whole as a second held-out column")
    p.add_argument("--ratios", type=float, nargs="+", default=None, help="kept-parameter ratios")
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods: uniform, milp, milp-normalized, milp-fisher, milp-aligned, fermigrad, fermigrad-ce, "
                        "fermigrad-aligned, milp-tr (milp-aligned refined by trust-region probes of the KL), "
                        "milp-tr-ce (of the CE), milp-tr-sampled (KL, sampled Fisher), milp-tr-fit (KL, curvature "
                        "refitted to each measured step), each optionally followed by "
                        "+seq, +seq+ls or +seq+joint, +pivga and +kd (default: uniform milp fermigrad)")
    p.add_argument("--samples", type=int, default=None, help="calibration samples (default 64; quick 32)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample (default 256)")
    p.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens (default 16384; quick 8192)")
    p.add_argument("--steps", type=int, default=None, help="fermigrad steps (default 60; quick 30)")
    p.add_argument("--batch-size", type=int, default=2, help="calibration samples per fermigrad step (default 2)")
    p.add_argument("--lr", type=float, default=None, help="fermigrad learning rate (default: the solver's)")
    p.add_argument("--teacher-top-k", type=int, default=128, help="fermigrad KL: cached teacher top-K (0: full)")
    p.add_argument("--init", default="uniform", help="fermigrad start: uniform or greedy")
    p.add_argument("--tr-rounds", type=int, default=4, help="milp-tr: candidates probed after milp-aligned's (4)")
    p.add_argument("--tr-radius", type=float, default=0.125,
                   help="milp-tr: initial trust region, as a fraction of each matrix's full rank (0.125)")
    p.add_argument("--tr-samples", type=int, default=0,
                   help="milp-tr: calibration samples each probe measures (a seeded draw; 0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--pivga", action="store_true", help="cost model r(m+n)−r² (PivGa) instead of r(m+n)")
    p.add_argument("--kd-option", nargs="+", default=[], metavar="KEY=VALUE",
                   help="settings of the +kd rows' distillation (lmshrink svd's --heal-option: steps, lr, lora_rank, …)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--factors-cache", default=None,
                   help="safetensors file (+ a .json side file) to keep the whitened SVDs in between runs")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/svd[-quick])")
    args = p.parse_args(argv)
    for name in ("data", "eval_data", "heldout_data"):  # one name stays a string ("pydoc", a dataset name)
        value = getattr(args, name)
        if value is not None and len(value) == 1:
            setattr(args, name, value[0])
    args.ratios = args.ratios or ([1.0, 0.8, 0.6] if args.quick else [1.0, 0.9, 0.8, 0.7, 0.6])
    args.methods = args.methods or ["uniform", "milp", "fermigrad"]
    args.samples = args.samples or (32 if args.quick else 64)
    args.eval_tokens = args.eval_tokens or (8192 if args.quick else 16384)
    args.steps = args.steps or (30 if args.quick else 60)
    args.out = Path(args.out or ROOT / "benchmarks" / "results" / ("svd-quick" if args.quick else "svd"))
    return args


def log(msg: str) -> None:
    print(f"[svd-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


#: methods: (solver, objective options); fermigrad's loss target is the objective's ``target``
METHODS = {
    "uniform": ("uniform", {}),
    "milp": ("milp", {}),
    "milp-normalized": ("milp", {"normalize": True}),
    "milp-fisher": ("milp", {"error_weights": "fisher"}),
    "milp-aligned": ("milp", {"error_weights": "fisher-aligned"}),
    "fermigrad-aligned": ("fermigrad", {"target": "kl", "error_weights": "fisher-aligned"}),
    "fermigrad": ("fermigrad", {"target": "kl"}),
    "fermigrad-ce": ("fermigrad", {"target": "ce"}),
    "milp-tr": ("trust-region", {"error_weights": "fisher-aligned", "target": "kl"}),
    "milp-tr-ce": ("trust-region", {"error_weights": "fisher-aligned", "target": "ce"}),
    "milp-tr-sampled": ("trust-region", {"error_weights": "fisher-aligned", "target": "kl",
                                         "probe_curvature": "sampled"}),
    "milp-tr-fit": ("trust-region", {"error_weights": "fisher-aligned", "target": "kl"}),
}
#: solver options of a method beyond the run's (fermigrad-aligned starts from the greedy optimum of the aligned
#: Fisher table, which is milp-aligned's allocation up to the last rank step; milp-tr-fit refits the curvature)
SOLVER_OPTIONS = {"fermigrad-aligned": {"init": "greedy"}, "milp-tr-fit": {"fit_curvature": True}}


class MethodSpec(NamedTuple):
    """What a method spec such as ``milp-aligned+seq+pivga+kd`` names."""

    allocation: str  #: the allocation method (a key of :data:`METHODS`)
    whitening: str  #: "dense" (one pass over the dense model) or "sequential" (+seq)
    update: str  #: "none", "ls" or "joint": the least-squares refit of the kept factors
    pivga: bool  #: allocate under PivGa's cost r(m+n)−r² and store gauge-fixed factors
    heal: str  #: "none" or "kd" (distillation from the dense model, factors kept factored)


def split_method(spec: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``spec``: an allocation method followed by any of ``+seq``, ``+seq+ls`` /
    ``+seq+joint``, ``+pivga`` and ``+kd``."""
    base, *parts = spec.split("+")
    whitening = "sequential" if "seq" in parts else "dense"
    update = next((u for u in ("ls", "joint") if u in parts), "none")
    if base not in METHODS or any(p not in ("seq", "ls", "joint", "pivga", "kd") for p in parts) or (
            update != "none" and whitening == "dense") or len(set(parts)) != len(parts):
        raise SystemExit(f"unknown method {spec!r}; methods: {', '.join(METHODS)}, each optionally followed by "
                         f"+seq, +seq+ls or +seq+joint, +pivga and +kd")
    return MethodSpec(base, whitening, update, "pivga" in parts, "kd" if "kd" in parts else "none")


class Methods:
    """Poses each (method, ratio) problem with the objective and solves it; one loss oracle per target per run."""

    def __init__(self, objective: Any, model: Any, adapter: Any, factors: Any, calibration: Any,
                 args: argparse.Namespace) -> None:
        self.objective, self.model, self.adapter, self.factors, self.calibration = (objective, model, adapter, factors,
                                                                                   calibration)
        self.args = args
        self.oracles: dict[str, Any] = {}

    def options(self, method: str, ratio: float, pivga: bool = False) -> dict[str, Any]:
        a = self.args
        return self.objective.validate({"ratio": ratio, "pivga": a.pivga or pivga, "batch_size": a.batch_size,
                                        "seed": a.seed, "teacher_top_k": a.teacher_top_k, "progress": False,
                                        "probe_samples": a.tr_samples,
                                        **METHODS[method][1]})

    def problem(self, method: str, ratio: float, pivga: bool = False) -> Any:
        opts = self.options(method, ratio, pivga)
        return self.objective.pose(self.factors, self.model, self.adapter, self.calibration, opts)

    def error(self, ratio: float, x: Any, pivga: bool = False) -> float:
        """The summed whitened truncation error of the ranks ``x`` (the energy with every w_l = 1, so that methods
        whose problem weighs the matrices differently are compared on one scale)."""
        return self.problem("uniform", ratio, pivga).energy(x)

    def solve(self, method: str, ratio: float, problem: Any) -> Any:
        """The method's SolutionSet for ``problem``."""
        from lmshrink.core import RankAllocationProblem
        from lmshrink.plugins import get_solver

        name, _ = METHODS[method]
        solver = get_solver(name, RankAllocationProblem)
        if "probe" in solver.options:  # trust-region: milp-aligned refined on the model by measured probes
            probe = self.objective.allocation_probe(self.model, self.factors, problem, self.calibration,
                                                    self.options(method, ratio))
            return solver.solve(problem, probe=probe, rounds=self.args.tr_rounds, radius=self.args.tr_radius,
                                **SOLVER_OPTIONS.get(method, {}))
        if "loss" not in solver.options:
            return solver.solve(problem)
        opts = self.options(method, ratio)
        if opts["target"] not in self.oracles:  # its teacher cache is shared by every ratio
            self.oracles[opts["target"]] = self.objective.loss_oracle(self.model, self.factors, problem,
                                                                      self.calibration, opts)
        extra: dict[str, Any] = {"steps": self.args.steps, "progress": True, "init": self.args.init,
                                 **SOLVER_OPTIONS.get(method, {})}
        if self.args.lr is not None:
            extra["lr"] = self.args.lr
        return solver.solve(problem, seed=self.args.seed, loss=self.oracles[opts["target"]], **extra)


class Healing:
    """Distillation of the +kd rows (:func:`lmshrink.heal.kd.distill`, as ``lmshrink svd --heal kd``): the dense
    model's top-k targets on the calibration windows, computed once for the whole run."""

    def __init__(self, model: Any, input_ids: Any, args: argparse.Namespace) -> None:
        from lmshrink.core.options import parse_option_strings
        from lmshrink.pipeline.config import kd_config, kd_option_specs

        self.config = kd_config(args.seed, parse_option_strings("KD healing", kd_option_specs(), args.kd_option))
        self.model, self.input_ids = model, input_ids
        self.targets: Any = None

    def heal(self, net: Any) -> tuple[Any, dict[str, Any]]:
        """The distilled ``net`` and the distillation's report (as a dict)."""
        from lmshrink.heal.kd import distill, teacher_targets

        if self.targets is None:
            self.targets = teacher_targets(self.model, self.input_ids, top_k=self.config.top_k,
                                           temperature=self.config.temperature)
        healed, report = distill(net, self.targets, self.config, progress=False)
        return healed, report.to_dict()


def whitened_factors(objective: Any, model: Any, adapter: Any, calibration: Any, cache: Path | None,
                     key: dict[str, Any]) -> tuple[Any, bool]:
    """The objective's whitened SVDs, read from ``cache`` when it holds them for ``key``; (factors, read from cache)."""
    from lmshrink.compress.factoring import SvdFactors
    from lmshrink.core import LmshrinkError

    if cache is not None and cache.exists():
        try:
            factors = SvdFactors.load(cache, key=key)
            log(f"whitened SVDs read from {cache}")
            return factors, True
        except LmshrinkError as exc:
            log(f"recomputing the whitened SVDs: {exc}")
    log(f"whitening statistics over {calibration.num_samples}×{calibration.seq_len} tokens and whitened SVDs "
        f"(computed once)")
    factors = objective.whiten(model, adapter, calibration, objective.validate({"progress": False}))
    if cache is not None:
        factors.save(cache, key=key)
    return factors, False


def whole_text_ids(tokenizer: Any, texts: Any, max_tokens: int) -> Any:
    """The first ``max_tokens`` token ids of all of ``texts`` (both of its splits: none of it is calibrated on)."""
    import torch

    from lmshrink.data import tokenize_texts

    ids = tokenize_texts(tokenizer, list(texts.calibration) + list(texts.evaluation))[:max_tokens]
    return torch.from_numpy(ids)


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


def detail_table(rows: list[dict[str, Any]]) -> str:
    """One line per (ratio, method): both held-out perplexities, their ratios to dense, and the wall times."""
    lines = ["| ratio | method | held-out ppl | second text ppl | × dense | × dense (second) | solve s | refit s "
             "| heal s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ratio"] >= 1.0:
            continue
        lines.append(f"| {r['ratio']:.1f} | {r['method']} | {r['perplexity']:.3f} | {r['heldout_perplexity']:.3f} | "
                     f"{r['vs_dense']:.3f} | {r['heldout_vs_dense']:.3f} | {r['solve_s']:.0f} | {r['refit_s']:.0f} | "
                     f"{r['heal_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = {m: split_method(m) for m in args.methods}
    import torch

    import lmshrink
    from lmshrink.compress.apply import apply_plan
    from lmshrink.core import RankPlan
    from lmshrink.data import default_calibration, evaluation_ids, load_texts, make_calibration
    from lmshrink.evaluate.perplexity import perplexity
    from lmshrink.models import load_model
    from lmshrink.torch_utils import model_identity
    from lmshrink.plugins import find_adapter, get_objective

    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    log(f"loading model; ratios {args.ratios}; methods {args.methods}; torch threads {torch.get_num_threads()}")
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    adapter = find_adapter(model)
    objective = get_objective("fermi-rank")
    texts = load_texts(args.data or default_calibration())
    calibration = make_calibration(tokenizer, texts, args.samples, args.seq_len, args.seed)
    eval_texts = load_texts(args.eval_data) if args.eval_data else texts
    eval_ids = evaluation_ids(tokenizer, eval_texts, args.eval_tokens)
    second = None
    if args.heldout_data:
        whole = load_texts(args.heldout_data)
        second = whole_text_ids(tokenizer, whole, args.eval_tokens)
        log(f"second held-out text: {second.numel()} tokens of {whole.source}")

    t = time.perf_counter()
    cache = Path(args.factors_cache) if args.factors_cache else None
    whitening = {k: v for k, v in objective.validate({}).items() if k in ("eps", "gram_batch_size")}
    key = {"model": model_identity(model), "calibration": calibration.fingerprint(), "whitening": whitening,
           "lmshrink": lmshrink.__version__}
    factors, cached = whitened_factors(objective, model, adapter, calibration, cache, key)
    factor_time = time.perf_counter() - t
    log(f"factors ready in {factor_time:.0f} s; whitening {factors.info.get('whitening')}")
    methods = Methods(objective, model, adapter, factors, calibration, args)

    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    base = perplexity(model, eval_ids, progress=False)
    base2 = perplexity(model, second, progress=False) if second is not None else None
    log(f"uncompressed perplexity {base['perplexity']:.3f} on {base['tokens']} tokens"
        + (f"; {base2['perplexity']:.3f} on the second text" if base2 else ""))
    dense_row = {"kept_ratio": 1.0, "kept_ratio_pivga": 1.0, "perplexity": base["perplexity"], "nll": base["nll"],
                 "vs_dense": 1.0, "heldout_perplexity": base2["perplexity"] if base2 else None,
                 "heldout_vs_dense": 1.0 if base2 else None, "energy": 0.0, "solve_s": 0.0, "refit_s": 0.0,
                 "heal_s": 0.0, "dense_matrices": len(factors.names)}
    from lmshrink.compress.sequential import sequential_factors

    healing = Healing(model, calibration.input_ids, args) if any(s.heal == "kd" for s in specs.values()) else None
    for ratio in args.ratios:
        solved: dict[tuple[str, bool], tuple[Any, Any, float]] = {}  # (method, PivGa) → (problem, solutions, s)
        refitted: dict[tuple[Any, ...], tuple[Any, float]] = {}  # variants that differ only by +kd share factors
        for method in args.methods:
            if ratio >= 1.0:  # nothing to compress: every method keeps every matrix dense
                rows.append({"method": method, "ratio": ratio, **dense_row})
                continue
            alloc, whitening, update, pivga, heal = specs[method]
            if (alloc, pivga) not in solved:
                problem = methods.problem(alloc, ratio, pivga)
                t = time.perf_counter()
                log(f"ratio {ratio}: solving with {alloc}" + (" (PivGa cost)" if pivga else ""))
                result = methods.solve(alloc, ratio, problem)
                solved[alloc, pivga] = (problem, result, time.perf_counter() - t)
            problem, result, solve_s = solved[alloc, pivga]
            plan = RankPlan.from_solution(problem, result.best.x, source={"method": method})
            if (alloc, pivga, whitening, update) not in refitted:
                t = time.perf_counter()
                used = factors
                if whitening == "sequential":
                    log(f"ratio {ratio} {method}: sequential whitening (update {update})")
                    ranks = {m.name: m.rank for m in plan.matrices if not m.dense}
                    used = sequential_factors(model, adapter, adapter.linear_layers(model), calibration.input_ids,
                                              ranks, update=update, progress=False)
                refitted[alloc, pivga, whitening, update] = (used, time.perf_counter() - t)
            used, refit_s = refitted[alloc, pivga, whitening, update]
            net = copy.deepcopy(model)
            summary = apply_plan(net, used, plan)
            heal_s, kd = 0.0, None
            if heal == "kd":
                log(f"ratio {ratio} {method}: distillation from the dense model")
                net, kd = healing.heal(net)
                heal_s = kd["seconds"]
            ppl = perplexity(net, eval_ids, progress=False)
            ppl2 = perplexity(net, second, progress=False) if second is not None else None
            del net
            gc.collect()
            row = {"method": method, "ratio": ratio, "kept_ratio": summary.params_stored / summary.params_dense,
                   "kept_ratio_pivga": summary.params_pivga / summary.params_dense, "perplexity": ppl["perplexity"],
                   "nll": ppl["nll"], "vs_dense": ppl["perplexity"] / base["perplexity"],
                   "heldout_perplexity": ppl2["perplexity"] if ppl2 else None,
                   "heldout_vs_dense": ppl2["perplexity"] / base2["perplexity"] if ppl2 else None,
                   "energy": methods.error(ratio, result.best.x, pivga), "solve_s": solve_s, "refit_s": refit_s,
                   "heal_s": heal_s, "dense_matrices": sum(1 for m in plan.matrices if m.dense)}
            rows.append(row)
            info = {k: v for k, v in result.info.items() if k not in ("history",)}
            runs.append({**row, "ranks": plan.ranks, "solver_info": info, "history": result.info.get("history"),
                         **({"kd": {k: v for k, v in kd.items() if k != "losses"}} if kd else {})})
            log(f"ratio {ratio} {method}: perplexity {ppl['perplexity']:.3f} ({row['vs_dense']:.3f}x dense)"
                + (f", second text {ppl2['perplexity']:.3f} ({row['heldout_vs_dense']:.3f}x)" if ppl2 else "")
                + f" (kept {row['kept_ratio']:.4f}, energy {row['energy']:.4g}, solve {solve_s:.0f} s, "
                  f"refit {refit_s:.0f} s" + (f", heal {heal_s:.0f} s" if heal_s else "") + ")")
            with open(args.out / "runs.json", "w") as fh:
                json.dump(runs, fh, indent=1, default=str)
        del refitted
        gc.collect()

    fields = list(rows[0])
    with open(args.out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    kind = "PivGa" if args.pivga else "low-rank"
    title = f"{loaded.name.split(' (')[0]}: whitened SVD ({kind})"
    plot(rows, args.out / "perplexity.png", title)
    table = markdown(rows, args.ratios, args.methods)
    if second is not None:
        table += "\n\n" + detail_table(rows)
    total = time.perf_counter() - started
    text = [
        f"# SVD rank allocation: {title}",
        "",
        f"Held-out perplexity ({base['tokens']} tokens of {eval_texts.source}) against the kept ratio of the decomposed "
        f"matrices' parameters"
        + (f"; second held-out text: {second.numel()} tokens of {whole.source}" if second is not None
           else "")
        + f". Calibration {args.samples}×{args.seq_len} tokens of {texts.source}; fermigrad: {args.steps} steps of "
        f"{args.batch_size} samples, KL to the uncompressed model (teacher top-{args.teacher_top_k} cached). "
        + (f"Whitened SVDs read from {cache} (computed once by an earlier run)." if cached
           else f"Whitened SVDs computed once ({factor_time:.0f} s).")
        + (f" Trust region (milp-tr): {args.tr_rounds} rounds from radius {args.tr_radius}, each probe on "
           f"{min(args.tr_samples or args.samples, args.samples)} calibration samples."
           if any(split_method(m).allocation.startswith("milp-tr") for m in args.methods) else ""),
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
