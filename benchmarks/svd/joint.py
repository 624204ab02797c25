"""One budget over branch removal and SVD ranks: removal only, SVD only and joint, under each truncation term.

    python benchmarks/svd/joint.py --ratios 0.75 0.6 --out benchmarks/reference/compress-joint

One measurement (whitened SVDs, the 2N branch-removal losses, the per-kind truncation probes and the aligned
Fisher table) is shared by every row, so rows differ only in the choice. Per ratio: removal only (the truncation
term plays no part), then SVD only and joint with each truncation term: ``probes`` (one measured slope per matrix
kind) and ``fisher`` (each rank's Fisher loss estimate on its own output errors), and ``fisher-scaled``: the
Fisher table times one factor κ, the real calibration-loss increase of the SVD-only Fisher choice at that ratio
over its estimate (one more pass), so that the truncation term is on the removal losses' measured scale; with
``--unseen-samples N``, also ``fisher-unseen``: the table computed on N further calibration samples that the
whitening did not use (the factors fit their own calibration tokens, so a table on them understates). Each
choice is applied to a fresh copy of the model and scored on the held-out texts. Writes ``OUT/rows.json``,
``OUT/summary.json`` (settings, dense perplexities, rows with estimate, real calibration-loss increase (and on
the unseen samples),
perplexities, removed branches, factored matrices, solve and apply+eval seconds) and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TERMS = ("probes", "fisher", "fisher-scaled", "fisher-unseen")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", nargs="+", default=None,
                   help="calibration text (default: lmshrink's, mix when Debian's fortunes is installed, else pydoc)")
    p.add_argument("--heldout", nargs="+", default=["pydoc", "literature"],
                   help="held-out texts, each scored on its evaluation split (default: pydoc literature)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.6], help="kept-parameter ratios")
    p.add_argument("--samples", type=int, default=8, help="calibration samples (default 8)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per calibration sample (default 128)")
    p.add_argument("--loss-windows", type=int, default=4, help="samples the losses are measured on (default 4)")
    p.add_argument("--probe-layers", type=int, default=2, help="layers the per-kind probes truncate (default 2)")
    p.add_argument("--grid-step", type=int, default=8, help="joint-milp rank grid (default 8)")
    p.add_argument("--eval-tokens", type=int, default=2048, help="held-out tokens per text (default 2048)")
    p.add_argument("--unseen-samples", type=int, default=0,
                   help="further calibration samples, not whitened on, for the fisher-unseen table (default 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compress-joint"))
    args = p.parse_args(argv)
    if args.data is not None and len(args.data) == 1:
        args.data = args.data[0]
    if not all(0 < r <= 1 for r in args.ratios):
        p.error("every ratio must be in (0, 1]")
    return args


def log(msg: str) -> None:
    print(f"[joint-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from lmshrink.core.joint import JointCompressionProblem
    from lmshrink.data import default_calibration, evaluation_ids, load_texts
    from lmshrink.evaluate.loss import per_sample_loss
    from lmshrink.evaluate.perplexity import perplexity
    from lmshrink.objectives.joint import fisher_truncation_errors, joint_problem, measure_joint
    from lmshrink.pipeline.compress import apply_choice, mode_settings
    from lmshrink.pipeline.inputs import load_inputs
    from lmshrink.plugins import get_solver
    from lmshrink.report import Timings

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    inputs = load_inputs(args.model, data=args.data or default_calibration(),
                         samples=args.samples + args.unseen_samples, seq_len=args.seq_len,
                         seed=args.seed, timings=Timings(), progress=False)
    net, adapter = inputs.model, inputs.adapter
    ids, unseen = inputs.calibration.input_ids[: args.samples], inputs.calibration.input_ids[args.samples:]
    log(f"measuring on {ids.shape[0]}×{ids.shape[1]} calibration tokens ({inputs.calibration.source})")
    t = time.perf_counter()
    probes = measure_joint(net, adapter, ids, loss_windows=args.loss_windows, probe_layers=args.probe_layers,
                           truncation="probes")
    measure_s = time.perf_counter() - t
    t = time.perf_counter()
    every = adapter.linear_layers(net)
    linears = {n: every[n] for n in probes.matrices}
    fisher = dataclasses.replace(probes, errors=fisher_truncation_errors(net, linears, probes.factors, ids),
                                 truncation="fisher")
    table_s = time.perf_counter() - t
    measures = [("probes", probes), ("fisher", fisher)]
    if len(unseen):
        measures.append(("fisher-unseen", dataclasses.replace(
            probes, errors=fisher_truncation_errors(net, linears, probes.factors, unseen), truncation="fisher")))
    log(f"measured in {measure_s:.0f} s; aligned Fisher table in {table_s:.0f} s")

    texts = {name: evaluation_ids(inputs.tokenizer, load_texts(name), args.eval_tokens) for name in args.heldout}
    loss_ids = ids[: args.loss_windows]

    unseen_ids = unseen[: args.loss_windows]

    @torch.no_grad()
    def mean_loss(model: Any, windows: Any) -> float | None:
        """The mean next-token loss of ``model`` over ``windows`` (None for no windows)."""
        return float(per_sample_loss(model, windows).double().mean()) if len(windows) else None

    def scores(model: Any) -> dict[str, float]:
        return {name: perplexity(model, v, window=512, progress=False)["perplexity"] for name, v in texts.items()}

    base = mean_loss(net, loss_ids)
    base_unseen = mean_loss(net, unseen_ids)
    dense = scores(net)
    log(f"dense: {', '.join(f'{k} {v:.2f}' for k, v in dense.items())}")
    solver = get_solver("joint-milp", JointCompressionProblem)
    rows: list[dict[str, Any]] = []

    def run(ratio: float, mode: str, term: str, problem: JointCompressionProblem, kappa: float | None = None) -> Any:
        t0 = time.perf_counter()
        x = solver.solve(problem, grid_step=args.grid_step).best.x
        solve_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, summary = apply_choice(copy.deepcopy(net), adapter, probes.factors, problem, x)
        real = mean_loss(model, loss_ids) - base
        real_unseen = None if base_unseen is None else mean_loss(model, unseen_ids) - base_unseen
        ppl = scores(model)
        factored = len(problem.factored(x))
        row = {"ratio": ratio, "mode": mode, "term": term, "kappa": kappa, "removed": len(problem.removed(x)),
               "factored": factored, "kept": problem.cost(x), "budget": problem.budget,
               "estimate": float(problem.energy(x)), "real": real, "real_unseen": real_unseen,
               **{f"ppl_{k}": v for k, v in ppl.items()},
               **{f"vs_dense_{k}": v / dense[k] for k, v in ppl.items()},
               "solve_s": solve_s, "apply_eval_s": time.perf_counter() - t0}
        rows.append(row)
        log(f"{ratio} {mode:7s} {term:13s} removed {row['removed']:2d} factored {factored:3d} estimate "
            f"{row['estimate']:.3f} real {real:.3f} " + " ".join(f"{k} {v:.2f}" for k, v in ppl.items()))
        return row

    for ratio in args.ratios:
        run(ratio, "removal", "-", joint_problem(probes, ratio, **mode_settings("removal")))
        for term, measured in measures:
            for mode in ("svd", "joint"):
                run(ratio, mode, term, joint_problem(measured, ratio, **mode_settings(mode)))
        # the SVD-only Fisher choice's real loss increase over its estimate: the table's scale at this ratio
        svd_fisher = next(r for r in rows if r["ratio"] == ratio and r["mode"] == "svd" and r["term"] == "fisher")
        kappa = max(svd_fisher["real"], 0.0) / max(svd_fisher["estimate"], 1e-12)  # a loss that fell: scale 0
        scaled = dataclasses.replace(fisher, errors=[e * kappa for e in fisher.errors])
        for mode in ("svd", "joint"):
            run(ratio, mode, "fisher-scaled", joint_problem(scaled, ratio, **mode_settings(mode)), kappa)
    summary = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
               "calibration": inputs.calibration.source, "dense": dense, "base_loss": base,
               "measure_s": measure_s, "table_s": table_s, "rows": rows, "seconds": time.perf_counter() - start}
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "report.md").write_text(report(summary))
    log(f"done in {summary['seconds'] / 60:.1f} min; wrote {out}")
    return 0


def report(summary: dict[str, Any]) -> str:
    texts = list(summary["dense"])
    head = ("| ratio | mode | truncation term | κ | removed | factored | estimate (nats) | real (nats) | "
            + " | ".join(f"{t} ppl (× dense)" for t in texts) + " | solve s | apply + eval s |")
    lines = ["# Removal only, SVD only and joint, per truncation term", "",
             f"Calibration: {summary['calibration']}; settings {json.dumps(summary['settings'])}. Dense: "
             + ", ".join(f"{t} {v:.2f}" for t, v in summary["dense"].items())
             + f". Measuring {summary['measure_s']:.0f} s, aligned Fisher table {summary['table_s']:.0f} s.", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for r in summary["rows"]:
        kappa = "" if r["kappa"] is None else f"{r['kappa']:.2f}"
        cells = " | ".join(f"{r[f'ppl_{t}']:.2f} ({r[f'vs_dense_{t}']:.2f}×)" for t in texts)
        lines.append(f"| {r['ratio']} | {r['mode']} | {r['term']} | {kappa} | {r['removed']} | {r['factored']} | "
                     f"{r['estimate']:.3f} | {r['real']:.3f} | {cells} | {r['solve_s']:.1f} | {r['apply_eval_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
