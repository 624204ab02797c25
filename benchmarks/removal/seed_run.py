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
from functools import cached_property
from typing import Any

import numpy as np

from lmshrink.data import evaluation_ids

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
#: the blocks the study removes: whole decoder layers
GRANULARITY = "layer"
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

    def __init__(self, settings: Any, seed: int, model: Any, adapter: Any, tokenizer: Any, texts: Any,
                 granularity: str = GRANULARITY) -> None:
        from lmshrink.data import make_calibration
        from lmshrink.heal.linear import LinearHeal

        self.settings, self.seed, self.model, self.adapter = settings, seed, model, adapter
        self.tokenizer, self.texts = tokenizer, texts
        #: the units every loss meter and linear map of this seed works in
        self.granularity = granularity
        self.blocks = adapter.blocks(model, granularity)
        self.clock = Clock()
        self.calib = make_calibration(tokenizer, texts, settings.samples, settings.seq_len, seed,
                                      validation=settings.validation)
        self.healer = LinearHeal(ridge=settings.ridge)
        self._runs: dict[tuple[int, ...], list[Any]] = {}
        self._streams: Any = None
        #: validation measurements taken from a saved run (not yet priced into a row), and the seconds per
        #: measurement that run recorded
        self._remembered: set[frozenset[int]] = set()
        self._saved_rate: float | None = None
        self._validated = [0.0, 0]  # seconds and sets this run measured on the validation windows

    @cached_property
    def search(self) -> Any:
        """The loss meter on the first ``search_samples`` calibration windows (made on first use)."""
        from lmshrink.evaluate.measured import RemovalLoss

        return self.clock.time("search windows", RemovalLoss, self.model, self.adapter,
                               self.calib.input_ids[: self.settings.search_samples], granularity=self.granularity)

    @cached_property
    def valid(self) -> Any:
        """The loss meter on the validation windows (made on first use)."""
        from lmshrink.evaluate.measured import RemovalLoss

        return self.clock.time("validation windows", RemovalLoss, self.model, self.adapter,
                               self.calib.validation.input_ids, granularity=self.granularity)

    def remember(self, saved: dict[str, Any]) -> int:
        """Take the per-window validation losses a saved run of this seed kept in its portfolio tables, so its
        candidates are not measured again; returns how many."""
        from lmshrink.evaluate.measured import LossEstimate

        self._saved_rate = saved.get("validation_seconds_per_set")
        for table in (saved.get("portfolio_tables") or {}).values():
            for c in table or []:
                if c.get("loss_windows") and c.get("error") is None:
                    self.valid.remember(c["indices"], LossEstimate(np.asarray(c["loss_windows"], dtype=float)))
                    self._remembered.add(frozenset(c["indices"]))
        return len(self._remembered)

    def validate(self, portfolio: Any) -> float:
        """Measure ``portfolio`` on the validation windows; returns the seconds that cost, a measurement taken
        from a saved run priced at the seconds per measurement seen (here, else in that run) the first time a row
        uses it, so a grown seed's rows cost what a fresh run's would."""
        before, t = self.valid.evaluations, time.perf_counter()
        portfolio.validate(self.valid)
        spent = time.perf_counter() - t
        self._validated[0] += spent
        self._validated[1] += self.valid.evaluations - before
        reused = {frozenset(c.indices) for c in portfolio.runnable()} & self._remembered
        self._remembered -= reused
        return spent + len(reused) * (self.validation_rate or 0.0)

    @property
    def validation_rate(self) -> float | None:
        """Seconds per validation measurement: this run's, else the saved run's (None when neither measured)."""
        seconds, sets = self._validated
        return seconds / sets if sets else self._saved_rate

    def constraints(self, m: int) -> list[Any]:
        """The constraint "remove exactly ``m`` blocks"."""
        from lmshrink.core.removal import removal_constraints

        return removal_constraints(self.blocks, {None: m})

    def constrained(self, problem: Any, m: int) -> Any:
        """``problem`` with the constraint "remove exactly ``m`` blocks"."""
        from lmshrink.core.removal import with_constraints

        return with_constraints(problem, self.constraints(m))

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
                                              self.calib.input_ids, self.granularity, streams=self.streams())
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


