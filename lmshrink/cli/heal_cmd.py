"""``lmshrink heal``: distill a pruned model from the unpruned one (KD healing on its own)."""

from __future__ import annotations

import argparse

from . import Command, add_placement_arguments


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a pruned model directory (the model/ of a prune run)")
    p.add_argument("--teacher", default=None, help="the unpruned model: directory, hub id, .gguf, or 'smollm2' for "
                   "the embedded default (default: the model the prune run's report.json names)")
    p.add_argument("--out", required=True, help="output directory, absent or empty")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--data", nargs="+", default=None, help="calibration/evaluation text (default: pydoc topics)")
    p.add_argument("--samples", type=int, default=64, help="calibration windows the teacher labels (default 64)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens for perplexity (default 16384)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heal-option", action="append", default=[], metavar="KEY=VALUE",
                   help="KD option: steps, lr, temperature, method (lora|full), lora_rank, batch_size, top_k")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_placement_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from ..core.options import parse_option_strings
    from ..pipeline.config import LINEAR_HEAL_OPTIONS, PruneConfig
    from ..pipeline.heal_model import UNSET, heal_model
    from ..report.prune import heal_summary

    specs = {k: v for k, v in PruneConfig.heal_option_specs().items() if k not in LINEAR_HEAL_OPTIONS}
    options = parse_option_strings("KD healing", specs, args.heal_option)
    teacher = UNSET if args.teacher is None else args.teacher
    result = heal_model(args.model_dir, teacher=teacher, out=args.out, overwrite=args.overwrite, data=args.data,
                        samples=args.samples, seq_len=args.seq_len, eval_tokens=args.eval_tokens, seed=args.seed,
                        kd_options=options, progress=not args.quiet, device=args.device, dtype=args.dtype,
                        device_map=args.device_map, save_dtype=args.save_dtype)
    for line in heal_summary(result.report):
        print(line)
    print(f"wrote {result.out}")
    return 0


COMMAND = Command("heal", "Heal a pruned model by distillation from the unpruned one.", _add_arguments, _run)
