"""The removal study at budgets in parameters: ``python -m benchmarks.removal --budget 25%,37.5%``.

For every budget (a share of the decoder's parameters, or a number of parameters) and every calibration seed, each
row chooses what to remove:

- ``block-influence`` (one-shot score, its lowest state under the budget's band by a solver that honours weighted
  constraints), ``block-influence-iterative``, ``angular`` (the window of consecutive layers with the smallest
  angular distance: the fewest layers that reach the budget, so it may remove more) and ``sleb``: whole layers,
  the unit these methods are defined on;
- ``blockpruner``: attention and MLP sub-layers (its unit; left out at ``--granularity layer``);
- ``evopress``: the study's units (``--granularity``, sub-layers by default);
- ``surrogate-race``: lmshrink's own search (a surrogate QUBO of the measured KL that a solver minimises under the
  band, racing in tokens), in the study's units;
- ``default``: exactly what ``lmshrink prune --remove 25%`` chooses (:func:`lmshrink.prune`, in its own units).

A choice made in whole layers is scored in the study's units (a layer is its attention and MLP sub-layers). The
searches (``sleb``, ``blockpruner``, ``evopress``, ``surrogate-race``) get the same budget of tokens,
``--search-tokens``: EvoPress stops before a generation could pass it, surrogate-race before a round could; the
greedies measure each candidate on as many calibration windows as make their expected number of measurements
(:func:`expected_greedy_evaluations`) fit in it (at least one window: a budget below one window per expected
measurement is exceeded, and the row's tokens show by how much). Each row
records the tokens it spent, its loss evaluations and its seconds.

Every choice is scored on the held-out windows of the calibration text's evaluation split and of a second text
(``--heldout-data``, ``literature`` by default) of another domain, removed plainly and with linear healing fitted on
the calibration samples; each row gives the parameters it removes and their share of the decoder.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmshrink.baselines import get_method
from lmshrink.baselines.evopress import parse_stages
from lmshrink.core import BinaryQuadraticProblem
from lmshrink.core.errors import LmshrinkError
from lmshrink.core.removal import ParameterBudget, parse_remove, with_constraints
from lmshrink.data import load_texts
from lmshrink.evaluate.measured import RemovalLoss
from lmshrink.models import load_model
from lmshrink.pipeline.request import BUDGET_SOLVERS
from lmshrink.pipeline.target import Target, budget_facts, removal_target
from lmshrink.plugins import find_adapter, get_objective, get_solver, registry

from ..common import Log, environment, write_json
from .budget_report import write_budget_report
from .combine import RUN_ONLY, saved_seed
from .seed_run import Choice, SeedMeasures, held_out_windows, run_default
from .settings import BUDGET_ROWS as ROWS
from .settings import BudgetSettings

#: rows whose method works in one unit only (the others work in the study's units)
NATIVE_UNITS = {"block-influence": "layer", "block-influence-iterative": "layer", "angular": "layer",
                "sleb": "layer", "blockpruner": "sublayer"}
#: rows that search by measuring candidates on calibration windows, each given ``--search-tokens``
SEARCHES = ("sleb", "blockpruner", "evopress", "surrogate-race")
#: searches of the count study that take no budget in parameters
NOT_BUDGETED = {"surrogate": "surrogate search removes a number of blocks, not a budget in parameters"}
#: units from finest to coarsest: a choice in coarser units is scored in finer ones, not the other way round
UNITS = ("sublayer", "layer")


# --- settings ----------------------------------------------------------------------------------------------------
def parse_budgets(text: str) -> list[str]:
    """``--budget``: comma-separated budgets in parameters (``25%``, ``37.5%``, ``30M``), each as
    :func:`lmshrink.core.removal.parse_remove` writes it back; a count of blocks or a bad amount is refused in one
    sentence."""
    budgets = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            spec = parse_remove(part)
        except LmshrinkError as exc:
            raise LmshrinkError(str(exc).replace("--remove", "--budget", 1)) from None
        amount = spec.get(None)
        if not isinstance(amount, ParameterBudget):
            raise LmshrinkError(f"--budget {part!r} is not a budget in parameters: give a share of the decoder's "
                                "parameters such as 25% or a number of parameters such as 30M (counts of blocks go "
                                "to --remove).")
        budgets.append(str(amount))
    if not budgets:
        raise LmshrinkError("--budget names no budget: give shares of the decoder's parameters such as 25%,37.5%.")
    return list(dict.fromkeys(budgets))


def text_name(data: str | None) -> str:
    """The name a held-out text goes by in the rows: ``pydoc`` for the default texts (``mix`` holds pydoc's held-out
    split), else what ``--data`` gave."""
    return "pydoc" if data in (None, "pydoc", "mix") else str(data)


# --- units and budgets -------------------------------------------------------------------------------------------
def row_units(row: str, granularity: str) -> str:
    """The units ``row`` removes in a study at ``granularity``."""
    return NATIVE_UNITS.get(row, granularity)


def in_units(removed: list[int], source: list[Any], blocks: list[Any]) -> list[int]:
    """The indices, among ``blocks``, of what ``removed`` (indices among ``source``) removes: the same blocks, or a
    layer's sub-layers (the blocks whose name is inside the layer's)."""
    found: set[int] = set()
    for name in (source[i].name for i in removed):
        inside = {b.index for b in blocks if b.name == name or b.name.startswith(name + ".")}
        if not inside:
            raise LmshrinkError(f"Block {name} has no counterpart among the study's units.")
        found |= inside
    return sorted(found)


def expected_greedy_evaluations(target: Target) -> int:
    """The loss measurements a greedy (SLEB, BlockPruner) is expected to make on ``target``: each step measures
    every unit still allowed, and a budget's band takes about lower bound / mean unit size steps."""
    total = 0
    for c in target.constraints:
        if c.is_cardinality:
            steps = int(c.equals or 0)
        else:
            steps = math.ceil(float(c.lower or 0.0) / float(np.mean(c.weight_array())))
        n = len(c.indices)
        total += sum(n - k for k in range(min(steps, n)))
    return max(total, 1)