def _table(portfolio: Any) -> list[dict[str, Any]]:
    """The portfolio's candidates as plain data, each with its per-window validation losses (``loss_windows``) so
    a later growth of the seed need not measure it again."""
    rows = []
    for c in portfolio.candidates:
        row = c.to_dict()
        if c.validation is not None:
            row["loss_windows"] = [float(v) for v in c.validation.per_window]
        rows.append(row)
    return rows


def choose_portfolios(measures: SeedMeasures, m: int, portfolio: Any, cost: float, sleb_evals: int,
                      label: str = "portfolio") -> dict[tuple[str, int], Choice]:
    """The ``label`` row (lowest validation loss of ``portfolio``) and its ``(heal-aware)`` row at M = ``m``;
    ``cost`` is the seconds of the sources the portfolio draws on."""
    spent = measures.validate(portfolio)
    plain = Choice(list(portfolio.best().indices), cost + spent, sleb_evals, len(portfolio),
                   {"candidates": len(portfolio), "note": portfolio.separation_note(), "table": _table(portfolio)})
    best, aware_s, finalists = measures.heal_aware(portfolio)
    return {(label, m): plain,
            (f"{label} (heal-aware)", m): Choice(best, plain.seconds + aware_s, sleb_evals,
                                                 len(portfolio) + finalists)}


@dataclass
class Sources:
    """What the objectives and baselines proposed on one seed: per (label, M) their states (the K lowest, or the
    baseline's pick), the row each one's choice makes, the objectives' problems and the rows that could not run."""

    states: dict[tuple[str, int], list[list[int]]] = field(default_factory=dict)
    choices: dict[tuple[str, int], Choice] = field(default_factory=dict)
    problems: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def sleb_evaluations(self) -> dict[int, int]:
        """Per M, the search evaluations SLEB spent (when it ran here)."""
        return {m: c.search_evaluations for (label, m), c in self.choices.items() if label == "sleb"}


#: every row that proposes candidates to the portfolios, in the order they are pooled
SOURCES = (*OBJECTIVES, *BASELINES)


def run_sources(settings: Any, measures: SeedMeasures, labels: Any, log: Any,
                sleb_known: Any = ()) -> Sources:
    """The objectives' K lowest states and the baselines' picks for every M, for the sources in ``labels``;
    ``sleb_known``: SLEB's choices at other M on this seed (a saved run), which its greedy order passes through."""
    from lmshrink.baselines import get_method
    from lmshrink.core.errors import LmshrinkError
    from lmshrink.plugins import get_objective
    from lmshrink.search.surrogate_search import sleb_budget

    found = Sources()
    model, adapter, calib, clock, seed, ms = (measures.model, measures.adapter, measures.calib, measures.clock,
                                              measures.seed, settings.remove)
    # --- objectives and one-shot baselines: K lowest states per M --------------------------------------------------
    priced: set[str | None] = set()
    for label, (name, opts) in [*OBJECTIVES.items(), *[(b, (b, {})) for b in BASELINE_OBJECTIVES]]:
        if label not in labels:
            continue
        objective = get_objective(name)
        o = {**opts, **{k: v for k, v in (("granularity", GRANULARITY), ("progress", False))
                        if k in objective.options}}
        log(f"seed {seed}: objective {label}")
        t = time.perf_counter()
        found.problems[label] = problem = objective.build(model, adapter, calib, **o)
        build_s = time.perf_counter() - t
        # a measurement read from the disk cache is priced at the seconds it took when made (once per run in the
        # portfolio's cost: fisher and fisher-fo share one entry); an old entry without them is flagged in the row
        meta = problem.metadata
        spent, cached = meta.get("measurement_seconds"), meta.get("cached_measurement")
        entry = meta.get("measurement")
        row_s = build_s + (spent if cached and spent is not None else 0.0)
        clock.seconds[label] = build_s if entry in priced else row_s
        priced.add(entry)
        extra = {"cached_unpriced": True} if cached and spent is None else {}
        for m in ms:
            t = time.perf_counter()
            found.states[(label, m)] = lowest_states(measures.constrained(problem, m), settings.top_k, seed)
            found.choices[(label, m)] = Choice(found.states[(label, m)][0], row_s + time.perf_counter() - t,
                                               extra=dict(extra))

    # --- removal-method baselines ------------------------------------------------------------------------------------
    for name in BASELINE_METHODS:
        if name not in labels:
            continue
        method = get_method(name)
        log(f"seed {seed}: method {name}")
        t = time.perf_counter()
        try:
            if name == "sleb":
                search = measures.search
                before = search.evaluations
                sel = type(method)(loss=lambda s: search(s).mean, known=sleb_known).select(
                    model, adapter, calib, {None: max(ms)}, granularity=GRANULARITY)
                elapsed = time.perf_counter() - t
                for m in ms:
                    used = sleb_budget(measures.constraints(m))
                    found.choices[(name, m)] = Choice(sorted(sel.order[:m]),
                                                      elapsed * used / max(search.evaluations - before, 1), used)
                    found.states[(name, m)] = [sorted(sel.order[:m])]
            elif method.nested:
                sel = method.select(model, adapter, calib, {None: max(ms)}, granularity=GRANULARITY)
                elapsed = time.perf_counter() - t
                for m in ms:
                    found.choices[(name, m)] = Choice(sorted(sel.order[:m]), elapsed)
                    found.states[(name, m)] = [sorted(sel.order[:m])]
            else:
                for m in ms:
                    t = time.perf_counter()
                    sel = method.select(model, adapter, calib, {None: m}, granularity=GRANULARITY)
                    found.choices[(name, m)] = Choice(sel.best, time.perf_counter() - t)
                    found.states[(name, m)] = sel.candidates[:3]
        except LmshrinkError as exc:
            found.skipped[name] = str(exc)
            log(f"seed {seed}: method {name} skipped ({exc})")
        clock.seconds[name] = time.perf_counter() - t
    return found


