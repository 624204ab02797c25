"""Parameter sweeps under a budget of QPU time (``lmshrink sweep``).

The grid is the Cartesian product of option values (``chain_strength=1,2,annealing_time=20,50``: four points).
Every point is checked before the first runs. With ``budget_qpu_seconds`` each point runs with
``max_qpu_seconds`` set to the time left, so the solver refuses, before submitting, a point whose estimate (D-Wave's
timing model on the sampler's timing data; the ISA circuit's duration on IBM devices) would exceed it: the sweep
stops there. Each point that ran is recorded (:mod:`.record`) and scored:

- success probability p: the (weighted) fraction of the raw samples — reads, or the final QAOA distribution — that
  are feasible and reach the target energy (``target``, else the proven optimum when the problem is small enough to
  enumerate, else the best energy any point found);
- TTS99 = t · ln(0.01)/ln(1 − p), with t the point's QPU seconds divided by its samples (reads or shots): the QPU
  time to see the target once with 99 % confidence.

A dry run (``dry_run=True``) takes every point through the solver on the offline stand-in — the mock D-Wave sampler
for ``sampler=qpu``, the fake IBM device for ``backend=ibm`` — up to the moment it would submit, and reports the
estimated QPU seconds of each; nothing is sampled or submitted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, LmshrinkError, Solver
from ..core.budget import BudgetExceededError
from ..plugins import get_solver
from ..report import default_out_dir, log, markdown_table, write_json
from .metrics import tts
from .record import load_record, qpu_seconds, record_run

SWEEP_FORMAT = "lmshrink.sweep/1"
#: the option that bounds a run's QPU time; a solver must have it for budgets and dry runs
BUDGET_OPTION = "max_qpu_seconds"
#: (option, online value) → the offline stand-in a dry run uses instead
DRY_RUN_SUBSTITUTES = {("sampler", "qpu"): "mock-pegasus", ("backend", "ibm"): "fake-ibm"}
#: problems with at most this many feasible states get their proven optimum as the target
EXACT_TARGET_LIMIT = 1_000_000


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["chain_strength=1,2,annealing_time=20,50"]`` (or one ``KEY=V1,V2`` per item) → ``{key: [values]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key = None
        for token in (t.strip() for t in str(item).split(",")):
            if "=" in token:
                key, value = (part.strip() for part in token.split("=", 1))
                key = key.replace("-", "_")
                if not key or key in grid:
                    raise LmshrinkError(f"--grid {item!r}: " + ("a KEY=VALUES entry has no key." if not key else
                                                                 f"{key!r} is given twice."))
                grid[key] = [value] if value else []
            elif key is None:
                raise LmshrinkError(f"--grid {item!r} must look like KEY=V1,V2 (e.g. chain_strength=1,2,4).")
            elif token:
                grid[key].append(token)
    if not grid:
        raise LmshrinkError("--grid needs at least one KEY=V1,V2 entry.")
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise LmshrinkError(f"--grid gives no value for {empty[0]!r}.")
    return grid


def grid_points(solver: Solver, grid: dict[str, list[str]], base: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every point of the grid as typed, validated options (the ``base`` KEY=VALUE options under each); a bad
    value anywhere is refused before any point runs."""
    clash = sorted(set(grid) & {s.split("=", 1)[0].strip().replace("-", "_") for s in base})
    if clash:
        raise LmshrinkError(f"{clash[0]!r} is both swept (--grid) and fixed (--option); give it once.")
    points = []
    for values in itertools.product(*grid.values()):
        items = list(base) + [f"{k}={v}" for k, v in zip(grid, values)]
        points.append(solver.parse_options(items))
    return points