def greedy_windows(target: Target, tokens: int, seq_len: int, samples: int) -> int:
    """Calibration windows per measurement that make a greedy's expected measurements spend about ``tokens`` (at
    least 1, at most the samples)."""
    return int(min(max(tokens // (expected_greedy_evaluations(target) * seq_len), 1), samples))


def evopress_token_cap(tokens: int, stages: str, offspring: int, windows: int, seq_len: int) -> int:
    """EvoPress's ``max_tokens`` that keeps it within ``tokens``: it checks the cap before each generation, so the
    cap is ``tokens`` less the most one generation can spend (every child on the first stage, the survivors of
    each stage on the next)."""
    pool, worst = offspring, 0
    for w, keep in parse_stages(stages):
        worst += pool * min(w, windows) * seq_len
        pool = min(pool, keep)
    return max(tokens - worst, 1)


# --- the rows ----------------------------------------------------------------------------------------------------
class BudgetRows:
    """Chooses every row's removal for one seed: the seed's calibration (:class:`.seed_run.SeedMeasures`), the
    targets (blocks and budget bands) per budget and per unit, and what each choice cost."""

    def __init__(self, settings: BudgetSettings, measures: SeedMeasures) -> None:
        self.settings, self.measures = settings, measures
        self.model, self.adapter, self.calib = measures.model, measures.adapter, measures.calib
        self._targets: dict[tuple[str, str], Target] = {}

    def target(self, budget: str, units: str) -> Target:
        """The blocks in ``units`` and the band of ``budget`` over them (made once)."""
        key = (budget, units)
        if key not in self._targets:
            self._targets[key] = removal_target(self.adapter, self.model, parse_remove(budget), units, None)
        return self._targets[key]

    def choose(self, row: str, budget: str) -> Choice:
        """``row``'s choice at ``budget``, in the study's units, with its seconds, evaluations and tokens."""
        units = row_units(row, self.settings.granularity)
        if UNITS.index(units) < UNITS.index(self.settings.granularity):
            raise LmshrinkError(f"{row} removes {units}s, finer than the study's units ({self.settings.granularity}).")
        t = time.perf_counter()
        target = self.target(budget, units)
        if row == "default":
            removed, units, facts = self._default(budget)
        elif row == "block-influence":
            removed, facts = self._objective(row, target), {}
        elif row == "angular":
            removed, facts = self._angular(budget), {}
        elif row in SEARCHES:
            removed, facts = self._search(row, target)
        else:
            removed, facts = get_method(row).select(self.model, self.adapter, self.calib, target.spec,
                                                    granularity=units).best, {}
        seconds = time.perf_counter() - t
        study = self.target(budget, self.settings.granularity)
        mapped = in_units(sorted(removed), self.adapter.blocks(self.model, units), study.blocks)
        return Choice(mapped, seconds, int(facts.pop("evaluations", 0)), int(facts.pop("validated", 0)),
                      {"units": units, "tokens": facts.pop("tokens", None), **facts})

    def _objective(self, name: str, target: Target) -> list[int]:
        """The lowest state of objective ``name`` under the budget's band, by the first solver of
        :data:`~lmshrink.pipeline.request.BUDGET_SOLVERS` that honours weighted constraints."""
        objective = get_objective(name)
        options = {k: v for k, v in (("granularity", target.granularity), ("progress", False))
                   if k in objective.options}
        problem = with_constraints(objective.build(self.model, self.adapter, self.calib, **options),
                                   target.constraints)
        solver = next(get_solver(n, BinaryQuadraticProblem) for n in BUDGET_SOLVERS if n in registry("solver")
                      and "weighted" in get_solver(n, BinaryQuadraticProblem).capabilities.constraint_kinds)
        return list(solver.solve(problem, num_solutions=1, seed=self.measures.seed)[0].indices)

    def _angular(self, budget: str) -> list[int]:
        """The window of the fewest consecutive layers that holds the budget's parameters, the one with the smallest
        angular distance among those that do."""
        target = self.target(budget, "layer")
        lower = min(c.lower for c in target.constraints if not c.is_cardinality)
        method = get_method("angular")
        for n in range(1, len(target.blocks)):
            sel = method.select(self.model, self.adapter, self.calib, n, granularity="layer")
            fits = [c for c in sel.candidates if sum(target.parameters[i] for i in c) >= lower]
            if fits:
                return fits[0]
        raise LmshrinkError(f"No window of layers holds the budget {budget}.")

    def _search(self, name: str, target: Target) -> tuple[list[int], dict[str, Any]]:
        """A search's choice within ``--search-tokens``, with the tokens it spent and its loss evaluations."""
        s, seq_len = self.settings, int(self.calib.input_ids.shape[1])
        if name == "evopress":
            opts = {"generations": 1_000_000, "seed": self.measures.seed, "stages": "4:4,16:2,64", "offspring": 16}
            opts["max_tokens"] = evopress_token_cap(s.search_tokens, opts["stages"], opts["offspring"],
                                                    int(self.calib.input_ids.shape[0]), seq_len)
            sel = get_method(name).select(self.model, self.adapter, self.calib, target.spec,
                                          granularity=target.granularity, **opts)
            return sel.best, {"tokens": int(sel.info["tokens_spent"]), "evaluations": int(sel.info["evaluations"]),
                              "generations": int(sel.info["generations_run"])}
        if name == "surrogate-race":
            sel = get_method(name).select(self.model, self.adapter, self.calib, target.spec,
                                          granularity=target.granularity, max_tokens=s.search_tokens,
                                          seed=self.measures.seed)
            return sel.best, {"tokens": int(sel.info["tokens_spent"]), "evaluations": int(sel.info["evaluations"]),
                              "rounds": int(sel.info["rounds_run"])}
        windows = greedy_windows(target, s.search_tokens, seq_len, int(self.calib.input_ids.shape[0]))
        method = get_method(name)
        if name == "sleb":  # measured mid-stack, as BlockPruner's and EvoPress's losses are (same values, faster)
            meter = RemovalLoss(self.model, self.adapter, self.calib.input_ids[:windows],
                                granularity=target.granularity)
            method = type(method)(loss=lambda removed: meter(removed).mean)
        sel = method.select(self.model, self.adapter, self.calib, target.spec, granularity=target.granularity,
                            samples=windows)
        spent = int(sel.info["loss_measurements"])
        return sel.best, {"tokens": spent * windows * seq_len, "evaluations": spent, "windows": windows}

    def _default(self, budget: str) -> tuple[list[int], str, dict[str, Any]]:
        """What ``lmshrink prune --remove BUDGET`` chooses on this seed, in its own units, with the number of
        candidates it compared on the validation windows."""
        result, _ = run_default(self.settings, self.measures.seed, budget, self.model, self.measures.tokenizer)
        compared = [c for c in result.report["candidates"] if c.get("error") is None]
        return sorted(result.plan.indices), result.plan.granularity, {"validated": len(compared)}


def scored_rows(rows: BudgetRows, choices: dict[tuple[str, str], Choice],
                held_out: dict[str, RemovalLoss]) -> list[dict[str, Any]]:
    """Every choice on every held-out text, removed plainly and with linear healing, with the parameters it
    removes and their share of the decoder."""
    out = []
    for (label, budget), c in choices.items():
        facts = budget_facts(rows.target(budget, rows.settings.granularity), c.removed) or {}
        maps = rows.measures.heal(c.removed)
        for text, meter in held_out.items():
            for healed, est in (("none", meter(c.removed)), ("linear", meter.healed(c.removed, maps))):
                out.append({"seed": rows.measures.seed, "method": label, "budget": budget, "text": text,
                            "healed": healed, "removed": c.removed, "loss": est.mean, "loss_se": est.se,
                            "perplexity": float(np.exp(est.mean)),
                            "parameters_removed": facts.get("parameters_removed"),
                            "share_of_decoder": facts.get("share_of_decoder"),
                            "search_evaluations": c.search_evaluations,
                            "validation_evaluations": c.validation_evaluations, "seconds": c.seconds, **c.extra})
    return out


def choose_rows(settings: BudgetSettings, seed: int, model: Any, adapter: Any, tokenizer: Any, texts: Any,
                labels: list[str], log: Log) -> tuple[BudgetRows, dict[tuple[str, str], Choice], dict[str, str]]:
    """Seed ``seed``'s calibration and the choice of each row of ``labels`` at every budget; a row a budget refuses
    is left out with the reason (the third value, keyed ``"<row> at <budget>"``)."""
    torch.manual_seed(seed)
    rows = BudgetRows(settings, SeedMeasures(settings, seed, model, adapter, tokenizer, texts, settings.granularity))
    choices: dict[tuple[str, str], Choice] = {}
    failed: dict[str, str] = {}
    for budget in settings.budget:
        for label in labels:
            log(f"seed {seed}, {budget}: {label}")
            try:
                c = choices[(label, budget)] = rows.choose(label, budget)
                log(f"seed {seed}, {budget}: {label} took {c.seconds:.1f} s"
                    + (f", {c.extra['tokens']:,} tokens" if c.extra.get("tokens") is not None else ""))
            except LmshrinkError as exc:
                failed[f"{label} at {budget}"] = str(exc)
                log(f"seed {seed}, {budget}: {label} skipped ({exc})")
    return rows, choices, failed


def run_budget_seed(settings: BudgetSettings, seed: int, model: Any, adapter: Any, tokenizer: Any, texts: Any,
                    held_out: dict[str, RemovalLoss], log: Log) -> dict[str, Any]:
    """Every row at every budget on calibration seed ``seed``, scored; plain data (JSON-able)."""
    started = log.elapsed
    rows, choices, failed = choose_rows(settings, seed, model, adapter, tokenizer, texts,
                                        [r for r in ROWS if r not in settings.skip], log)
    skipped = {label: "left out (--skip)" for label in ROWS if label in settings.skip}
    skipped.update(NOT_BUDGETED)
    skipped.update(failed)
    measures = rows.measures
    log(f"seed {seed}: held-out scores of {len({tuple(c.removed) for c in choices.values()})} distinct choices")
    return {"seed": seed, "rows": scored_rows(rows, choices, held_out), "skipped": skipped,
            "seconds": measures.clock.seconds, "calibration": {"source": measures.calib.source, **measures.calib.info},
            "num_units": len(measures.blocks), "settings": asdict(settings), "wall_seconds": log.elapsed - started}


def refresh_budget_seed(settings: BudgetSettings, saved: dict[str, Any], model: Any, adapter: Any, tokenizer: Any,
                        texts: Any, held_out: dict[str, RemovalLoss], log: Log) -> dict[str, Any]:
    """A finished seed with the rows ``settings.refresh`` names (comma-separated, e.g. ``default`` after a change
    of lmshrink's default pipeline) chosen and scored again by the code as it is now; every other row kept as it
    was."""
    seed, started = int(saved["seed"]), time.perf_counter()
    again = [r for r in settings.refresh.split(",") if r]
    rows, choices, failed = choose_rows(settings, seed, model, adapter, tokenizer, texts, again, log)
    kept = [r for r in saved["rows"] if r["method"] not in again]
    skipped = {k: v for k, v in saved.get("skipped", {}).items() if k.split(" at ")[0] not in again}
    return {**saved, "rows": kept + scored_rows(rows, choices, held_out), "skipped": {**skipped, **failed},
            "refreshed": {"rows": again, "seconds": time.perf_counter() - started}}


def run_budget(settings: BudgetSettings, log: Log | None = None) -> dict[str, Any]:
    """Run every seed of the budget mode (each written to ``seed-<s>.json`` as it ends, and reused when its settings
    match, the rows ``refresh`` names chosen again), then the report. A budget the model cannot give is
    refused before any seed runs."""
    log = log or Log()
    out = Path(settings.out)
    log(f"loading model {settings.model or '(embedded default)'}")
    loaded = load_model(settings.model)
    model, tok = loaded.model.eval(), loaded.tokenizer
    adapter = find_adapter(model)
    for budget in settings.budget:  # refuses a budget above what may go or below the smallest unit
        removal_target(adapter, model, parse_remove(budget), settings.granularity, None)
    names = [text_name(settings.data), text_name(settings.heldout_data)]
    if names[0] == names[1]:
        raise LmshrinkError(f"--heldout-data {names[1]} is the calibration text; give a text of another domain.")
    texts = load_texts(settings.data)
    held_out = {name: RemovalLoss(model, adapter, held_out_windows(tok, t, settings.eval_tokens, settings.eval_window),
                                  granularity=settings.granularity, batch_size=4)
                for name, t in zip(names, (texts, load_texts(settings.heldout_data)))}
    out.mkdir(parents=True, exist_ok=True)
    units = len(adapter.blocks(model, settings.granularity))
    log(f"{loaded.name}: {units} units ({settings.granularity}); budgets {', '.join(settings.budget)}; held-out "
        + "; ".join(f"{n} {m.tokens} tokens" for n, m in held_out.items()) + f"; seeds {settings.seeds}")
    results = []
    for seed in settings.seeds:
        path = out / f"seed-{seed}.json"
        saved = saved_seed(path, asdict(settings), RUN_ONLY, log)
        if saved is None:
            saved = run_budget_seed(settings, seed, model, adapter, tok, texts, held_out, log)
            write_json(path, saved)
        elif settings.refresh:
            log(f"seed {seed}: choosing the rows {settings.refresh} of {path} again")
            saved = refresh_budget_seed(settings, saved, model, adapter, tok, texts, held_out, log)
            write_json(path, saved)
        else:
            log(f"seed {seed}: reusing {path}")
        results.append(saved)
    summary = {"settings": asdict(settings), "model": loaded.name, "num_units": units,
               "held_out": {name: {"tokens": m.tokens, "windows": int(m.base.windows), "loss": m.base.mean,
                                   "perplexity": float(math.exp(m.base.mean))} for name, m in held_out.items()},
               "seeds": results, "environment": environment("benchmarks.removal"), "total_seconds": log.elapsed}
    write_budget_report(out, summary)
    log(f"wrote {out}/report.md")
    return summary
