"""``lmshrink prune``: remove blocks from a model by solving a binary optimization problem."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from . import Command, add_placement_arguments
from .export_cmd import add_gguf_type_arguments

if TYPE_CHECKING:
    from ..pipeline.config import PruneConfig


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF model directory, hub id or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", nargs="+", default=None, help="local .txt/.jsonl files or an HF dataset name (default: CPython's pydoc topics)")
    p.add_argument("--remove", default="6", help="what to remove: a number of blocks (6), a share of the decoder's "
                   "parameters (25%%), a number of parameters (30M), or per kind (moe=2,attention=50%%); a budget in "
                   "parameters removes at least that much and less than one smallest unit more; default 6")
    p.add_argument("--kinds", default=None, help="comma-separated block kinds a total may remove from (others kept)")
    p.add_argument("--granularity", default="layer", help="layer (whole decoder layers) or sublayer (attention and MLP apart)")
    p.add_argument("--samples", type=int, default=64, help="calibration samples (default 64)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per calibration sample (default 128)")
    p.add_argument("--objective", default=None, help="objective (see `lmshrink plugins`); naming one runs it alone "
                   "(--objective fisher: the paper's method). Default: the default pipeline (README, 'Block removal')")
    p.add_argument("--objective-option", action="append", default=[], metavar="KEY=VALUE",
                   help="objective option, e.g. first_order=true (fisher: add the first-order term, which chooses "
                        "better removals from M ≈ 6 on; see README)")
    p.add_argument("--solver", default="anneal", help="solver (see `lmshrink plugins`); default anneal")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="solver option")
    p.add_argument("--top-k", type=int, default=10, help="candidates kept from the solver (default 10)")
    p.add_argument("--rerank", type=int, default=0, metavar="K", help="choose among the K lowest-energy candidates "
                   "by measured loss on the validation windows")
    p.add_argument("--candidates", nargs="+", default=None, metavar="SOURCE[:K]",
                   help="more candidate sources, chosen among by validation loss: objectives (solved by --solver), "
                        "presets (fisher-fo) or removal methods (sleb, angular, surrogate), e.g. fisher-fo:10 sleb")
    p.add_argument("--validation", type=int, default=32, help="calibration windows, disjoint from the samples, that "
                   "candidates are compared on (default 32)")
    p.add_argument("--heal", default=None, metavar="STEPS", help="heal the pruned model: linear (least-squares maps "
                   "folded into the weights), kd (distillation from the unpruned model), linear,kd, or none")
    p.add_argument("--heal-option", action="append", default=[], metavar="KEY=VALUE",
                   help="healing option: ridge, aware (linear); steps, lr, temperature, method (lora|full), "
                        "lora_rank, batch_size, top_k (kd)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens for perplexity (default 16384)")
    p.add_argument("--no-eval", action="store_true", help="skip perplexity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory, absent or empty (default "
                   "./lmshrink-out/<timestamp>); written in one piece once the model is pruned")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    # removal methods (lmshrink.baselines) and lm-eval
    p.add_argument("--method", default=None, help="a removal method instead of objective + solver: sleb, "
                   "blockpruner, evopress, angular, block-influence-iterative (the one-shot baselines are objectives: --objective block-influence "
                   "or norm-ratio)")
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE", help="removal-method option")
    p.add_argument("--eval-tasks", nargs="+", default=None, metavar="TASK",
                   help="lm-eval tasks to run on the pruned model, e.g. lmshrink_pydoc_cloze (offline) or hellaswag")
    p.add_argument("--eval-limit", type=float, default=None, help="examples per lm-eval task (count, or fraction < 1)")
    p.add_argument("--save-format", default="auto", choices=("auto", "gguf"), help="auto: transformers, or "
                   "lmshrink's format when a layer keeps one branch; gguf: also model.gguf beside model/ (llama.cpp; "
                   "whole layers of a Llama-family model only)")
    add_gguf_type_arguments(p, "gguf-")
    add_placement_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from ..pipeline.prune import prune
    from ..report.prune import prune_summary

    config = _config(args)
    if args.save_format == "gguf":
        from ..compress.gguf_export import check_gguf_source, check_type

        check_type(args.gguf_type, args.gguf_fallback_type)
        check_gguf_source(args.model, args.granularity)
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers' own loading and saving bars
    result = prune(args.model, config)
    r = result.report
    for line in prune_summary(r):
        print(line)
    print(f"wrote {result.out}")
    if args.save_format == "gguf":
        from ..core import LmshrinkError
        from ..pipeline.outputs import write_gguf

        try:
            gguf_file = write_gguf(result.out, result.model, result.tokenizer, args.model,
                                   r.removed_indices, r.num_blocks,
                                   type=args.gguf_type, fallback=args.gguf_fallback_type, progress=not args.quiet)
        except LmshrinkError as exc:
            raise LmshrinkError(f"{exc} (no GGUF file written; the pruned model is saved in {result.out / 'model'})") \
                from None
        print(f"wrote {gguf_file}")
    for err in r.errors:
        print(f"lmshrink: {err['stage']} failed: {err['error']} (recorded in the report; the model is saved)",
              file=sys.stderr)
    return 1 if r.errors else 0


def _config(args: argparse.Namespace) -> PruneConfig:
    """The run's settings from the command line; option strings parsed against the plugins that use them."""
    from ..core import BinaryQuadraticProblem, LmshrinkError
    from ..core.options import parse_option_strings
    from ..pipeline.config import DEFAULT_PIPELINE, PruneConfig
    from ..plugins import get_objective, get_solver

    options: dict[str, dict] = {}
    if args.method:
        from ..baselines import get_method

        if args.option or args.objective_option:
            raise LmshrinkError("--option and --objective-option set the solver and the objective, which --method "
                                "replaces; give the method's options with --method-option.")
        method = get_method(args.method)
        options["method_options"] = parse_option_strings(f"Method {method.name!r}", method.options, args.method_option)
    else:
        solver = get_solver(args.solver, BinaryQuadraticProblem)
        options["solver_options"] = parse_option_strings(f"Solver {solver.name!r}", solver.options, args.option)
        if args.objective is not None or args.objective_option:
            objective = get_objective(args.objective or DEFAULT_PIPELINE["objective"])
            options["objective_options"] = parse_option_strings(f"Objective {objective.name!r}", objective.options,
                                                                args.objective_option)
    options["heal_options"] = parse_option_strings("Healing", PruneConfig.heal_option_specs(), args.heal_option)
    eval_limit = int(args.eval_limit) if args.eval_limit is not None and args.eval_limit >= 1 else args.eval_limit
    return PruneConfig(
        remove=args.remove,
        kinds=[k.strip() for k in args.kinds.split(",")] if args.kinds else None,
        granularity=args.granularity,
        data=args.data,
        samples=args.samples,
        seq_len=args.seq_len,
        objective=args.objective,
        solver=args.solver,
        top_k=args.top_k,
        rerank=args.rerank,
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
        eval_tokens=args.eval_tokens,
        evaluate=not args.no_eval,
        progress=not args.quiet,
        method=args.method,
        eval_tasks=args.eval_tasks,
        eval_limit=eval_limit,
        candidates=args.candidates,
        validation=args.validation,
        heal=args.heal,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        save_dtype=args.save_dtype,
        **options,
    )


COMMAND = Command("prune", "Remove blocks from a model (block removal as constrained binary optimization).", _add_arguments, _run)
