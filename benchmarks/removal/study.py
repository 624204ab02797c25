"""Removal quality study: which blocks each baseline, objective and lmshrink pipeline removes, and how good the
pruned model is on held-out text, over several calibration seeds, plain and healed.

For every total M in ``--remove`` and every calibration seed (a different draw of calibration samples), each row
chooses a removal set:

- baselines: ``block-influence`` and ``norm-ratio`` (one-shot scores), ``block-influence-iterative``, ``angular``
  (a window of M consecutive layers) and ``sleb`` (greedy by measured loss on the search windows);
- objectives: ``fisher`` (xᵀHx, the paper's energy), ``fisher-fo`` (with the first-order term) and ``pairs``
  (measured single and pair removals), each its lowest-energy state;
- lmshrink's pipelines, which choose by loss on validation windows disjoint from the calibration samples:
  ``default`` (exactly what ``lmshrink prune --remove M`` chooses, run through :func:`lmshrink.prune`) and
  ``default (--heal none)`` (its choice without healing), ``portfolio`` (the objectives' K lowest states and every
  baseline's pick), ``surrogate`` (surrogate search at SLEB's evaluation budget; ``surrogate@half`` at half of it),
  ``portfolio+surrogate`` (both), and the ``(heal-aware)`` versions of the portfolios (their lowest candidates
  compared again after linear healing, as the default does).

``--skip`` leaves rows out (``pairs``, ``surrogate``, ``default``, or any baseline or objective), for runs that
must fit a time budget; the report lists what was left out.

Every choice is scored on the same held-out windows, removed plainly and with linear healing; KD healing is run on
the heal-aware choice for the M given by ``--kd``. The report gives mean ± spread over seeds and, per M, the ratio
of lmshrink's pipeline to the best baseline.

Seeds, M values and rows can run apart: each seed file is reused, grown by the M values or rows a later run asks
for (:func:`add_rows`, one M at a time; :func:`.combine.merge_seeds`), or merged from another folder (``--merge FROM
INTO``).

``--budget 25%,37.5%`` runs the study at budgets in parameters instead of totals M (:mod:`.budget`): its own rows,
two held-out texts, and its own results folder.

Run ``python -m benchmarks.removal`` (see benchmarks/README.md); ``--quick`` is the CI-sized version.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from lmshrink.core.errors import LmshrinkError
from lmshrink.data import default_calibration

from ..common import Log, environment, study_main, write_json
from .budget import parse_budgets, run_budget
from .budget_report import write_budget_report
from .combine import GROWABLE, RUN_ONLY, kd_values, merge_runs, merge_seeds, saved_seed
from .seed_run import held_out_windows, refresh_seed, sleb_choices
from .settings import BUDGET_FULL, BUDGET_OUT, BUDGET_QUICK, BUDGET_ROWS, FULL, QUICK, BudgetSettings, Settings


def _ints(text: Any) -> list[int]:
    return sorted({int(v) for v in str(text).split(",") if v.strip()})


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m benchmarks.removal", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory, hub id or .gguf (default: embedded SmolLM2)")
    p.add_argument("--data", default=None, help="calibration/evaluation text (default: pydoc topics)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/removal; with --budget "
                                               f"{BUDGET_OUT})")
    p.add_argument("--remove", default=None, help="totals M, comma-separated (default 4,6,8,10,12; quick 2,4)")
    p.add_argument("--seeds", default=None, help="calibration seeds (default 0,1,2; quick 0,1)")
    p.add_argument("--samples", type=int, default=None, help="calibration samples (default 64; quick 8)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per calibration sample (default 128)")
    p.add_argument("--search-samples", type=int, default=None,
                   help="calibration samples every search loss uses: sleb and surrogate (default 16; quick 4)")
    p.add_argument("--validation", type=int, default=None,
                   help="validation windows (seq-len tokens each, disjoint from the samples; default 32)")
    p.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens (default 8192)")
    p.add_argument("--eval-window", type=int, default=None, help="tokens per held-out window (default 512)")
    p.add_argument("--top-k", type=int, default=None, help="lowest states per objective in the portfolio (10)")
    p.add_argument("--no-pairs", action="store_true", help="leave out the pairs objective (N(N+1)/2 measurements)")
    p.add_argument("--skip", default="", help="rows to leave out, comma-separated: pairs, surrogate, default, or any "
                                              "baseline or objective")
    p.add_argument("--kd", default=None, help="M values whose heal-aware choice gets KD healing (default 6)")
    p.add_argument("--kd-steps", type=int, default=None, help="KD healing steps (default 60)")
    p.add_argument("--refresh", nargs="?", const="pipelines", default="",
                   help="for seeds already in --out: choose the pipeline rows (default, portfolios; or only the "
                        "default's with --refresh default) again with the code as it is now, the portfolios from "
                        "each seed's stored candidates; baselines, objectives and searches are kept (with --budget: "
                        "the rows named, comma-separated, e.g. --refresh default,surrogate-race)")
    p.add_argument("--budget", default=None,
                   help="budgets in parameters instead of totals M: shares of the decoder's parameters or numbers of "
                        "parameters, comma-separated (e.g. 25%%,37.5%%; quick 25%%); see benchmarks/README.md")
    p.add_argument("--granularity", default=None, choices=("layer", "sublayer"),
                   help="with --budget: the units of the rows that can take either (default sublayer)")
    p.add_argument("--heldout-data", default=None,
                   help="with --budget: the second held-out text, of a domain no calibration uses (default literature)")
    p.add_argument("--search-tokens", type=int, default=None,
                   help="with --budget: tokens every search may spend measuring candidates (default 1048576; "
                        "quick 65536)")
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    a = p.parse_args(argv)
    if a.budget is not None:
        return _budget_settings(p, a)
    if a.refresh not in ("", "pipelines", "default"):
        p.error(f"--refresh takes pipelines or default in runs of totals M, not {a.refresh!r}")
    budget_only = [f for f, v in (("--granularity", a.granularity), ("--heldout-data", a.heldout_data),
                                  ("--search-tokens", a.search_tokens)) if v is not None]
    if budget_only:
        p.error(f"{budget_only[0]} applies to runs with --budget")
    try:
        skip = _named_rows(a.skip, a.no_pairs)
    except ValueError as exc:
        p.error(str(exc))
    base = QUICK if a.quick else FULL
    pick = lambda v, k: base[k] if v is None else v  # noqa: E731
    return Settings(
        model=a.model, data=_calibration(a.data), out=a.out or Settings.out, remove=_ints(pick(a.remove, "remove")),
        seeds=_ints(pick(a.seeds, "seeds")), samples=pick(a.samples, "samples"), seq_len=pick(a.seq_len, "seq_len"),
        search_samples=pick(a.search_samples, "search_samples"), validation=pick(a.validation, "validation"),
        eval_tokens=pick(a.eval_tokens, "eval_tokens"), eval_window=pick(a.eval_window, "eval_window"),
        top_k=pick(a.top_k, "top_k"), skip=skip,
        kd=_ints(pick(a.kd, "kd")), kd_steps=pick(a.kd_steps, "kd_steps"), quick=a.quick, refresh=a.refresh,
    )


def _calibration(data: str | None) -> str:
    """The study's calibration text: ``--data``, or lmshrink's default calibration, so every row (baselines and
    the default pipeline alike) reads the same text."""
    return data if data is not None else default_calibration()


def _budget_settings(p: argparse.ArgumentParser, a: argparse.Namespace) -> BudgetSettings:
    """The settings of a ``--budget`` run from the parsed flags (a flag of the count study only is refused)."""
    counts_only = [f for f, v in (("--remove", a.remove), ("--kd", a.kd), ("--top-k", a.top_k),
                                  ("--search-samples", a.search_samples)) if v is not None] + \
        (["--refresh pipelines"] if a.refresh == "pipelines" else []) + (["--no-pairs"] if a.no_pairs else [])
    if counts_only:
        p.error(f"{counts_only[0]} applies to runs of totals M, not to --budget"
                + (" (--refresh default does)" if counts_only[0] == "--refresh pipelines" else ""))
    try:
        skip = _named_rows(a.skip, False, BUDGET_ROWS)
        refresh = ",".join(_named_rows(a.refresh, False, BUDGET_ROWS, flag="--refresh"))
    except ValueError as exc:
        p.error(str(exc))
    base, own = (QUICK, BUDGET_QUICK) if a.quick else (FULL, BUDGET_FULL)
    pick = lambda v, k: base[k] if v is None else v  # noqa: E731
    return BudgetSettings(
        model=a.model, data=_calibration(a.data), out=a.out or BUDGET_OUT, seeds=_ints(pick(a.seeds, "seeds")),
        samples=pick(a.samples, "samples"), seq_len=pick(a.seq_len, "seq_len"),
        validation=pick(a.validation, "validation"), eval_tokens=pick(a.eval_tokens, "eval_tokens"),
        eval_window=pick(a.eval_window, "eval_window"), skip=skip, quick=a.quick, refresh=refresh,
        budget=parse_budgets(a.budget or own["budget"]), granularity=a.granularity or "sublayer",
        heldout_data=a.heldout_data or "literature",
        search_tokens=own["search_tokens"] if a.search_tokens is None else a.search_tokens)


def _named_rows(text: str, no_pairs: bool, known: tuple[str, ...] | None = None, flag: str = "--skip") -> list[str]:
    """The rows ``flag`` names (and ``pairs`` with ``--no-pairs``), checked against ``known`` (default: the rows
    of the count study)."""
    from lmshrink.core.errors import did_you_mean

    from .seed_run import BASELINES, OBJECTIVES, SKIPPABLE_GROUPS

    known = known or (*OBJECTIVES, *BASELINES, *SKIPPABLE_GROUPS)
    names = [v.strip() for v in text.split(",") if v.strip()] + (["pairs"] if no_pairs else [])
    for name in names:
        if name not in known:
            raise ValueError(f"Unknown row {name!r} in {flag}.{did_you_mean(name, known)} Known: "
                             f"{', '.join(known)}.")
    return sorted(set(names))


def run(settings: Settings, log: Log | None = None) -> dict[str, Any]:
    """Run every seed (each written to ``seed-<s>.json`` as it finishes, and reused if present), then the report;
    a :class:`BudgetSettings` run is the budget mode's (:func:`.budget.run_budget`)."""
    if isinstance(settings, BudgetSettings):
        return run_budget(settings, log)
    from lmshrink.data import load_texts
    from lmshrink.evaluate.measured import RemovalLoss
    from lmshrink.models import load_model
    from lmshrink.plugins import find_adapter

    from .report import write_report

    log = log or Log()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"loading model {settings.model or '(embedded default)'}")
    loaded = load_model(settings.model)
    model, tok = loaded.model.eval(), loaded.tokenizer
    adapter = find_adapter(model)
    n = len(adapter.blocks(model, "layer"))
    settings.remove = [m for m in settings.remove if 0 < m < n]
    texts = load_texts(settings.data)
    ids = held_out_windows(tok, texts, settings.eval_tokens, settings.eval_window)
    log(f"{loaded.name}: {n} blocks; held-out {ids.numel()} tokens in {len(ids)} windows; M = {settings.remove}; "
        f"seeds {settings.seeds}")
    held_out = RemovalLoss(model, adapter, ids, batch_size=4)

    results = []
    for seed in settings.seeds:
        path = out / f"seed-{seed}.json"
        saved = saved_seed(path, asdict(settings), (*RUN_ONLY, *GROWABLE), log)
        if saved is None:
            saved = _run_seed(settings, seed, model, adapter, tok, texts, held_out, log)
            write_json(path, saved)
            results.append(saved)
            continue
        have, skipped = saved["settings"]["remove"], saved["settings"]["skip"]
        if settings.refresh:
            log(f"seed {seed}: choosing the pipeline rows of {path} again")
            saved = _written(path, refresh_seed(replace(settings, remove=have, skip=skipped), saved, model, adapter,
                                                tok, texts, held_out, log))
        add = [g for g in skipped if g not in settings.skip]
        for m in have:  # one M at a time, each written as it ends: a long growth can stop and resume
            todo = [g for g in add if not has_rows(saved, g, m)]
            if todo:
                log(f"seed {seed}, M={m}: adding rows {', '.join(todo)} to {path}")
                saved = _written(path, add_rows(replace(settings, remove=[m]), saved, todo, model, adapter, tok,
                                                texts, held_out, log))
        if add:
            saved = _written(path, {**saved, "settings": {**saved["settings"],
                                                          "skip": [g for g in skipped if g not in add]}})
        missing = [m for m in settings.remove if m not in have]
        if missing:
            log(f"seed {seed}: adding M = {missing} to {path} (has M = {have})")
            more = _run_seed(replace(settings, remove=missing), seed, model, adapter, tok, texts, held_out, log,
                             sleb_known=sleb_choices(saved))
            saved = _written(path, merge_seeds(saved, more))
        kd = [m for m in settings.kd if m in saved["settings"]["remove"] and m not in kd_values(saved.get("kd", []))]
        if kd:
            log(f"seed {seed}: adding KD healing at M = {kd} to {path}")
            saved = _written(path, add_kd(settings, saved, kd, model, adapter, tok, texts, held_out, log))
        if not (settings.refresh or add or missing or kd):
            log(f"seed {seed}: reusing {path}")
        results.append(saved)
    settings.remove = sorted({m for sd in results for m in sd["settings"]["remove"]})
    summary = {"settings": asdict(settings), "model": loaded.name, "num_blocks": n,
               "held_out": {"tokens": int(ids.numel()), "windows": int(len(ids)), "loss": held_out.base.mean,
                            "perplexity": float(__import__("math").exp(held_out.base.mean))},
               "seeds": results, "environment": environment("benchmarks.removal"), "total_seconds": log.elapsed}
    write_report(out, summary)
    log(f"wrote {out}/report.md")
    return summary


