"""``lmshrink eval``: run lm-evaluation-harness tasks on a model directory (transformers or lmshrink format)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.errors import LmshrinkError
from ..devices import model_device, placement_settings, resolve_placement
from ..evaluate.lm_eval import check_tasks, markdown, run_lm_eval
from ..report import write_json
from . import Command, add_placement_arguments


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="model directory (plain transformers, or lmshrink format as written by prune), hub id or "
                        ".gguf (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--tasks", nargs="+", default=["lmshrink_pydoc_cloze"],
                   help="lm-eval tasks, comma- or space-separated (default: lmshrink_pydoc_cloze, offline; "
                        "hellaswag, arc_easy, mmlu, ... need network access to download their data)")
    p.add_argument("--limit", type=float, default=None,
                   help="examples per task: a count, or a fraction below 1 (default: all)")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    p.add_argument("--batch-size", default="8", help="batch size, or 'auto' (default 8)")
    p.add_argument("--include-path", default=None, help="extra folder of lm-eval task YAML files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write lm_eval.json and lm_eval.md into this folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_placement_arguments(p, save=False)


def _run(args: argparse.Namespace) -> int:
    from ..models import load_model

    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    batch = args.batch_size if args.batch_size == "auto" else _positive_int("--batch-size", args.batch_size)
    if limit is not None and limit <= 0:
        raise LmshrinkError(f"--limit must be a count or a fraction above 0, not {args.limit}.")
    placement = resolve_placement(args.device, args.dtype, args.device_map)
    check_tasks(args.tasks, args.include_path)  # an unknown task fails before the model loads
    loaded = load_model(args.model, dtype=placement.dtype, device=placement.device, device_map=placement.device_map)
    device = str(model_device(loaded.model))
    result = run_lm_eval(loaded.model, loaded.tokenizer, args.tasks, num_fewshot=args.num_fewshot, limit=limit,
                         batch_size=batch, device=device, include_path=args.include_path, seed=args.seed)
    result["settings"].update(device=device, dtype=placement_settings(loaded.model, None, None)["dtype"],
                              device_map=placement.device_map)
    result["model"] = loaded.name
    if args.out:
        out = Path(args.out)
        write_json(out / "lm_eval.json", result)
        (out / "lm_eval.md").write_text(f"# lm-eval: {loaded.name}\n\n{markdown(result)}\n")
    if args.json:
        print(json.dumps({k: result[k] for k in ("model", "tasks", "scores", "n_samples", "settings", "time_s")},
                         indent=1, default=str))
    else:
        print(f"lm-eval on {loaded.name} ({result['time_s']:.1f} s)")
        print(markdown(result))
    return 0


def _positive_int(flag: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise LmshrinkError(f"{flag} must be 'auto' or a whole number of at least 1, not {text!r}.")
    return value


COMMAND = Command("eval", "Run lm-evaluation-harness tasks on a model (offline task: lmshrink_pydoc_cloze).",
                  _add_arguments, _run)
