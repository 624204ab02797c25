"""lm-evaluation-harness on an in-memory model: the pruned model of a run, or any model lmshrink loads.

``run_lm_eval(model, tokenizer, ["lmshrink_pydoc_cloze"])`` wraps the model in lm-eval's ``HFLM`` (no reload,
no copy) and calls ``simple_evaluate``. lmshrink ships one offline task, ``lmshrink_pydoc_cloze`` (pick the true
continuation of a sentence of CPython's documentation among 4; :mod:`lmshrink.evaluate.tasks`); lm-eval's own
tasks (``hellaswag``, ``arc_easy``, ``mmlu``, ...) work too where their datasets can be downloaded (or are in the
Hugging Face cache).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import LmshrinkError, did_you_mean, require
from ..report import markdown_table
from .tasks import TASKS_DIR

#: the offline task lmshrink ships
LOCAL_TASK = "lmshrink_pydoc_cloze"
#: name prefix of lmshrink's local tasks (they need no scan of lm-eval's own task folder)
LOCAL_PREFIX = "lmshrink_"


def parse_tasks(text: str | Sequence[str]) -> list[str]:
    """``"a,b c"`` or ``["a,b", "c"]`` → ``["a", "b", "c"]``; ``local`` stands for :data:`LOCAL_TASK`."""
    items = [text] if isinstance(text, str) else list(text)
    names = [t.strip() for item in items for t in str(item).replace(",", " ").split() if t.strip()]
    names = [LOCAL_TASK if t == "local" else t for t in names]
    if not names:
        raise LmshrinkError("No lm-eval task given (e.g. --tasks lmshrink_pydoc_cloze or --tasks hellaswag,arc_easy).")
    return list(dict.fromkeys(names))


def task_manager(tasks: Sequence[str], include_path: str | Path | Sequence[str | Path] | None = None) -> Any:
    """An lm-eval ``TaskManager`` that knows lmshrink's local tasks (and ``include_path``'s).

    lm-eval's own task folder is scanned only when a task outside lmshrink's is asked for (the scan takes
    seconds).
    """
    require("lm_eval", "eval", "lm-eval evaluation")
    from lm_eval.tasks import TaskManager

    paths: list[str] = [str(TASKS_DIR)]
    if include_path is not None:
        paths += [str(p) for p in ([include_path] if isinstance(include_path, (str, Path)) else include_path)]
    defaults = include_path is not None or any(not t.startswith(LOCAL_PREFIX) for t in tasks)
    return TaskManager(include_path=paths, include_defaults=defaults)


def check_tasks(tasks: str | Sequence[str],
                include_path: str | Path | Sequence[str | Path] | None = None) -> tuple[list[str], Any]:
    """The parsed task names and their ``TaskManager``; an unknown name is refused (without running anything)."""
    names = parse_tasks(tasks)
    manager = task_manager(names, include_path)
    unknown = [t for t in names if not _known(manager, t)]
    if unknown:
        hint = did_you_mean(unknown[0], getattr(manager, "all_tasks", None) or [LOCAL_TASK])
        raise LmshrinkError(
            f"Unknown lm-eval task {unknown[0]!r}.{hint} lmshrink's offline task is {LOCAL_TASK!r}; lm-eval's own "
            "tasks (hellaswag, arc_easy, mmlu, ...) are listed by `lm-eval ls tasks`."
        )
    return names, manager


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: str | Sequence[str],
    *,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int | str = 8,
    device: str | None = None,
    include_path: str | Path | Sequence[str | Path] | None = None,
    seed: int = 0,
    bootstrap_iters: int = 1000,
) -> dict[str, Any]:
    """Evaluate ``model`` (a transformers causal LM, in memory) on lm-eval ``tasks``; JSON-ready summary.

    Returns ``{"tasks", "scores": [{"task", "metric", "value", "stderr"}], "results" (lm-eval's per-task dict),
    "n_samples", "versions", "settings", "time_s"}``. ``limit`` caps the examples per task (an int, or a
    fraction below 1).
    """
    require("lm_eval", "eval", "lm-eval evaluation")
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    names, manager = check_tasks(tasks, include_path)
    if device is None:
        device = str(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    start = time.perf_counter()
    try:
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=names,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=False,
            bootstrap_iters=bootstrap_iters,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except Exception as exc:  # noqa: BLE001 - network and dataset errors surface as many kinds
        if isinstance(exc, LmshrinkError):
            raise
        raise LmshrinkError(
            f"lm-eval failed on {', '.join(names)}: {type(exc).__name__}: {exc}. Tasks other than {LOCAL_TASK!r} "
            "download their datasets from the Hugging Face Hub and need network access (or a filled cache)."
        ) from exc
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - start
    results = out["results"] if out else {}
    return {
        "tasks": names,
        "scores": scores(results),
        "results": results,
        "n_samples": out.get("n-samples", {}) if out else {},
        "versions": out.get("versions", {}) if out else {},
        "settings": {"num_fewshot": num_fewshot, "limit": limit, "batch_size": batch_size, "device": device,
                     "seed": seed, "lm_eval": getattr(lm_eval, "__version__", "unknown")},
        "time_s": elapsed,
    }


def _known(manager: Any, name: str) -> bool:
    listed = getattr(manager, "all_tasks", None)
    if listed is None:
        return True  # cannot tell: let lm-eval decide
    if name in listed:
        return True
    return any(c in name for c in "*?[") and bool(manager.match_tasks([name]))


def scores(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten lm-eval's ``results`` (``{"task": {"acc,none": 0.5, "acc_stderr,none": 0.1, ...}}``) to rows."""
    rows = []
    for task, metrics in results.items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if metric in ("sample_len", "sample_count"):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({"task": task, "metric": metric if filt in ("", "none") else f"{metric} ({filt})",
                         "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None})
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The scores of :func:`run_lm_eval` as a Markdown table."""
    rows = [[r["task"], r["metric"], r["value"], r["stderr"], result["n_samples"].get(r["task"], {}).get("effective")]
            for r in result["scores"]]
    return markdown_table(["task", "metric", "value", "stderr", "examples"], rows)
