"""One calibration seed of the removal study: every row's choice for every M, scored on the same held-out windows,
plain and with linear healing (and KD healing for the rows asked for).

Measurements, each made once per seed and shared by every row that needs it:

- ``search``: the loss on the first ``search_samples`` calibration windows — what SLEB and surrogate search
  evaluate (the same windows for both, so their evaluation budgets compare);
- ``validation``: the loss on windows of the calibration text disjoint from the samples, where the portfolio rows
  choose between candidates;
- ``held_out``: the loss on the held-out evaluation windows, the figure every row is judged by (shared across seeds).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: label → (objective, options): the objective rows (lowest-energy state) and portfolio sources
OBJECTIVES: dict[str, tuple[str, dict[str, Any]]] = {
    "fisher": ("fisher", {}),
    "fisher-fo": ("fisher", {"first_order": True}),
    "pairs": ("pairs", {}),
}
#: one-shot baselines posed as linear objectives (their lowest state is the baseline's choice)
BASELINE_OBJECTIVES = ("block-influence", "norm-ratio")
#: baselines that are removal methods
BASELINE_METHODS = ("block-influence-iterative", "angular", "sleb")
BASELINES = (*BASELINE_OBJECTIVES, *BASELINE_METHODS)
#: lmshrink's pipelines (rows chosen by validation loss); ``default`` is exactly what ``lmshrink prune --remove M``
#: chooses (heal-aware), ``default (--heal none)`` what it chooses with ``--heal none``
PIPELINES = ("default (--heal none)", "default", "portfolio", "portfolio (heal-aware)", "surrogate", "surrogate@half",
             "portfolio+surrogate", "portfolio+surrogate (heal-aware)")
#: rows ``--skip`` can leave out, beside any objective or baseline: the surrogate-search rows, and the default rows
SKIPPABLE_GROUPS = ("surrogate", "default")
#: above this many feasible states the K lowest come from annealing instead of enumeration
EXACT_LIMIT = 3_000_000


@dataclass
class Choice:
    """What one row chose for one M, and what that cost."""

    removed: list[int]
    seconds: float = 0.0
    search_evaluations: int = 0
    validation_evaluations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Clock:
    """Seconds spent per named component."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


def lowest_states(problem: Any, k: int, seed: int) -> list[list[int]]:
    """The k lowest feasible states (enumeration when small enough, else annealing)."""
    from lmshrink.plugins import get_solver
    from lmshrink.solvers.exact import count_feasible

    if count_feasible(problem) <= EXACT_LIMIT:
        name, opts = "exact", {}
    else:
        name, opts = "anneal", {"num_reads": max(64, 8 * k)}
    return [list(s.indices) for s in get_solver(name, problem).solve(problem, num_solutions=k, seed=seed, **opts)]