def run_pipelines(settings: Any, measures: SeedMeasures, sources: Sources, log: Any, *, seconds: dict[str, float],
                  sleb_evals: dict[int, int], default: bool = True, portfolios: bool = True,
                  surrogate: bool | dict[int, list[list[int]]] = True) -> dict[tuple[str, int], Choice]:
    """lmshrink's pipeline rows for every M: ``default`` rows through :func:`lmshrink.prune`; with ``portfolios``
    the portfolio rows from ``sources.states``; ``surrogate``: True runs surrogate search (its rows and the
    portfolio+surrogate rows, pooled from ``sources.states`` also without ``portfolios``), a mapping M → states
    takes stored surrogate candidates for the portfolio+surrogate rows instead, False leaves them out. ``seconds``
    prices each source (its label's seconds), ``sleb_evals`` the search evaluations SLEB spent per M."""
    from lmshrink.search.surrogate_search import SurrogateSearch, sleb_budget
    from lmshrink.portfolio import Portfolio

    seed, model, adapter, calib = measures.seed, measures.model, measures.adapter, measures.calib
    choices: dict[tuple[str, int], Choice] = {}
    for m in settings.remove:
        if default:
            log(f"seed {seed}, M={m}: the default pipeline (lmshrink.prune)")
            choices.update(default_rows(settings, seed, m, model, measures.tokenizer))
        if not portfolios and surrogate is False:
            continue
        portfolio = Portfolio()
        used = []
        for label in SOURCES:
            for k, s in enumerate(sources.states.get((label, m), []), 1):
                portfolio.add(s, f"{label}#{k}")
            if (label, m) in sources.states:
                used.append(label)
        cost = sum(seconds.get(s, 0.0) for s in used)
        if portfolios:
            choices.update(choose_portfolios(measures, m, portfolio, cost, sleb_evals.get(m, 0)))
        else:  # the portfolio rows stay as saved; their candidates' validation is theirs, not the surrogate rows'
            measures.validate(portfolio)
        if surrogate is False:
            continue

        budget = sleb_budget(measures.constraints(m))
        if surrogate is True:
            log(f"seed {seed}, M={m}: surrogate search, budget {budget}")
            t = time.perf_counter()
            sel = SurrogateSearch(loss=measures.search).select(model, adapter, calib, {None: m},
                                                               granularity=GRANULARITY, budget=budget,
                                                               samples=settings.search_samples, batch=settings.batch,
                                                               seed=seed)
            surrogate_s = time.perf_counter() - t
            order = [tuple(h["state"]) for h in sel.info["measured"]]
            losses = {tuple(h["state"]): h["loss"] for h in sel.info["measured"]}
            full = sorted(order, key=losses.get)[: settings.validate_top]
            half = sorted(order[: max(budget // 2, 1)], key=losses.get)[: settings.validate_top]
            for label, top, spent in (("surrogate", full, budget), ("surrogate@half", half, max(budget // 2, 1))):
                p = Portfolio()
                for k, s in enumerate(top, 1):
                    p.add(s, f"surrogate#{k}")
                validated = measures.validate(p)
                choices[(label, m)] = Choice(list(p.best().indices), surrogate_s * spent / budget + validated, spent,
                                             len(top), {"fit": _late_fit(sel.trace)})
        else:
            full, surrogate_s = surrogate.get(m, []), seconds.get("surrogate", 0.0)
            if not full:
                continue

        both = Portfolio()
        for c in portfolio.candidates:
            for s in c.sources:
                both.add(c.indices, s)
        for k, s in enumerate(full, 1):
            both.add(s, f"surrogate#{k}")
        for label, problem in sources.problems.items():
            both.score(label, problem)
        choices.update(choose_portfolios(measures, m, both, cost + surrogate_s, sleb_evals.get(m, 0) + budget,
                                         "portfolio+surrogate"))
    return choices


def run_seed(settings: Any, seed: int, model: Any, adapter: Any, tokenizer: Any, texts: Any, held_out: Any,
             log: Any, sleb_known: Any = ()) -> dict[str, Any]:
    """Every row for every M on calibration seed ``seed``; returns plain data (JSON-able). ``sleb_known``: SLEB's
    choices at other M on this seed (see :func:`run_sources`)."""
    import torch

    torch.manual_seed(seed)
    measures = SeedMeasures(settings, seed, model, adapter, tokenizer, texts)
    sources = run_sources(settings, measures, [s for s in SOURCES if s not in settings.skip], log, sleb_known)
    skipped = {label: "left out (--skip)" for label in [*SOURCES, "surrogate"] if label in settings.skip}
    skipped.update(sources.skipped)
    choices = {**sources.choices,
               **run_pipelines(settings, measures, sources, log, seconds=measures.clock.seconds,
                               sleb_evals=sources.sleb_evaluations(),
                               default="default" not in settings.skip, surrogate="surrogate" not in settings.skip)}
    return _seed_result(settings, measures, choices, held_out, log, skipped)


def _seed_result(settings: Any, measures: SeedMeasures, choices: dict[tuple[str, int], Choice], held_out: Any,
                 log: Any, skipped: dict[str, str], *, kd: bool = True) -> dict[str, Any]:
    """The seed's rows (every choice scored on the held-out windows), KD rows (with ``kd``) and what they cost."""
    seed = measures.seed
    log(f"seed {seed}: held-out scores of {len({tuple(c.removed) for c in choices.values()})} distinct choices")
    rows = measures.rows(choices, held_out)
    sources = {m: _kd_source(choices, m) for m in settings.kd if kd and m in settings.remove}
    kd_rows = [_kd_row(settings, seed, m, choices[(label, m)].removed, measures.model, measures.adapter,
                       measures.tokenizer, measures.texts, measures.heal, held_out, log, measures.clock)
               for m, label in sources.items() if label is not None]
    ms = sorted({m for _, m in choices})
    return {"seed": seed, "rows": rows, "kd": kd_rows, "skipped": skipped, "seconds": measures.clock.seconds,
            "calibration": {"source": measures.calib.source, **measures.calib.info},
            "validation_windows": int(measures.calib.validation.num_samples),
            "search_windows": int(measures.search.base.windows),
            "base": {"search_loss": measures.search.base.mean, "validation_loss": measures.valid.base.mean},
            "portfolio_tables": {m: choices[(_widest(choices, m), m)].extra.get("table") for m in ms
                                 if (_widest(choices, m), m) in choices},
            "num_blocks": len(measures.blocks), "validation_seconds_per_set": measures.validation_rate}


def sleb_choices(saved: dict[str, Any]) -> list[list[int]]:
    """SLEB's choices in a finished seed, one per M (prefixes of one greedy order)."""
    return [r["removed"] for r in saved["rows"] if r["method"] == "sleb" and r["healed"] == "none"]


def stored_states(saved: dict[str, Any], ms: Any) -> tuple[dict[tuple[str, int], list[list[int]]],
                                                           dict[int, list[list[int]]]]:
    """The states a finished seed's portfolio tables hold: per (source, M) the K lowest in order, and per M the
    surrogate search's candidates (when it ran)."""
    states: dict[tuple[str, int], dict[int, list[int]]] = {}
    for m in ms:
        for c in saved["portfolio_tables"].get(str(m)) or []:
            for src in c["sources"]:
                label, k = src.rsplit("#", 1)
                states.setdefault((label, m), {})[int(k)] = list(c["indices"])
    ordered = {key: [found[k] for k in sorted(found)] for key, found in states.items()}
    surrogate = {m: ordered.pop(("surrogate", m)) for m in ms if ("surrogate", m) in ordered}
    return ordered, surrogate


def extend_seed(settings: Any, saved: dict[str, Any], model: Any, adapter: Any, tokenizer: Any, texts: Any,
                held_out: Any, log: Any, *, add: Any = (), default: bool = False,
                portfolios: bool = False) -> tuple[dict[str, Any], list[str], dict[str, float]]:
    """A finished seed with rows added or chosen again, every other row kept (its ``seconds`` as saved); with the
    rows made and the seconds spent per component.

    ``add``: rows the seed left out (objectives and baselines, ``surrogate``); the portfolios that draw on them are
    chosen again. ``default``: the default's rows made (again) through :func:`lmshrink.prune`. ``portfolios``: the
    portfolio rows chosen again. Every portfolio is pooled from the states the seed's portfolio tables hold plus
    those of the added sources, so SLEB and the searches already run are not run again."""
    import torch

    seed = int(saved["seed"])
    torch.manual_seed(seed)
    measures = SeedMeasures(settings, seed, model, adapter, tokenizer, texts)
    ms = settings.remove
    old_states, old_surrogate = stored_states(saved, ms)
    measures.remember(saved)
    sources = run_sources(settings, measures, [s for s in SOURCES if s in add], log, sleb_choices(saved))
    sources.states = {**old_states, **sources.states}
    seconds = {**saved.get("seconds", {}), **measures.clock.seconds}
    sleb = {r["M"]: r["search_evaluations"] for r in saved["rows"] if r["method"] == "sleb" and r["healed"] == "none"}
    sleb.update(sources.sleb_evaluations())
    had = {r["method"] for r in saved["rows"]}
    # surrogate search alone adds no state to the portfolio rows: they stay as saved
    rerun_portfolios = portfolios or bool(sources.choices)
    surrogate: bool | dict[int, list[list[int]]] = ("surrogate" in add) or (
        old_surrogate if "portfolio+surrogate" in had else False)
    choices = {**sources.choices,
               **run_pipelines(settings, measures, sources, log, seconds=seconds, sleb_evals=sleb,
                               default=default, portfolios=rerun_portfolios, surrogate=surrogate)}
    # KD heals the default's choice: again only when that choice is made again (or, without default rows, when the
    # widest heal-aware portfolio is chosen again)
    kd = default or ("default" not in had and (rerun_portfolios or "surrogate" in add))
    made = _seed_result(settings, measures, choices, held_out, log, sources.skipped, kd=kd)
    skipped = {k: v for k, v in saved.get("skipped", {}).items() if k not in add}
    kd_made = {k["M"] for k in made["kd"]}
    seed_result = {**saved, "rows": [r for r in saved["rows"] if (r["method"], r["M"]) not in choices] + made["rows"],
                   "kd": sorted([*[k for k in saved.get("kd", []) if k["M"] not in kd_made], *made["kd"]],
                                key=lambda k: k["M"]),
                   "skipped": {**skipped, **made["skipped"]},
                   "validation_seconds_per_set": made["validation_seconds_per_set"],
                   "portfolio_tables": {**saved.get("portfolio_tables", {}),
                                        **{str(m): t for m, t in made["portfolio_tables"].items()}}}
    return seed_result, sorted({label for label, _ in choices}), made["seconds"]


def add_kd_rows(settings: Any, saved: dict[str, Any], ms: list[int], model: Any, adapter: Any, tokenizer: Any,
                texts: Any, held_out: Any, log: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """A finished seed with KD rows added at the M values ``ms`` (each healing the default's choice, else the widest
    heal-aware portfolio's, as a run with ``--kd`` would); with the seconds spent per component."""
    import torch

    from .combine import kd_values

    seed = int(saved["seed"])
    torch.manual_seed(seed)
    measures = SeedMeasures(settings, seed, model, adapter, tokenizer, texts)
    choices = {(r["method"], r["M"]): Choice(list(r["removed"])) for r in saved["rows"] if r["healed"] == "none"}
    rows = [_kd_row(settings, seed, m, choices[(label, m)].removed, model, adapter, tokenizer, texts, measures.heal,
                    held_out, log, measures.clock)
            for m in ms for label in [_kd_source(choices, m)] if label is not None]
    kd = sorted([*saved.get("kd", []), *rows], key=lambda k: k["M"])
    return {**saved, "kd": kd, "settings": {**saved["settings"], "kd": kd_values(kd)}}, measures.clock.seconds


def refresh_seed(settings: Any, saved: dict[str, Any], model: Any, adapter: Any, tokenizer: Any, texts: Any,
                 held_out: Any, log: Any) -> dict[str, Any]:
    """A finished seed's pipeline rows chosen again with the code as it is now (:func:`extend_seed`): the default's
    (when the seed has them) and, for ``settings.refresh == "pipelines"``, the portfolios; for a pipeline change,
    without re-running SLEB and the searches (their rows, the baselines' and the objectives' are kept)."""
    started = time.perf_counter()
    had = {r["method"] for r in saved["rows"]}
    out, rows, spent = extend_seed(settings, saved, model, adapter, tokenizer, texts, held_out, log,
                                   default="default" in had, portfolios=settings.refresh == "pipelines")
    return {**out, "refreshed": {"rows": rows, "seconds": time.perf_counter() - started, "components": spent}}


def _widest(choices: dict[tuple[str, int], Choice], m: int) -> str:
    """The portfolio row with the most candidates at M (with surrogate states when they ran)."""
    return "portfolio+surrogate" if ("portfolio+surrogate", m) in choices else "portfolio"


def _kd_source(choices: dict[tuple[str, int], Choice], m: int) -> str | None:
    """The row whose choice gets KD healing: the default's when it ran, else the widest heal-aware portfolio
    (None when there is neither)."""
    return next((label for label in ("default", "portfolio+surrogate (heal-aware)", "portfolio (heal-aware)")
                 if (label, m) in choices), None)


def default_rows(settings: Any, seed: int, m: int, model: Any, tokenizer: Any) -> dict[tuple[str, int], Choice]:
    """What ``lmshrink prune --remove M --seed SEED`` chooses (``default``: heal-aware) and what it chooses with
    ``--heal none`` (the lowest unhealed validation loss among the same candidates), run through
    :func:`lmshrink.prune` on a copy of the model with the study's calibration settings, not saved or evaluated;
    each with the run's seconds and the number of candidates validated."""
    result, seconds = run_default(settings, seed, m, model, tokenizer)
    plain = lambda c: c["loss_unhealed"] if c.get("loss_unhealed") is not None else c["loss"]  # noqa: E731
    rows = [c for c in result.report["candidates"] if c.get("error") is None and plain(c) is not None]
    unhealed = min(rows, key=plain)
    return {("default", m): Choice(sorted(result.plan.indices), seconds, 0, len(rows)),
            ("default (--heal none)", m): Choice(sorted(unhealed["indices"]), seconds, 0, len(rows))}


def run_default(settings: Any, seed: int, remove: int | str, model: Any, tokenizer: Any) -> tuple[Any, float]:
    """``lmshrink prune --remove REMOVE --seed SEED`` (:func:`lmshrink.prune`, no other setting than the study's
    calibration) on a copy of the model, not saved or evaluated: its :class:`~lmshrink.PruneResult` and seconds."""
    import tempfile
    from pathlib import Path

    from lmshrink import prune
    from lmshrink.models import LoadedModel

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = prune(LoadedModel(copy.deepcopy(model), tokenizer, "study copy"), remove=remove, seed=seed,
                       data=settings.data, samples=settings.samples, seq_len=settings.seq_len,
                       validation=settings.validation, evaluate=False, save=False, progress=False,
                       out=Path(tmp) / "run")
        return result, time.perf_counter() - t


def held_out_windows(tokenizer: Any, texts: Any, tokens: int, window: int) -> Any:
    """The first ``tokens`` token ids of the held-out part of ``texts`` as (windows, ``window``) rows (a window no
    longer than ``tokens``; the tail that fills no window left out)."""
    window = min(window, tokens)
    ids = evaluation_ids(tokenizer, texts, tokens)
    return ids[: (len(ids) // window) * window].reshape(-1, window)


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
    """Per-window loss of ``model`` run whole (no mid-stack start), 4 windows a pass."""
    import torch

    from lmshrink.evaluate.loss import per_sample_loss

    with torch.no_grad():
        losses = [per_sample_loss(model, windows[s : s + 4]) for s in range(0, len(windows), 4)]
    return torch.cat(losses).double().numpy()
