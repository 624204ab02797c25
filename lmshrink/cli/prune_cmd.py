"""``lmshrink prune``: remove blocks from a model by solving a binary optimization problem."""

from __future__ import annotations

import argparse

from . import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF model directory, hub id or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", nargs="+", default=None, help="local .txt/.jsonl files or an HF dataset name (default: CPython's pydoc topics)")
    p.add_argument("--remove", default="6", help="blocks to remove: a total (6) or per kind (moe=2,attention=1); default 6")
    p.add_argument("--kinds", default=None, help="comma-separated block kinds a total may remove from (others kept)")
    p.add_argument("--granularity", default="layer", help="layer (whole decoder layers) or sublayer (attention and MLP apart)")
    p.add_argument("--samples", type=int, default=64, help="calibration samples (default 64)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per calibration sample (default 128)")
    p.add_argument("--objective", default="fisher", help="objective (see `lmshrink plugins`); default fisher")
    p.add_argument("--objective-option", action="append", default=[], metavar="KEY=VALUE",
                   help="objective option, e.g. first_order=true (fisher: add the first-order term, which chooses "
                        "better removals from M ≈ 6 on; see README)")
    p.add_argument("--solver", default="anneal", help="solver (see `lmshrink plugins`); default anneal")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="solver option")
    p.add_argument("--top-k", type=int, default=10, help="candidates kept from the solver (default 10)")
    p.add_argument("--rerank", type=int, default=0, metavar="K", help="re-rank the K lowest-energy candidates by measured calibration loss")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens for perplexity (default 16384)")
    p.add_argument("--no-eval", action="store_true", help="skip perplexity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (default ./lmshrink-out/<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    # removal methods (lmshrink.baselines) and lm-eval
    p.add_argument("--method", default=None, help="a removal method instead of objective + solver: sleb, angular, "
                   "block-influence-iterative (the one-shot baselines are objectives: --objective block-influence "
                   "or norm-ratio)")
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE", help="removal-method option")
    p.add_argument("--eval-tasks", nargs="+", default=None, metavar="TASK",
                   help="lm-eval tasks to run on the pruned model, e.g. lmshrink_pydoc_cloze (offline) or hellaswag")
    p.add_argument("--eval-limit", type=float, default=None, help="examples per lm-eval task (count, or fraction < 1)")


def _run(args: argparse.Namespace) -> int:
    from ..core.options import parse_option_strings
    from ..pipeline.prune import prune
    from ..plugins import get_objective, get_solver
    from ..core import BinaryQuadraticProblem

    solver = get_solver(args.solver, BinaryQuadraticProblem)
    objective = get_objective(args.objective)
    method_options = {}
    if args.method:
        from ..baselines import get_method

        method = get_method(args.method)
        method_options = parse_option_strings(f"Method {method.name!r}", method.options, args.method_option)
    eval_limit = int(args.eval_limit) if args.eval_limit is not None and args.eval_limit >= 1 else args.eval_limit
    result = prune(
        args.model,
        remove=args.remove,
        kinds=[k.strip() for k in args.kinds.split(",")] if args.kinds else None,
        granularity=args.granularity,
        data=args.data,
        samples=args.samples,
        seq_len=args.seq_len,
        objective=args.objective,
        objective_options=parse_option_strings(f"Objective {objective.name!r}", objective.options, args.objective_option),
        solver=args.solver,
        solver_options=parse_option_strings(f"Solver {solver.name!r}", solver.options, args.option),
        top_k=args.top_k,
        rerank=args.rerank,
        seed=args.seed,
        out=args.out,
        eval_tokens=args.eval_tokens,
        evaluate=not args.no_eval,
        progress=not args.quiet,
        method=args.method,
        method_options=method_options,
        eval_tasks=args.eval_tasks,
        eval_limit=eval_limit,
    )
    r = result.report
    removed = ", ".join(f"{b['index']}:{b['name']}" for b in r["removed"])
    print(f"removed {len(r['removed'])}/{r['num_blocks']} blocks: {removed}")
    if r["perplexity_before"]:
        print(f"perplexity {r['perplexity_before']['perplexity']:.3f} -> {r['perplexity_after']['perplexity']:.3f} "
              f"on {r['perplexity_after']['tokens']} held-out tokens")
    for row in (r.get("lm_eval") or {}).get("scores", []):
        print(f"lm-eval {row['task']} {row['metric']}: {row['value']:.4f}")
    print(f"wrote {result.out}")
    return 0


COMMAND = Command("prune", "Remove blocks from a model (block removal as constrained binary optimization).", _add_arguments, _run)