def dry_run_options(solver: Solver, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every online backend (given or by default) replaced by its offline stand-in
    (:data:`DRY_RUN_SUBSTITUTES`)."""
    complete = solver.validate(options)
    out = dict(options)
    for (key, online), offline in DRY_RUN_SUBSTITUTES.items():
        if complete.get(key) == online:
            out[key] = offline
    return out


def reference_target(problem: Any) -> tuple[float | None, str]:
    """The proven optimum when the problem is small enough to enumerate (else None), and where it came from."""
    if isinstance(problem, BinaryQuadraticProblem) and problem.num_feasible_states() <= EXACT_TARGET_LIMIT:
        return float(get_solver("exact", problem).solve(problem).best.energy), "proven optimum (exact)"
    return None, "best energy found in the sweep"


@dataclass
class SweepResult:
    """The points of a sweep with their estimates, QPU seconds and scores, and why it stopped (if it did)."""

    solver: str
    grid: dict[str, list[str]]
    rows: list[dict[str, Any]]
    budget_s: float | None
    spent_s: float
    dry_run: bool
    target: float | None
    target_source: str
    stopped: dict[str, Any] | None = None
    out: str | None = None
    problem: str | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {"format": SWEEP_FORMAT, **asdict(self)}


def run_sweep(problem: Any, solver: Solver | str, grid: dict[str, list[str]], *, base: Sequence[str] = (),
              budget_qpu_seconds: float | None = None, dry_run: bool = False, out: str | Path | None = None,
              seed: int | None = 0, num_solutions: int = 5, target: float | None = None,
              problem_source: str | None = None, progress: bool = True) -> SweepResult:
    """Run (or, with ``dry_run``, estimate) every grid point within ``budget_qpu_seconds``; records go to
    ``out/point-NN`` and the summary to ``out/sweep.json`` (a dry run writes only the summary, and only with
    ``out``)."""
    solver = get_solver(solver, problem) if isinstance(solver, str) else solver
    if budget_qpu_seconds is not None and (not math.isfinite(budget_qpu_seconds) or budget_qpu_seconds < 0):
        raise LmshrinkError(f"--budget-qpu-seconds must be a number of seconds ≥ 0, not {budget_qpu_seconds}.")
    if (budget_qpu_seconds is not None or dry_run) and BUDGET_OPTION not in solver.options:
        raise LmshrinkError(f"Solver {solver.name!r} does not estimate its QPU time (no {BUDGET_OPTION} option), "
                            "so it takes no --budget-qpu-seconds or --dry-run; dwave and qaoa do.")
    points = grid_points(solver, grid, base)
    if dry_run:
        points = [dry_run_options(solver, p) for p in points]
    for p in points:  # every point's own checks (credentials, embedding files, ...) before the first runs
        solver.preflight(problem, solver.validate(p))
    if out is None and not dry_run:
        out = default_out_dir()
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and any(out.iterdir()):
        raise LmshrinkError(f"The sweep folder {str(out)!r} already exists and is not empty; give a new one.")
    if target is None:
        target, target_source = reference_target(problem)
    else:
        target_source = "given"

    rows: list[dict[str, Any]] = []
    records: dict[int, Any] = {}
    spent, stopped = 0.0, None
    for k, options in enumerate(points, 1):
        label = {key: options[key] for key in grid}
        row: dict[str, Any] = {"point": k, **{f"option.{key}": v for key, v in label.items()}}
        left = None if budget_qpu_seconds is None else max(budget_qpu_seconds - spent, 0.0)
        if dry_run:
            estimate = estimate_point(problem, solver, options, num_solutions=num_solutions, seed=seed)
            fits = stopped is None and (left is None or estimate <= left)  # a real sweep stops at the first refusal
            row.update(estimate_s=estimate, within_budget=fits)
            rows.append(row)
            if fits:
                spent += estimate
            elif stopped is None:
                stopped = {"point": k, "estimate_s": estimate, "left_s": left}
            log(progress, f"sweep: point {k} {label}: estimated {estimate:.4g} s" + ("" if fits else
                                                                                     " (over the budget)"))
            continue
        limit = min(v for v in (left, options.get(BUDGET_OPTION)) if v is not None) \
            if left is not None else options.get(BUDGET_OPTION)
        try:
            result, path = record_run(problem, solver, out / f"point-{k:02d}", num_solutions=num_solutions,
                                      seed=seed, options={**options, BUDGET_OPTION: limit},
                                      problem_source=problem_source)
        except BudgetExceededError as exc:
            stopped = {"point": k, "estimate_s": exc.estimate_s, "left_s": left}
            log(progress, f"sweep: stopped before point {k} {label}: its estimate {exc.estimate_s:.4g} s exceeds "
                          f"the {left:.4g} s left")
            break
        used = qpu_seconds(result.info) or 0.0
        spent += used
        records[k] = load_record(path)
        row.update(qpu_s=used, best_energy=result.best.energy,
                   raw_feasible_fraction=result.raw.feasible_fraction if result.raw else None,
                   chain_break_fraction=result.info.get("chain_break_fraction"),
                   samples=result.info.get("num_reads") or result.info.get("shots"), record=str(path))
        rows.append(row)
        log(progress, f"sweep: point {k} {label}: {used:.4g} s of QPU time, best energy {result.best.energy:.6g}")

    if not dry_run:
        if target is None:  # no target given and none proven: the best any point found
            target = min((r["best_energy"] for r in rows), default=None)
        for row in rows:
            row.update(_success(records[row["point"]], row, target))
    result = SweepResult(solver.name, grid, rows, budget_qpu_seconds, spent, dry_run, target, target_source,
                         stopped, str(out) if out is not None else None, problem_source)
    if out is not None:
        write_json(out / "sweep.json", result.to_dict())
    return result


def estimate_point(problem: Any, solver: Solver, options: dict[str, Any], *, num_solutions: int,
                   seed: int | None) -> float:
    """The QPU seconds the solver estimates for a run with ``options``: it runs with a zero limit, which it refuses
    right after its estimate, before sampling anything."""
    try:
        solver.solve(problem, num_solutions=num_solutions, seed=seed, **{**options, BUDGET_OPTION: 0.0})
    except BudgetExceededError as exc:
        return exc.estimate_s
    raise LmshrinkError(f"Solver {solver.name!r} ran instead of refusing a zero {BUDGET_OPTION}; it gave no estimate.")


def _success(record: Any, row: dict[str, Any], target: float | None) -> dict[str, Any]:
    """Success probability of the point's raw samples at ``target``, and TTS99 with its QPU seconds per sample."""
    p = None if target is None else record.success_probability(target)
    t = row["qpu_s"] / row["samples"] if row.get("samples") else None
    return {"success_probability": p, "tts99_s": None if p is None or t is None else tts(t, p)}


def sweep_table(result: SweepResult | dict[str, Any]) -> str:
    """The points as a Markdown table."""
    data = result.to_dict() if isinstance(result, SweepResult) else result
    keys = [f"option.{k}" for k in data["grid"]]
    if data["dry_run"]:
        headers = ["point", *data["grid"], "estimated QPU s", "within budget"]
        rows = [[r["point"], *[r[k] for k in keys], r["estimate_s"], "yes" if r["within_budget"] else "no"]
                for r in data["rows"]]
    else:
        headers = ["point", *data["grid"], "QPU s", "best energy", "raw feasible", "chain breaks", "p success",
                   "TTS99 s"]
        rows = [[r["point"], *[r[k] for k in keys], r["qpu_s"], r["best_energy"], r["raw_feasible_fraction"],
                 r["chain_break_fraction"], r["success_probability"], r["tts99_s"]] for r in data["rows"]]
    return markdown_table(headers, rows)


def sweep_summary(result: SweepResult | dict[str, Any]) -> list[str]:
    """Plain-text lines: what ran, the budget and what was spent, why it stopped, the target."""
    data = result.to_dict() if isinstance(result, SweepResult) else result
    what = "estimated" if data["dry_run"] else "used"
    budget = "no budget" if data["budget_s"] is None else f"budget {data['budget_s']:.4g} s"
    lines = [f"sweep of {data['solver']} over {len(data['rows'])} point(s): {data['spent_s']:.4g} s of QPU time "
             f"{what} ({budget})" + (" — dry run on the offline stand-in, nothing submitted" if data["dry_run"]
                                     else "")]
    stopped = data.get("stopped")
    if stopped:
        verb = "would stop" if data["dry_run"] else "stopped"
        lines.append(f"{verb} before point {stopped['point']}: its estimate {stopped['estimate_s']:.4g} s exceeds "
                     f"the {stopped['left_s']:.4g} s left")
    if not data["dry_run"]:
        target = "none" if data["target"] is None else f"{data['target']:.6g}"
        lines.append(f"success = a raw sample at the target energy {target} ({data['target_source']})")
    return lines


def sweep_rows_array(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    """One column of the rows as floats (NaN where missing), for plots."""
    values = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
    return np.where(np.isfinite(values), values, np.nan)