class SeedMeasures:
    """What every row of one seed shares: the calibration draw, the loss meters on its search and validation
    windows, the linear maps fitted per removal set (from the full model's kept layer inputs) and the seconds spent
    per component."""

    def __init__(self, settings: Any, seed: int, model: Any, adapter: Any, tokenizer: Any, texts: Any) -> None:
        from lmshrink.data import make_calibration
        from lmshrink.evaluate.measured import RemovalLoss
        from lmshrink.heal.linear import LinearHeal

        self.settings, self.seed, self.model, self.adapter = settings, seed, model, adapter
        self.clock = Clock()
        self.calib = make_calibration(tokenizer, texts, settings.samples, settings.seq_len, seed,
                                      validation=settings.validation)
        self.search = self.clock.time("search windows", RemovalLoss, model, adapter,
                                      self.calib.input_ids[: settings.search_samples])
        self.valid = self.clock.time("validation windows", RemovalLoss, model, adapter,
                                     self.calib.validation.input_ids)
        self.healer = LinearHeal(ridge=settings.ridge)
        self._runs: dict[tuple[int, ...], list[Any]] = {}
        self._streams: Any = None

    def streams(self) -> Any:
        """The full model's layer inputs on the calibration samples (computed on first use)."""
        from lmshrink.evaluate.midstack import LayerInputs

        if self._streams is None:
            self._streams = self.clock.time("linear healing", LayerInputs, self.model, self.adapter,
                                            self.calib.input_ids, self.healer.batch_size)
        return self._streams

    def heal(self, removed: list[int]) -> list[Any]:
        """The linear maps of ``removed``, fitted on every calibration sample (once per set)."""
        key = tuple(sorted(removed))
        if key not in self._runs:
            self._runs[key] = self.clock.time("linear healing", self.healer.fit, self.model, self.adapter, key,
                                              self.calib.input_ids, streams=self.streams())
        return self._runs[key]

    def heal_aware(self, portfolio: Any) -> tuple[list[int], float, int]:
        """The pipeline's heal-aware choice among validated candidates (:func:`heal_finalists` with the defaults
        of ``lmshrink prune``), its seconds and the number of finalists. Leaves the candidates' losses healed."""
        from lmshrink.pipeline.config import PruneConfig
        from lmshrink.pipeline.select import heal_finalists

        config = PruneConfig()
        finalists = int(config.linear_heal_options()["aware_top"])
        fit = config.heal_aware_samples(self.settings.samples)
        t0 = time.perf_counter()
        if fit is not None:
            fit_ids, streams = self.calib.input_ids[:fit], None
        else:
            fit_ids, streams = self.calib.input_ids, self.streams()
        heal_finalists(portfolio, self.valid, self.model, self.adapter, fit_ids, ridge=self.settings.ridge,
                       finalists=finalists or None, streams=streams)
        return list(portfolio.best().indices), time.perf_counter() - t0, finalists or len(portfolio)

    def rows(self, choices: dict[tuple[str, int], Choice], held_out: Any) -> list[dict[str, Any]]:
        """Every choice scored on the held-out windows, removed plainly and with linear healing."""
        rows = []
        for (label, m), c in choices.items():
            plain = held_out(c.removed)
            healed = held_out.healed(c.removed, self.heal(c.removed))
            for is_healed, est in ((False, plain), (True, healed)):
                rows.append({"seed": self.seed, "method": label, "M": m, "healed": "linear" if is_healed else "none",
                             "removed": c.removed, "loss": est.mean, "loss_se": est.se,
                             "perplexity": float(np.exp(est.mean)), "validation_loss": self.valid(c.removed).mean,
                             "search_loss": self.search(c.removed).mean, "search_evaluations": c.search_evaluations,
                             "validation_evaluations": c.validation_evaluations, "seconds": c.seconds,
                             "healing": [r.to_dict() for r in self.heal(c.removed)] if is_healed else None,
                             **{k: v for k, v in c.extra.items() if k != "table"}})
        return rows


def choose_portfolios(measures: SeedMeasures, m: int, portfolio: Any, cost: float, sleb_evals: int,
                      label: str = "portfolio") -> dict[tuple[str, int], Choice]:
    """The ``label`` row (lowest validation loss of ``portfolio``) and its ``(heal-aware)`` row at M = ``m``;
    ``cost`` is the seconds of the sources the portfolio draws on."""
    tv = time.perf_counter()
    portfolio.validate(measures.valid)
    plain = Choice(list(portfolio.best().indices), cost + time.perf_counter() - tv, sleb_evals, len(portfolio),
                   {"candidates": len(portfolio), "note": portfolio.separation_note(),
                    "table": [c.to_dict() for c in portfolio.candidates]})
    best, aware_s, finalists = measures.heal_aware(portfolio)
    return {(label, m): plain,
            (f"{label} (heal-aware)", m): Choice(best, plain.seconds + aware_s, sleb_evals,
                                                 len(portfolio) + finalists)}