def _written(path: Path, seed_result: dict[str, Any]) -> dict[str, Any]:
    """``seed_result`` after writing it to ``path``: each step that grows a seed is kept as it ends."""
    write_json(path, seed_result)
    return seed_result


def has_rows(saved: dict[str, Any], group: str, m: int) -> bool:
    """Whether a seed has the rows of ``group`` (a row name of ``--skip``) at M = ``m``."""
    return any(r["method"] == group and r["M"] == m for r in saved["rows"])


def add_rows(settings: Settings, saved: dict[str, Any], add: list[str], model: Any, adapter: Any, tok: Any,
             texts: Any, held_out: Any, log: Log) -> dict[str, Any]:
    """A finished seed with the rows ``add`` (groups it skipped) run at the M values of ``settings.remove`` and the
    portfolios that draw on them chosen again there (:func:`.seed_run.extend_seed`); its parts list the run. The
    seed's settings skip them until every M has them (:func:`run` says so once it has added them everywhere)."""
    from .combine import with_step
    from .seed_run import extend_seed

    started = log.elapsed
    out, made, spent = extend_seed(settings, saved, model, adapter, tok, texts, held_out, log, add=add,
                                   default="default" in add)
    return with_step(saved, out, spent, {"remove": list(settings.remove), "rows": made,
                                         "wall_seconds": log.elapsed - started})


