"""``lmshrink compress --ratio R [--mode joint|removal|svd]``: one parameter budget over branch removal and SVD ranks,
the choice made by an exact solver."""

from __future__ import annotations

import argparse

from . import Command, add_placement_arguments


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratio", type=float, default=0.75,
                   help="fraction of the parameters of the decoder's decomposed matrices (q,k,v,o,gate,up,down "
                        "weights; not embeddings, norms or the LM head) to keep; default 0.75")
    p.add_argument("--mode", default="joint", choices=("joint", "removal", "svd"),
                   help="joint (remove branches and factor matrices, default), removal (whole attention/MLP "
                        "branches only) or svd (factor only)")
    p.add_argument("--pivga", action="store_true", help="store gauge-fixed factors: r(m+n)−r² numbers instead of r(m+n)")
    p.add_argument("--model", default=None, help="HF model directory, hub id or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", nargs="+", default=None, help="named text, local .txt/.jsonl files or an HF dataset (default: CPython's pydoc topics)")
    p.add_argument("--samples", type=int, default=32, help="calibration samples for the whitening (default 32)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample (default 256)")
    p.add_argument("--loss-windows", type=int, default=16,
                   help="calibration samples the removal and truncation losses are measured on (default 16)")
    p.add_argument("--probe-layers", type=int, default=3,
                   help="layers whose matrices are truncated to calibrate each matrix kind's sensitivity (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (default ./lmshrink-out/<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (an earlier run's) whole")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="joint-milp option, e.g. grid_step=8, mip_gap=1e-6 (repeatable)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds for the solver")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens for perplexity (default 16384)")
    p.add_argument("--no-eval", action="store_true", help="skip perplexity")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_placement_arguments(p, save=False)


def _run(args: argparse.Namespace) -> int:
    from ..core.joint import JointCompressionProblem
    from ..core.options import parse_option_strings
    from ..pipeline.compress import compress_model
    from ..plugins import get_solver
    from ..report.compress import compress_summary

    solver = get_solver("joint-milp", JointCompressionProblem)
    result = compress_model(
        args.model, ratio=args.ratio, mode=args.mode, pivga=args.pivga, data=args.data, samples=args.samples,
        seq_len=args.seq_len, loss_windows=args.loss_windows, probe_layers=args.probe_layers, seed=args.seed,
        out=args.out, overwrite=args.overwrite,
        solver_options=parse_option_strings(f"Solver {solver.name!r}", solver.options, args.option),
        time_limit=args.time_limit, eval_tokens=args.eval_tokens, evaluate=not args.no_eval,
        progress=not args.quiet, device=args.device, dtype=args.dtype, device_map=args.device_map,
    )
    for line in compress_summary(result.report):
        print(line)
    if result.out is not None:
        print(f"wrote {result.out} (reload with lmshrink.load_compressed('{result.out / 'model'}'))")
    return 0


COMMAND = Command("compress", "Compress to a parameter ratio by removing attention/MLP branches and factoring the "
                              "remaining matrices, chosen together under one budget.", _add_arguments, _run)
