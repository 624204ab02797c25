"""``lmshrink prune``: remove blocks from a model by solving a binary optimization problem."""

from __future__ import annotations

import argparse
import sys

from ..core import LmshrinkError
from ..pipeline.config import PruneConfig
from ..pipeline.outputs import write_gguf
from ..pipeline.prune import prune
from ..report.prune import prune_summary
from . import Command
from .export_cmd import add_gguf_type_arguments
from .flags import config_from_args, model_and_settings


def _add_arguments(p: argparse.ArgumentParser) -> None:
    model_and_settings(PruneConfig)(p)
    p.add_argument("--save-format", default="auto", choices=("auto", "gguf"), help="auto: transformers, or "
                   "lmshrink's format when a layer keeps one branch; gguf: also model.gguf beside model/ (llama.cpp; "
                   "whole layers of a Llama-family model only)")
    add_gguf_type_arguments(p, "gguf-")


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args, PruneConfig)
    if args.save_format == "gguf":
        from ..compress.gguf_export import check_gguf_source, check_type

        check_type(args.gguf_type, args.gguf_fallback_type)
        check_gguf_source(args.model, args.granularity)
    if not config.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers' own loading and saving bars
    result = prune(args.model, config)
    r = result.report
    for line in prune_summary(r):
        print(line)
    print(f"wrote {result.out}")
    if args.save_format == "gguf":
        try:
            gguf_file = write_gguf(result.out, result.model, result.tokenizer, args.model,
                                   r.removed_indices, r.num_blocks,
                                   type=args.gguf_type, fallback=args.gguf_fallback_type, progress=config.progress)
        except LmshrinkError as exc:
            raise LmshrinkError(f"{exc} (no GGUF file written; the pruned model is saved in {result.out / 'model'})") \
                from None
        print(f"wrote {gguf_file}")
    for err in r.errors:
        print(f"lmshrink: {err['stage']} failed: {err['error']} (recorded in the report; the model is saved)",
              file=sys.stderr)
    return 1 if r.errors else 0


COMMAND = Command("prune", "Remove blocks from a model (block removal as constrained binary optimization).", _add_arguments, _run)
