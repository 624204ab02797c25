"""``lmshrink svd --ratio 0.8 [--solver fermigrad|milp|uniform] [--pivga]``: whitened-SVD compression with
per-matrix ranks chosen by a solver."""

from __future__ import annotations

import argparse

from . import Command, add_placement_arguments


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratio", type=float, default=0.8,
                   help="fraction of the parameters of the decomposed matrices (q,k,v,o,gate,up,down) to keep; default 0.8")
    p.add_argument("--solver", default="fermigrad",
                   help="rank allocation: fermigrad (model loss, default), milp (exact on whitened error), uniform, "
                        "or any solver of rank-allocation problems (see `lmshrink plugins`)")
    p.add_argument("--pivga", action="store_true", help="store gauge-fixed factors: r(m+n)−r² numbers instead of r(m+n)")
    p.add_argument("--model", default=None, help="HF model directory, hub id or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", nargs="+", default=None, help="local .txt/.jsonl files or an HF dataset name (default: CPython's pydoc topics)")
    p.add_argument("--samples", type=int, default=64, help="calibration samples (default 64)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (default ./lmshrink-out/<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (an earlier run's) whole")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="solver option (repeatable)")
    p.add_argument("--objective", default="fermi-rank",
                   help="rank objective: whitens the matrices and poses the problem (default fermi-rank)")
    p.add_argument("--objective-option", action="append", default=[], metavar="KEY=VALUE",
                   help="objective option, e.g. (fermi-rank) target=ce, batch_size=8, error_weights=fisher, eps=1e-6")
    p.add_argument("--whitening", choices=("dense", "sequential"), default="dense",
                   help="dense: whiten every matrix on the dense model's inputs (one pass); sequential: after the "
                        "allocation, refactor each decoder layer on the inputs of the compressed layers before it")
    p.add_argument("--update", choices=("none", "ls", "joint"), default="none",
                   help="with --whitening sequential: refit the kept factors to the dense layer's outputs by least "
                        "squares (ls: left factor only; joint: both factors, the best rank-r fit)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds for the solver")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens for perplexity (default 16384)")
    p.add_argument("--no-eval", action="store_true", help="skip perplexity")
    p.add_argument("--export-dense", action="store_true",
                   help="also write dense/: a plain transformers model with W_r multiplied back")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_placement_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from ..core.options import parse_option_strings
    from ..core.rank import RankAllocationProblem
    from ..pipeline.svd import svd_compress
    from ..plugins import get_objective, get_solver
    from ..report.svd import svd_summary

    solver = get_solver(args.solver, RankAllocationProblem)
    objective = get_objective(args.objective)
    result = svd_compress(
        args.model,
        ratio=args.ratio,
        solver=args.solver,
        pivga=args.pivga,
        objective=args.objective,
        data=args.data,
        samples=args.samples,
        seq_len=args.seq_len,
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
        solver_options=parse_option_strings(f"Solver {solver.name!r}", solver.options, args.option),
        objective_options=parse_option_strings(f"Objective {objective.name!r}", objective.options,
                                               args.objective_option),
        time_limit=args.time_limit,
        whitening=args.whitening,
        update=args.update,
        eval_tokens=args.eval_tokens,
        evaluate=not args.no_eval,
        export_dense=args.export_dense,
        progress=not args.quiet,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        save_dtype=args.save_dtype,
    )
    for line in svd_summary(result.report):
        print(line)
    print(f"wrote {result.out} (reload with lmshrink.load_compressed('{result.out / 'model'}'), or without lmshrink: "
          "AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True))")
    return 0


COMMAND = Command("svd", "Compress the linear layers by whitened SVD with per-matrix ranks chosen by a solver.",
                  _add_arguments, _run)