def add_kd(settings: Settings, saved: dict[str, Any], ms: list[int], model: Any, adapter: Any, tok: Any,
           texts: Any, held_out: Any, log: Log) -> dict[str, Any]:
    """A finished seed with KD rows added at the M values ``ms`` (:func:`.seed_run.add_kd_rows`); its parts list
    the run."""
    from .combine import with_step
    from .seed_run import add_kd_rows

    started = log.elapsed
    out, spent = add_kd_rows(settings, saved, ms, model, adapter, tok, texts, held_out, log)
    return with_step(saved, out, spent, {"remove": list(ms), "rows": ["kd"], "wall_seconds": log.elapsed - started})


def _run_seed(settings: Settings, seed: int, model: Any, adapter: Any, tok: Any, texts: Any, held_out: Any,
              log: Log, sleb_known: Any = ()) -> dict[str, Any]:
    """One seed run for ``settings.remove``, with its settings and wall time recorded; ``sleb_known``: SLEB's
    choices at the seed's other M, so its greedy search resumes through them instead of measuring them again."""
    from .seed_run import run_seed

    started = log.elapsed
    result = run_seed(settings, seed, model, adapter, tok, texts, held_out, log, sleb_known)
    result["settings"] = asdict(settings)
    result["wall_seconds"] = log.elapsed - started
    return result


def rerender(out: str | Path) -> Path:
    """Rewrite report.md and the plots of a finished run from its summary.json (a budget run's report.md)."""
    from .report import write_report

    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    if "budget" in summary["settings"]:
        return write_budget_report(out, summary)
    return write_report(out, summary)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.removal [options]``, ``--render DIR`` to redo a run's report, or ``--merge FROM INTO``
    to add the M values of the finished study FROM to the one in INTO (same settings and seeds otherwise)."""
    import sys

    from .report import write_report

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--merge"]:
        if len(args) != 3:
            raise SystemExit("usage: python -m benchmarks.removal --merge FROM INTO")
        print(write_report(Path(args[2]), merge_runs(args[2], args[1])))
        return 0
    if not any(a == "--budget" or a.startswith("--budget=") for a in args):
        return study_main(argv, run=run, parse_args=parse_args, rerender=rerender,
                          default_dir="benchmarks/results/removal")
    try:
        return study_main(argv, run=run, parse_args=parse_args, rerender=rerender, default_dir=BUDGET_OUT)
    except LmshrinkError as exc:  # a budget the model cannot give, a text that cannot be read: one sentence
        print(f"python -m benchmarks.removal: error: {exc}", file=sys.stderr)
        return 2