def run_seed(settings: Any, seed: int, model: Any, adapter: Any, tokenizer: Any, texts: Any, held_out: Any,
             log: Any) -> dict[str, Any]:
    """Every row for every M on calibration seed ``seed``; returns plain data (JSON-able)."""
    import torch

    from lmshrink.baselines import get_method
    from lmshrink.core.errors import LmshrinkError
    from lmshrink.core.removal import removal_constraints, with_constraints
    from lmshrink.plugins import get_objective
    from lmshrink.search.surrogate_search import SurrogateSearch, sleb_budget
    from lmshrink.selection import Portfolio

    torch.manual_seed(seed)
    measures = SeedMeasures(settings, seed, model, adapter, tokenizer, texts)
    clock, calib, search, valid = measures.clock, measures.calib, measures.search, measures.valid
    gran = "layer"
    blocks = adapter.blocks(model, gran)
    n = len(blocks)
    ms = settings.remove

    choices: dict[tuple[str, int], Choice] = {}
    states: dict[tuple[str, int], list[list[int]]] = {}
    skipped: dict[str, str] = {}
    constraints = {m: removal_constraints(blocks, {None: m}) for m in ms}
    # --- objectives and one-shot baselines: K lowest states per M --------------------------------------------------
    problems = {}
    for label, (name, opts) in [*OBJECTIVES.items(), *[(b, (b, {})) for b in BASELINE_OBJECTIVES]]:
        if label in settings.skip:
            skipped[label] = "left out (--skip)"
            continue
        objective = get_objective(name)
        o = {**opts, **{k: v for k, v in (("granularity", gran), ("progress", False)) if k in objective.options}}
        log(f"seed {seed}: objective {label}")
        t = time.perf_counter()
        problems[label] = problem = objective.build(model, adapter, calib, **o)
        build_s = time.perf_counter() - t
        clock.seconds[label] = build_s
        for m in ms:
            t = time.perf_counter()
            states[(label, m)] = lowest_states(with_constraints(problem, constraints[m]), settings.top_k, seed)
            choices[(label, m)] = Choice(states[(label, m)][0], build_s + time.perf_counter() - t)

    # --- removal-method baselines ------------------------------------------------------------------------------------
    for name in BASELINE_METHODS:
        if name in settings.skip:
            skipped[name] = "left out (--skip)"
            continue
        method = get_method(name)
        log(f"seed {seed}: method {name}")
        t = time.perf_counter()
        try:
            if name == "sleb":
                before = search.evaluations
                sel = type(method)(loss=lambda s: search(s).mean).select(model, adapter, calib, {None: max(ms)},
                                                                         granularity=gran)
                elapsed = time.perf_counter() - t
                for m in ms:
                    used = sleb_budget(constraints[m])
                    choices[(name, m)] = Choice(sorted(sel.order[:m]), elapsed * used / max(search.evaluations
                                                                                             - before, 1), used)
                    states[(name, m)] = [sorted(sel.order[:m])]
            elif method.nested:
                sel = method.select(model, adapter, calib, {None: max(ms)}, granularity=gran)
                elapsed = time.perf_counter() - t
                for m in ms:
                    choices[(name, m)] = Choice(sorted(sel.order[:m]), elapsed)
                    states[(name, m)] = [sorted(sel.order[:m])]
            else:
                for m in ms:
                    t = time.perf_counter()
                    sel = method.select(model, adapter, calib, {None: m}, granularity=gran)
                    choices[(name, m)] = Choice(sel.best, time.perf_counter() - t)
                    states[(name, m)] = sel.candidates[:3]
        except LmshrinkError as exc:
            skipped[name] = str(exc)
            log(f"seed {seed}: method {name} skipped ({exc})")
        clock.seconds[name] = time.perf_counter() - t

    # --- lmshrink's pipelines --------------------------------------------------------------------------------------
    for m in ms:
        if "default" not in settings.skip:
            log(f"seed {seed}, M={m}: the default pipeline (lmshrink.prune)")
            choices.update(default_rows(settings, seed, m, model, tokenizer))

        portfolio = Portfolio()
        sources: list[str] = []
        for label in [*OBJECTIVES, *BASELINES]:
            for k, s in enumerate(states.get((label, m), []), 1):
                portfolio.add(s, f"{label}#{k}")
            if (label, m) in states:
                sources.append(label)
        cost = sum(clock.seconds.get(s, 0.0) for s in sources)
        sleb_evals = choices.get(("sleb", m), Choice([])).search_evaluations
        choices.update(choose_portfolios(measures, m, portfolio, cost, sleb_evals))
        if "surrogate" in settings.skip:
            skipped["surrogate"] = "left out (--skip)"
            continue

        budget = sleb_budget(constraints[m])
        log(f"seed {seed}, M={m}: surrogate search, budget {budget}")
        t = time.perf_counter()
        sel = SurrogateSearch(loss=search).select(model, adapter, calib, {None: m}, granularity=gran,
                                                  budget=budget, samples=settings.search_samples,
                                                  batch=settings.batch, seed=seed)
        surrogate_s = time.perf_counter() - t
        order = [tuple(h["state"]) for h in sel.info["measured"]]
        losses = {tuple(h["state"]): h["loss"] for h in sel.info["measured"]}
        full = sorted(order, key=losses.get)[: settings.validate_top]
        half = sorted(order[: max(budget // 2, 1)], key=losses.get)[: settings.validate_top]
        for label, top, used in (("surrogate", full, budget), ("surrogate@half", half, max(budget // 2, 1))):
            p = Portfolio()
            for k, s in enumerate(top, 1):
                p.add(s, f"surrogate#{k}")
            tv = time.perf_counter()
            p.validate(valid)
            choices[(label, m)] = Choice(list(p.best().indices),
                                         surrogate_s * used / budget + time.perf_counter() - tv, used, len(top),
                                         {"fit": _late_fit(sel.trace)})

        both = Portfolio()
        for c in portfolio.candidates:
            for s in c.sources:
                both.add(c.indices, s)
        for k, s in enumerate(full, 1):
            both.add(s, f"surrogate#{k}")
        for label, problem in problems.items():
            both.score(label, problem)
        choices.update(choose_portfolios(measures, m, both, cost + surrogate_s, sleb_evals + budget,
                                         "portfolio+surrogate"))

    # --- held-out scores --------------------------------------------------------------------------------------------
    log(f"seed {seed}: held-out scores of {len({tuple(c.removed) for c in choices.values()})} distinct choices")
    rows = measures.rows(choices, held_out)
    kd_rows = [_kd_row(settings, seed, m, choices[(_kd_source(choices, m), m)].removed, model, adapter, tokenizer,
                       texts, measures.heal, held_out, log, clock) for m in settings.kd if m in ms]
    return {"seed": seed, "rows": rows, "kd": kd_rows, "skipped": skipped, "seconds": clock.seconds,
            "calibration": {"source": calib.source, **calib.info},
            "validation_windows": int(calib.validation.num_samples), "search_windows": int(search.base.windows),
            "base": {"search_loss": search.base.mean, "validation_loss": valid.base.mean},
            "portfolio_tables": {m: choices[(_widest(choices, m), m)].extra.get("table") for m in ms},
            "num_blocks": n}


#: the rows :func:`refresh_seed` makes again, per ``--refresh`` value: every pipeline that chooses by validation, or
#: only the default's (the surrogate search rows and every baseline and objective are always kept)
REFRESHED = {"pipelines": ("default (--heal none)", "default", "portfolio", "portfolio (heal-aware)",
                           "portfolio+surrogate", "portfolio+surrogate (heal-aware)"),
             "default": ("default (--heal none)", "default")}


def refresh_seed(settings: Any, saved: dict[str, Any], model: Any, adapter: Any, tokenizer: Any, texts: Any,
                 held_out: Any, log: Any) -> dict[str, Any]:
    """A finished seed's pipeline rows (:data:`REFRESHED` of ``settings.refresh``) chosen again with the code as it
    is now: the portfolios from the candidates its portfolio table holds (every objective's and baseline's states,
    and surrogate search's when it ran), the default through :func:`lmshrink.prune`; the other rows are kept. For a
    pipeline change, without re-running SLEB and the searches."""
    import torch

    from lmshrink.selection import Portfolio

    seed = int(saved["seed"])
    torch.manual_seed(seed)
    started = time.perf_counter()
    measures = SeedMeasures(settings, seed, model, adapter, tokenizer, texts)
    refreshed = REFRESHED[settings.refresh]
    kept_rows = [r for r in saved["rows"] if r["method"] not in refreshed]
    made = {r["method"] for r in saved["rows"]}
    spent = saved.get("seconds", {})
    choices: dict[tuple[str, int], Choice] = {}
    for m in settings.remove:
        if "default" in made:
            log(f"seed {seed}, M={m}: the default pipeline (lmshrink.prune)")
            choices.update(default_rows(settings, seed, m, model, tokenizer))
        table = saved["portfolio_tables"][str(m)]
        old = {(r["method"], r["healed"]): r for r in saved["rows"] if r["M"] == m}
        for label, wanted in (("portfolio", lambda src: not src.startswith("surrogate")),
                              ("portfolio+surrogate", lambda src: True)):
            if (label, "none") not in old or label not in refreshed:
                continue
            portfolio = Portfolio()
            for c in table:
                for src in filter(wanted, c["sources"]):
                    portfolio.add(c["indices"], src)
            sources = {src.split("#")[0] for c in table for src in c["sources"] if wanted(src)}
            cost = sum(spent.get(s, 0.0) for s in sources)
            log(f"seed {seed}, M={m}: {label}, {len(portfolio)} candidates")
            choices.update(choose_portfolios(measures, m, portfolio, cost, old[(label, "none")]["search_evaluations"],
                                             label))
    log(f"seed {seed}: held-out scores of {len({tuple(c.removed) for c in choices.values()})} refreshed choices")
    rows = measures.rows(choices, held_out)
    kd_rows = [_kd_row(settings, seed, m, choices[(_kd_source(choices, m), m)].removed, model, adapter, tokenizer,
                       texts, measures.heal, held_out, log, measures.clock) for m in settings.kd
               if m in settings.remove]
    return {**saved, "rows": kept_rows + rows, "kd": kd_rows or saved.get("kd", []),
            "refreshed": {"rows": sorted({label for label, _ in choices}), "seconds": time.perf_counter() - started,
                          "components": measures.clock.seconds}}


def _widest(choices: dict[tuple[str, int], Choice], m: int) -> str:
    """The portfolio row with the most candidates at M (with surrogate states when they ran)."""
    return "portfolio+surrogate" if ("portfolio+surrogate", m) in choices else "portfolio"


def _kd_source(choices: dict[tuple[str, int], Choice], m: int) -> str:
    """The row whose choice gets KD healing: the default's when it ran, else the widest heal-aware portfolio."""
    for label in ("default", "portfolio+surrogate (heal-aware)", "portfolio (heal-aware)"):
        if (label, m) in choices:
            return label
    raise KeyError(m)


def default_rows(settings: Any, seed: int, m: int, model: Any, tokenizer: Any) -> dict[tuple[str, int], Choice]:
    """What ``lmshrink prune --remove M --seed SEED`` chooses (``default``: heal-aware) and what it chooses with
    ``--heal none`` (the lowest unhealed validation loss among the same candidates), run through
    :func:`lmshrink.prune` on a copy of the model with the study's calibration settings, not saved or evaluated;
    each with the run's seconds and the number of candidates validated."""
    import tempfile
    from pathlib import Path

    from lmshrink import prune
    from lmshrink.models import LoadedModel

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = prune(LoadedModel(copy.deepcopy(model), tokenizer, "study copy"), remove=m, seed=seed,
                       data=settings.data, samples=settings.samples, seq_len=settings.seq_len,
                       validation=settings.validation, evaluate=False, save=False, progress=False,
                       out=Path(tmp) / "run")
        seconds = time.perf_counter() - t
    plain = lambda c: c["loss_unhealed"] if c.get("loss_unhealed") is not None else c["loss"]  # noqa: E731
    rows = [c for c in result.report["candidates"] if c.get("error") is None and plain(c) is not None]
    unhealed = min(rows, key=plain)
    return {("default", m): Choice(sorted(result.plan.indices), seconds, 0, len(rows)),
            ("default (--heal none)", m): Choice(sorted(unhealed["indices"]), seconds, 0, len(rows))}


def _late_fit(trace: list[dict[str, Any]]) -> dict[str, float] | None:
    """Mean out-of-sample R² and Spearman over the surrogate's last rounds."""
    fits = [t["fit"] for t in trace[-10:] if t.get("fit")]
    if not fits:
        return None
    return {k: float(np.nanmean([f[k] for f in fits])) for k in ("r2", "spearman")}


def _kd_row(settings, seed, m, removed, model, adapter, tokenizer, texts, heal, held_out, log, clock):
    """KD healing on top of linear healing for the chosen set: held-out loss before and after."""
    from lmshrink.data import make_calibration
    from lmshrink.evaluate.measured import LossEstimate
    from lmshrink.heal.kd import KDConfig, distill, teacher_targets
    from lmshrink.heal.linear import LinearHeal

    log(f"seed {seed}, M={m}: KD healing of {removed}")
    config = KDConfig(steps=settings.kd_steps, batch_size=settings.kd_batch, seed=seed)
    windows = make_calibration(tokenizer, texts, config.samples, settings.seq_len, seed + 10_000).input_ids
    t = time.perf_counter()
    targets = teacher_targets(model, windows, top_k=config.top_k)
    pruned = adapter.remove(copy.deepcopy(model), removed)
    runs = heal(removed)
    LinearHeal().fold(copy.deepcopy(runs), pruned, adapter)
    before = _full_pass_loss(pruned, held_out.input_ids)
    healed, report = distill(pruned, targets, config)
    after = _full_pass_loss(healed, held_out.input_ids)
    clock.seconds["kd"] = clock.seconds.get("kd", 0.0) + time.perf_counter() - t
    del healed, pruned
    est = {k: LossEstimate(v) for k, v in (("before", before), ("after", after))}
    return {"seed": seed, "M": m, "removed": removed, "method": "heal-aware choice",
            "perplexity_linear": float(np.exp(est["before"].mean)), "perplexity_kd": float(np.exp(est["after"].mean)),
            "loss_linear": est["before"].mean, "loss_kd": est["after"].mean,
            "paired_difference": est["after"].minus(est["before"]), "kd": report.to_dict(),
            "seconds": time.perf_counter() - t}


def _full_pass_loss(model: Any, windows: Any) -> np.ndarray:
    import torch

    from lmshrink.evaluate.loss import per_sample_loss

    with torch.no_grad():
        return torch.cat([per_sample_loss(model, windows[s : s + 4]) for s in range(0, len(windows), 4)]).double().numpy()
