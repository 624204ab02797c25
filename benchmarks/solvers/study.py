"""Solver study: every installed binary solver on a suite of block-removal problems, under stated budgets.

Suite:

- the real Fisher problems of the model (default: the embedded SmolLM2) at layer and sub-layer granularity, for
  several M;
- the Nemotron-H pattern problem: a tiny random Nemotron-H model with the 52-block layout of
  Nemotron-3-Nano-30B-A3B and its Fisher problem with per-kind removal counts;
- generated Fisher-like problems H = AᵀA/m (random per-sample gradients with unequal block scales) up to N = 128;
- the families on which the trivial baseline fails (:mod:`lmshrink.solvers.kernels.instances`): low scale spread
  with a shared direction (couplings decide, not the diagonal) and planted-solution problems whose unique optimum
  is known by construction (energy 0), disguised so that greedy starts far from it.

Every problem also gets the trivial baseline, "greedy + swap descent" (the M smallest diagonal entries per group,
then best-improvement swaps to a 1-swap local minimum), as a row of its own: a solver whose best energy does not
beat it is shown as such. ``--equal-time S`` gives every heuristic that honours ``time_limit`` the same wall budget:
``time_limit`` = S and its effort option (``capabilities.budget_options["effort"]``) unbounded, so it runs until S.

Nothing here names a solver: each solver's capabilities (:class:`lmshrink.core.SolverCapabilities`) say which
option carries the equal read budget, which options run it offline where it needs credentials, whether its result
depends on the seed (else it runs once), whether it proves optimality (such solvers give the reference optimum) and
whether its cost grows exponentially with the feasible states or the variables (then it runs only on problems up
to ``--max-states`` or ``--max-qubits``).

Measured per problem and solver: best energy, relative gap to the proven optimum (else the best energy any run
found, flagged "best known"), success probability p (fraction of runs within 1e-9 relative of it), mean time per
run t, time to target (mean time of the successful runs) and TTS99 = t·ln(0.01)/ln(1 − p); and the same from the
raw samples (before any repair or polish: :attr:`lmshrink.core.SolutionSet.raw`), so that no row hides its repair.

Run ``python -m benchmarks.solvers`` (see benchmarks/README.md); ``--quick`` is the CI-sized version.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..common import (
    Log,
    dump_settings,
    environment,
    fmt,
    hits,
    pyplot,
    study_main,
    table,
    tts,
    write_csv,
    write_json,
)
from ..executor import import_ray, make_executor

#: the 52-block layout of NVIDIA-Nemotron-3-Nano-30B-A3B (M Mamba2, E MoE, * attention)
NEMOTRON_PATTERN = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"
#: per-kind removal counts of the Nemotron-H problem
NEMOTRON_REMOVE = {"mamba": 4, "moe": 4, "attention": 1}
#: the study's own row: not a registered solver
BASELINE = "greedy+swap (baseline)"
FAMILIES = ("fisher-like", "low-spread", "planted")
FULL = {"repeats": 5, "sizes": "12,32,64,128", "layer_remove": "4,8,12", "sublayer_remove": "8,16", "samples": 64,
        "seq_len": 128, "time_limit": 60.0, "reference_time": 300.0, "max_qubits": 12}
QUICK = {"repeats": 3, "sizes": "8,24", "layer_remove": "6", "sublayer_remove": "", "samples": 8, "seq_len": 64,
         "time_limit": 20.0, "reference_time": 30.0, "max_qubits": 8}


@dataclass
class Settings:
    """Everything that defines a run (written into the report)."""

    out: str = "benchmarks/results/solvers"
    model: str | None = None
    use_model: bool = True
    nemotron: bool = True
    sizes: list[int] = field(default_factory=lambda: [12, 32, 64, 128])
    layer_remove: list[int] = field(default_factory=lambda: [4, 8, 12])
    sublayer_remove: list[int] = field(default_factory=lambda: [8, 16])
    samples: int = 64
    seq_len: int = 128
    repeats: int = 5
    reads: int = 32
    time_limit: float = 60.0
    reference_time: float = 300.0
    #: solvers whose cost grows exponentially with the feasible states run only on problems with at most this many
    max_states: int = 3_000_000
    #: solvers whose cost grows exponentially with the variables (simulated qubits) run only up to this many
    max_qubits: int = 12
    solvers: list[str] | None = None
    #: generated families, each at every size in ``sizes``
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    #: every heuristic that honours time_limit runs exactly this long (effort option unbounded); None: defaults
    equal_time: float | None = None
    #: folder for an experiment record of every run (lmshrink.experiments.record), None: no records
    record: str | None = None
    seed: int = 0
    quick: bool = False
    #: where the runs execute: None in this process, "local" a local Ray cluster, else a Ray cluster's address
    ray: str | None = None
    #: CPUs of the local Ray cluster (one run each at a time)
    ray_workers: int = 2


def _ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m benchmarks.solvers", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/solvers", help="output folder")
    p.add_argument("--model", default=None, help="model whose Fisher problems join the suite (default: SmolLM2)")
    p.add_argument("--no-model", action="store_true", help="leave the model's problems out")
    p.add_argument("--no-nemotron", action="store_true", help="leave the Nemotron-H pattern problem out")
    p.add_argument("--sizes", default=None, help="N of the generated problems (default 12,32,64,128; quick 8,24)")
    p.add_argument("--layer-remove", default=None, help="M of the layer problems (default 4,8,12; quick 6)")
    p.add_argument("--sublayer-remove", default=None, help="M of the sub-layer problems (default 8,16; quick none)")
    p.add_argument("--samples", type=int, default=None, help="calibration samples for the model's problems")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per calibration sample")
    p.add_argument("--repeats", type=int, default=None, help="seeds per stochastic solver (default 5; quick 3)")
    p.add_argument("--reads", type=int, default=32, help="num_reads of every solver that has that option (32)")
    p.add_argument("--time-limit", type=float, default=None, help="time_limit passed to every run (default 60 s)")
    p.add_argument("--reference-time", type=float, default=None,
                   help="time_limit of solvers that prove optimality, and of the reference run (default 300 s)")
    p.add_argument("--max-states", type=int, default=3_000_000,
                   help="largest number of feasible states for solvers that enumerate them (3 million)")
    p.add_argument("--max-qubits", type=int, default=None,
                   help="largest N for solvers whose cost grows exponentially with N (default 12; quick 8)")
    p.add_argument("--solvers", default=None, help="comma-separated subset of the installed solvers")
    p.add_argument("--families", default=",".join(FAMILIES),
                   help=f"generated families, comma-separated (default {','.join(FAMILIES)})")
    p.add_argument("--equal-time", type=float, default=None,
                   help="seconds per run for every heuristic that honours time_limit, its effort option unbounded")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="write an experiment record of every run to DIR/<problem>/<solver>-seed<k> (lmshrink show)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: a local one (no ADDRESS) or the one at ADDRESS (auto, HOST:PORT, "
                        "ray://HOST:PORT); needs lmshrink[ray]")
    p.add_argument("--ray-workers", type=int, default=2, metavar="N",
                   help="CPUs of the local Ray cluster, one run on each at a time (default 2)")
    p.add_argument("--quick", action="store_true", help="CI-sized run (a few minutes on 2 CPU cores)")
    a = p.parse_args(argv)
    families = [f.strip() for f in a.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        p.error(f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
    if a.ray_workers < 1:
        p.error(f"--ray-workers must be at least 1, not {a.ray_workers}")
    if a.equal_time is not None and not a.equal_time > 0:
        p.error(f"--equal-time must be a positive number of seconds, not {a.equal_time}")
    base = QUICK if a.quick else FULL
    pick = lambda v, k: base[k] if v is None else v  # noqa: E731
    return Settings(
        out=a.out, model=a.model, use_model=not a.no_model, nemotron=not a.no_nemotron,
        sizes=_ints(pick(a.sizes, "sizes")), layer_remove=_ints(pick(a.layer_remove, "layer_remove")),
        sublayer_remove=_ints(pick(a.sublayer_remove, "sublayer_remove")), samples=pick(a.samples, "samples"),
        seq_len=pick(a.seq_len, "seq_len"), repeats=pick(a.repeats, "repeats"), reads=a.reads,
        time_limit=pick(a.time_limit, "time_limit"), reference_time=pick(a.reference_time, "reference_time"),
        max_states=a.max_states, max_qubits=pick(a.max_qubits, "max_qubits"),
        solvers=[s.strip() for s in a.solvers.split(",")] if a.solvers else None, families=families,
        equal_time=a.equal_time, record=a.record, seed=a.seed, quick=a.quick, ray=a.ray, ray_workers=a.ray_workers,
    )


# --- the suite ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One problem of the suite."""

    name: str
    family: str
    problem: Any
    note: str = ""
    #: the optimum's energy where the construction proves it (planted problems)
    known_optimum: float | None = None


def generated_problem(n: int, m: int, *, seed: int = 0, spread: float = 1.0, samples: int | None = None) -> Any:
    """A Fisher-like problem: H = AᵀA/s from s = 2N random per-sample gradients, block i scaled by
    exp(spread·N(0, 1)) (unequal blocks); minimise xᵀHx subject to Σx = m."""
    from lmshrink.core import BinaryQuadraticProblem, Constraint

    rng = np.random.default_rng(seed)
    s = samples or 2 * n
    A = rng.normal(size=(s, n)) * np.exp(spread * rng.normal(size=n))
    return BinaryQuadraticProblem([f"block{i}" for i in range(n)], np.zeros(n), A.T @ A / s, 0.0,
                                  [Constraint(tuple(range(n)), m, "remove")],
                                  {"generator": "fisher-like", "seed": seed, "samples": s, "spread": spread})


def model_cases(settings: Settings, log: Log) -> tuple[list[Case], dict[str, str]]:
    """Fisher problems of the model at layer and (where the adapter has it) sub-layer granularity."""
    from lmshrink.core.removal import removal_constraints, with_constraints
    from lmshrink.data import load_texts, make_calibration
    from lmshrink.models import load_model
    from lmshrink.plugins import find_adapter, get_objective

    notes: dict[str, str] = {}
    loaded = load_model(settings.model)
    model, tok = loaded.model, loaded.tokenizer
    adapter = find_adapter(model)
    calib = make_calibration(tok, load_texts(None), settings.samples, settings.seq_len, settings.seed)
    short = "smollm2" if settings.model is None else Path(str(settings.model)).name.lower()
    cases = []
    for gran, ms in (("layer", settings.layer_remove), ("sublayer", settings.sublayer_remove)):
        if not ms:
            continue
        if gran not in adapter.granularities:
            notes[f"{short}-{gran}"] = f"adapter {adapter.name} has no {gran} granularity"
            continue
        t = time.perf_counter()
        problem = get_objective("fisher").build(model, adapter, calib, granularity=gran, progress=False)
        log(f"{loaded.name}: fisher problem at {gran} granularity (N={problem.num_variables}) in "
            f"{time.perf_counter() - t:.1f} s")
        blocks = adapter.blocks(model, gran)
        for m in ms:
            if m >= len(blocks):
                continue
            p = with_constraints(problem, removal_constraints(blocks, {None: m}))
            p.metadata["remove"] = {"total": m}
            cases.append(Case(f"{short}-{gran}-M{m}", f"{short} {gran}", p,
                              f"{loaded.name}, {calib.num_samples}×{calib.seq_len} calibration tokens"))
    return cases, notes


def nemotron_case(settings: Settings, log: Log, samples: int = 16, seq_len: int = 64
                  ) -> tuple[list[Case], dict[str, str]]:
    """The Fisher problem of a tiny random Nemotron-H with the 52-block pattern, per-kind counts, from
    ``samples`` × ``seq_len`` calibration tokens."""
    try:
        from lmshrink.testing import tiny_nemotron_h, tiny_tokenizer
    except ImportError as exc:
        return [], {"nemotron-h": f"not available ({exc})"}
    from lmshrink.core.removal import removal_constraints, with_constraints
    from lmshrink.data import load_texts, make_calibration
    from lmshrink.plugins import find_adapter, get_objective

    t = time.perf_counter()
    try:
        model = tiny_nemotron_h(NEMOTRON_PATTERN, seed=settings.seed)
    except Exception as exc:  # noqa: BLE001 - transformers without NemotronH, ...
        return [], {"nemotron-h": f"cannot build a Nemotron-H model here: {type(exc).__name__}: {exc}"}
    adapter = find_adapter(model)
    calib = make_calibration(tiny_tokenizer(), load_texts(None), samples, seq_len, settings.seed)
    problem = get_objective("fisher").build(model, adapter, calib, progress=False)
    blocks = adapter.blocks(model)
    problem = with_constraints(problem, removal_constraints(blocks, NEMOTRON_REMOVE))
    problem.metadata["remove"] = dict(NEMOTRON_REMOVE)
    spec = ",".join(f"{k}={v}" for k, v in NEMOTRON_REMOVE.items())
    log(f"nemotron-h: fisher problem N={problem.num_variables} ({spec}) in {time.perf_counter() - t:.1f} s")
    return [Case("nemotron-h-52", "nemotron-h", problem,
                 f"tiny random Nemotron-H, pattern {NEMOTRON_PATTERN}, remove {spec}, {samples}×{seq_len} calibration "
                 "tokens")], {}


def generated_cases(settings: Settings) -> list[Case]:
    """The generated families at every size, M = N/4."""
    from lmshrink.solvers.kernels.instances import low_spread_problem, planted_problem

    cases = []
    for n in settings.sizes:
        m = max(1, n // 4)
        seed = settings.seed + n
        if "fisher-like" in settings.families:
            cases.append(Case(f"fisher-like-N{n}", "fisher-like", generated_problem(n, m, seed=seed),
                              f"H = AᵀA/{2 * n}, unequal block scales, M = {m}"))
        if "low-spread" in settings.families:
            cases.append(Case(f"low-spread-N{n}", "low-spread", low_spread_problem(n, m, seed=seed),
                              f"H = AᵀA/{2 * n}, block scales exp(0.1·N(0,1)) and a shared direction, M = {m}"))
        if "planted" in settings.families and m >= 2:
            p = planted_problem(n, m, seed=seed)
            cases.append(Case(f"planted-N{n}", "planted", p, f"planted unique optimum at energy 0, disguised, M = {m}",
                              known_optimum=float(p.metadata["optimum"])))
    return cases


def baseline_run(case: Case) -> dict[str, Any]:
    """The runs.csv row of "greedy + swap descent" on ``case`` (one deterministic run; needs numba)."""
    row: dict[str, Any] = {"case": case.name, "solver": BASELINE, "seed": 0, "energy": None, "time_s": None,
                           "indices": None, "raw_energy": None, "raw_feasible_fraction": None, "error": ""}
    try:
        from lmshrink.solvers.kernels.anneal_swap import greedy_descent
        from lmshrink.solvers.kernels.layout import problem_layout
    except ImportError as exc:  # MissingDependencyError is an ImportError too
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    p = case.problem
    lay = problem_layout(p)
    t = time.perf_counter()
    x, _ = greedy_descent(p.linear, p.quadratic, [lay.group(g) for g in range(lay.num_groups)], lay.equals.tolist())
    energy = float(p.energy(x))  # no repair or polish of someone else's samples: raw is the result
    row.update(energy=energy, time_s=time.perf_counter() - t, indices=np.flatnonzero(x).tolist(), raw_energy=energy,
               raw_feasible_fraction=1.0)
    return row


# --- solvers -----------------------------------------------------------------------------------------------------
#: the effort option's value under ``--equal-time``: more than any run reaches before its time limit
UNBOUNDED_EFFORT = 10**9


def budget(solver: Any, reads: int, equal_time: float | None = None) -> dict[str, Any]:
    """The options a solver runs with: its read-budget option (``capabilities.budget_options["reads"]``) set to
    ``reads``, its effort option unbounded under ``equal_time`` (when it honours ``time_limit``), and its offline
    options where it needs credentials or the network (local simulators and mocks)."""
    caps = solver.capabilities
    opts: dict[str, Any] = {}
    if "reads" in caps.budget_options:
        opts[caps.budget_options["reads"]] = reads
    if equal_time is not None and caps.honours_time_limit and not caps.proves_optimality \
            and "effort" in caps.budget_options:
        opts[caps.budget_options["effort"]] = UNBOUNDED_EFFORT
    if caps.needs_credentials or caps.needs_network:
        opts.update(caps.offline_options)
    return opts


def too_large(solver: Any, problem: Any, settings: Settings) -> str | None:
    """Why the study does not give ``problem`` to ``solver`` (its cost grows exponentially past the study's
    limits, or it refuses that many variables), or None."""
    caps = solver.capabilities
    if caps.exponential_in == "feasible_states" and problem.num_feasible_states() > settings.max_states:
        return f"more than {settings.max_states:,} feasible states to enumerate"
    if caps.exponential_in == "variables" and problem.num_variables > settings.max_qubits:
        return f"runs only on N ≤ {settings.max_qubits} (its cost grows exponentially with N)"
    if caps.max_variables is not None and problem.num_variables > caps.max_variables:
        return f"takes at most {caps.max_variables} variables"
    return None


def binary_solvers(only: list[str] | None) -> list[Any]:
    """Registry entries of every installed solver of binary problems (optionally a named subset)."""
    from lmshrink.core import BinaryQuadraticProblem
    from lmshrink.plugins import registry

    entries = [e for e in registry("solver") if any(issubclass(BinaryQuadraticProblem, t) for t in e.problem_types)]
    if only is not None:
        unknown = set(only) - {e.name for e in entries}
        if unknown:
            raise SystemExit(f"unknown solver(s): {', '.join(sorted(unknown))}; installed: "
                             f"{', '.join(e.name for e in entries)}")
        entries = [e for e in entries if e.name in only]
    return entries


def probe(entry: Any, reads: int) -> str | None:
    """Run the solver on a 4-variable problem: None when it works, else why it cannot run here."""
    from lmshrink.core import LmshrinkError

    solver = entry.create()
    p = generated_problem(4, 2, seed=1)
    try:
        solver.solve(p, num_solutions=1, seed=0, time_limit=30, **budget(solver, reads))
    except LmshrinkError as exc:
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure
        return f"fails on a 4-variable problem: {type(exc).__name__}: {exc}"
    return None


def reference(case: Case, settings: Settings) -> dict[str, Any]:
    """The proven optimum from the first solver that proves optimality and may run on the problem (those that
    enumerate feasible states first, being quick on small problems), or the best it found. ``messages`` lists the
    provers that failed, for the log."""
    from lmshrink.core import LmshrinkError
    from lmshrink.plugins import registry

    states = case.problem.num_feasible_states()
    if case.known_optimum is not None:
        return {"solver": "construction", "energy": case.known_optimum, "proven": True, "time_s": 0.0,
                "feasible_states": states, "messages": []}
    provers = [e for e in registry("solver") if e.supports(case.problem) and e.create().capabilities.proves_optimality]
    provers = [e for e in provers if too_large(e.create(), case.problem, settings) is None]
    provers.sort(key=lambda e: e.create().capabilities.exponential_in != "feasible_states")
    t = time.perf_counter()
    errors = []
    for entry in provers:
        try:
            sols = entry.create().solve(case.problem, num_solutions=1, seed=0, time_limit=settings.reference_time)
        except LmshrinkError as exc:
            errors.append(f"{entry.name}: {exc}")
            continue
        return {"solver": entry.name, "energy": float(sols.best.energy), "proven": sols.proven_optimal,
                "time_s": sols.time_s, "indices": list(sols.best.indices), "feasible_states": states,
                "info_gap": sols.info.get("gap"), "raw_energy": sols.raw.best_energy if sols.raw else None,
                "raw_feasible_fraction": sols.raw.feasible_fraction if sols.raw else None,
                "messages": [f"no reference from {e}" for e in errors]}
    return {"solver": provers[0].name if provers else "none", "energy": None, "proven": False,
            "time_s": time.perf_counter() - t, "error": "; ".join(errors) or "no solver that proves optimality",
            "feasible_states": states, "messages": [f"no reference from {e}" for e in errors]}


def run_row(case: Case, solver: str, seed: int, sols: Any) -> dict[str, Any]:
    """One row of runs.csv: the best energy and time, and the raw samples' best energy and feasible fraction."""
    raw = sols.raw
    return {"case": case.name, "solver": solver, "seed": seed, "energy": float(sols.best.energy),
            "time_s": sols.time_s, "indices": list(sols.best.indices),
            "raw_energy": None if raw is None else raw.best_energy,
            "raw_feasible_fraction": None if raw is None else raw.feasible_fraction, "error": ""}


def error_row(case: str, solver: str, seed: int, error: str) -> dict[str, Any]:
    """The runs.csv row of a run that failed."""
    return {"case": case, "solver": solver, "seed": seed, "energy": None, "time_s": None, "indices": None,
            "raw_energy": None, "raw_feasible_fraction": None, "error": error}


@dataclass(frozen=True)
class RunSpec:
    """One run of the study as plain data: the solver (a registry name), its seed, time limit and options, and
    the folder of its experiment record (None: no record). With the problem, it fixes the run's result: the
    seed comes from the study's settings, not from the order the runs execute in."""

    solver: str
    seed: int
    time_limit: float | None
    options: dict[str, Any]
    record: str | None = None


def solve_run(case: Case, spec: RunSpec) -> dict[str, Any]:
    """The runs.csv row of one run of ``spec`` on ``case``. A failure is recorded in the row (``error``); a
    problem the solver refuses as too large gives a row with ``too_large`` (the reason) instead."""
    from lmshrink.core import ProblemTooLargeError
    from lmshrink.plugins import get_solver

    try:
        solver = get_solver(spec.solver)
        if spec.record:
            from lmshrink.experiments.record import record_run

            sols, _ = record_run(case.problem, solver, spec.record, num_solutions=1, seed=spec.seed,
                                 time_limit=spec.time_limit, options=dict(spec.options))
        else:
            sols = solver.solve(case.problem, num_solutions=1, seed=spec.seed, time_limit=spec.time_limit,
                                **spec.options)
        return run_row(case, spec.solver, spec.seed, sols)
    except ProblemTooLargeError as exc:
        return {"case": case.name, "solver": spec.solver, "seed": spec.seed, "too_large": str(exc)}
    except Exception as exc:  # noqa: BLE001 - record the failure and go on
        return error_row(case.name, spec.solver, spec.seed, f"{type(exc).__name__}: {exc}")


# --- the study ---------------------------------------------------------------------------------------------------
def plan(case: Case, ref: dict[str, Any], entries: list[Any], settings: Settings, executor: Any, shared: Any
         ) -> list[tuple[str, str | None, list[Any]]]:
    """Submit the runs of every solver on ``case``: per solver, its name, why it does not run (or None) and its
    runs in seed order, each a handle to its row or, for a deterministic solver that gave the reference, the
    reference's own row."""
    planned: list[tuple[str, str | None, list[Any]]] = []
    for e in entries:
        solver = e.create()
        why = too_large(solver, case.problem, settings)
        if why:
            planned.append((e.name, why, []))
            continue
        caps = solver.capabilities
        seeds = [settings.seed] if caps.deterministic else [settings.seed + k for k in range(settings.repeats)]
        opts = budget(solver, settings.reads, settings.equal_time)
        limit = settings.reference_time if caps.proves_optimality else settings.equal_time or settings.time_limit
        items: list[Any] = []
        for seed in seeds:
            if e.name == ref["solver"] and ref.get("energy") is not None and caps.deterministic:
                items.append({"case": case.name, "solver": e.name, "seed": seed, "energy": ref["energy"],
                              "time_s": ref["time_s"], "indices": ref.get("indices"),
                              "raw_energy": ref.get("raw_energy"),
                              "raw_feasible_fraction": ref.get("raw_feasible_fraction"), "error": ""})
                continue
            record = (str(Path(settings.record).resolve() / case.name / f"{e.name}-seed{seed}")
                      if settings.record else None)
            items.append(executor.submit(solve_run, shared, RunSpec(e.name, seed, limit, opts, record)))
        planned.append((e.name, None, items))
    return planned


def run_all(cases: list[Case], entries: list[Any], settings: Settings, executor: Any, log: Log
            ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Every run of the study through ``executor``: the references first, then the baseline and the solvers'
    runs of each problem as soon as its reference is known. The rows come back in the order of the problems,
    the solvers and the seeds, wherever they ran. Returns the runs, the references and the skipped pairs."""
    shared = [executor.share(c) for c in cases]
    pending_refs = [executor.submit(reference, h, settings) for h in shared]
    refs: dict[str, dict[str, Any]] = {}
    submitted = []
    for case, h, pending in zip(cases, shared, pending_refs):
        ref = refs[case.name] = pending.result()
        for message in ref.pop("messages", []):
            log(f"{case.name}: {message}")
        log(f"{case.name}: N={case.problem.num_variables}, reference {ref['solver']} E*={ref['energy']} "
            f"({'proven' if ref['proven'] else 'not proven'}) in {ref['time_s']:.1f} s")
        submitted.append((executor.submit(baseline_run, h), plan(case, ref, entries, settings, executor, h)))

    runs: list[dict[str, Any]] = []
    case_skips: list[dict[str, str]] = []
    for case, (base, planned) in zip(cases, submitted):
        base = base.result()
        runs.append(base)
        log(f"{case.name}: {BASELINE}: {base['energy'] if base['energy'] is not None else base['error']}")
        for name, why, items in planned:
            if why:
                case_skips.append({"case": case.name, "solver": name, "why": why})
                continue
            done = []
            for item in items:
                row = item if isinstance(item, dict) else item.result()
                if "too_large" in row:
                    case_skips.append({"case": case.name, "solver": name, "why": row["too_large"]})
                    break
                done.append(row)
            runs += done
            if done:
                ok = [r["energy"] for r in done if r["energy"] is not None]
                log(f"  {name}: {len(done)} run(s), best {min(ok) if ok else None}, "
                    f"{np.mean([r['time_s'] for r in done if r['time_s'] is not None] or [float('nan')]):.2f} s/run")
    return runs, refs, case_skips


def run(settings: Settings, log: Log | None = None) -> dict[str, Any]:
    """Run the study and write its files under ``settings.out``; returns the summary (also in summary.json).
    The runs execute serially here or, with ``settings.ray``, as tasks on a Ray cluster (same rows)."""
    log = log or Log()
    if settings.ray:
        import_ray()  # before anything is built: a missing extra fails at once
    out = Path(settings.out)
    (out / "problems").mkdir(parents=True, exist_ok=True)
    notes: dict[str, str] = {}
    cases: list[Case] = []
    if settings.use_model:
        c, n_ = model_cases(settings, log)
        cases += c
        notes.update(n_)
    if settings.nemotron:
        c, n_ = nemotron_case(settings, log)
        cases += c
        notes.update(n_)
    cases += generated_cases(settings)
    for case in cases:
        case.problem.save(out / "problems" / f"{case.name}.json")

    entries = binary_solvers(settings.solvers)
    unavailable: dict[str, str] = {}
    solvers = []
    for e in entries:
        why = probe(e, settings.reads)
        if why:
            unavailable[e.name] = why
            log(f"solver {e.name}: skipped ({why})")
        else:
            solvers.append(e)
    log(f"{len(cases)} problems; solvers: {', '.join(e.name for e in solvers)}")

    executor = make_executor(settings.ray, settings.ray_workers, [Path(__file__).resolve().parent.parent])
    log(f"runs execute {executor.describe()}")
    try:
        runs, refs, case_skips = run_all(cases, solvers, settings, executor, log)
    finally:
        executor.close()

    targets = {c.name: target_energy(refs[c.name], [r["energy"] for r in runs if r["case"] == c.name]) for c in cases}
    summary_rows = summarise(cases, refs, runs)
    summary = {
        "settings": asdict(settings), "cases": [_case_row(c, refs[c.name], targets[c.name]) for c in cases],
        "summary": summary_rows, "unavailable": unavailable, "notes": notes, "case_skips": case_skips,
        "solvers": {e.name: _solver_row(e, settings) for e in solvers},
        "baseline": {"name": BASELINE, "description": "the M smallest diagonal entries per group, then "
                     "best-improvement swap descent to a 1-swap local minimum (deterministic: one run)"},
        "total_seconds": log.elapsed, "executor": executor.describe(),
        "environment": environment("benchmarks.solvers"),
    }
    write_csv(out / "runs.csv", runs, ["case", "solver", "seed", "energy", "time_s", "indices", "raw_energy",
                                       "raw_feasible_fraction", "error"])
    write_csv(out / "summary.csv", summary_rows)
    write_csv(out / "cases.csv", summary["cases"])
    summary["plots"] = make_plots(out, summary)
    summary["total_seconds"] = log.elapsed
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(render(summary))
    log(f"wrote {out}/report.md")
    return summary


def _solver_row(entry: Any, settings: Settings) -> dict[str, Any]:
    """What the report says about a solver: provider, the options it ran with, and the capabilities behind them."""
    solver = entry.create()
    caps = solver.capabilities
    return {"package": entry.package, "version": entry.version,
            "budget": budget(solver, settings.reads, settings.equal_time),
            "deterministic": caps.deterministic, "proves_optimality": caps.proves_optimality,
            "offline": bool(caps.needs_credentials or caps.needs_network), "postprocessing": list(caps.postprocessing),
            "description": entry.description}


def target_energy(ref: dict[str, Any], energies: list[float | None]) -> float | None:
    """The proven optimum, else the lowest energy the reference or any run found."""
    if ref["proven"]:
        return ref["energy"]
    found = [e for e in energies if e is not None] + ([ref["energy"]] if ref["energy"] is not None else [])
    return min(found) if found else None


def _case_row(case: Case, ref: dict[str, Any], target: float | None) -> dict[str, Any]:
    p = case.problem
    return {"case": case.name, "family": case.family, "N": p.num_variables,
            "constraints": "; ".join(f"{c.name or 'Σ'}={c.equals}/{len(c.indices)}" for c in p.constraints
                                     if c.equals or c.name != "kept"),
            "feasible_states": ref["feasible_states"], "target": target, "proven": ref["proven"],
            "reference": ref["solver"], "reference_energy": ref["energy"], "reference_s": ref["time_s"],
            "note": case.note}


def summarise(cases: list[Case], refs: dict[str, dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (problem, solver): best energy, gap, success probability, mean time, time to target, TTS99."""
    rows = []
    for case in cases:
        ref = refs[case.name]
        target = target_energy(ref, [r["energy"] for r in runs if r["case"] == case.name])
        if target is None:
            continue
        base = next((r["energy"] for r in runs if r["case"] == case.name and r["solver"] == BASELINE), None)
        for solver in dict.fromkeys(r["solver"] for r in runs if r["case"] == case.name):
            rs = [r for r in runs if r["case"] == case.name and r["solver"] == solver]
            good = [r for r in rs if r["energy"] is not None]
            if not good:
                rows.append({"case": case.name, "solver": solver, "runs": len(rs), "errors": len(rs),
                             "error": rs[0]["error"]})
                continue
            e = np.array([r["energy"] for r in good])
            t = np.array([r["time_s"] for r in good])
            hit = hits(e, target)
            p = float(hit.mean())
            scale = max(abs(target), 1e-12)
            raw_e = np.array([np.inf if r.get("raw_energy") is None else r["raw_energy"] for r in good], dtype=float)
            raw_hit = hits(raw_e, target)
            raw_p = float(raw_hit.mean())
            fractions = [r["raw_feasible_fraction"] for r in good if r.get("raw_feasible_fraction") is not None]
            rows.append({
                "case": case.name, "solver": solver, "runs": len(rs), "errors": len(rs) - len(good),
                "best_energy": float(e.min()), "target": target, "target_proven": bool(ref["proven"]),
                "best_gap": float((e.min() - target) / scale), "mean_gap": float(np.mean((e - target) / scale)),
                "success_p": p, "time_per_run_s": float(t.mean()),
                "time_to_target_s": float(t[hit].mean()) if hit.any() else math.inf,
                "tts99_s": tts(float(t.mean()), p),
                "raw_success_p": raw_p, "raw_tts99_s": tts(float(t.mean()), raw_p),
                "raw_best_gap": float((raw_e.min() - target) / scale) if np.isfinite(raw_e.min()) else math.inf,
                "raw_feasible_fraction": float(np.mean(fractions)) if fractions else None, "error": "",
                "vs_baseline": versus(float(e.min()), base),
            })
    return rows


def versus(best: float, baseline: float | None) -> str:
    """"better", "same" or "worse" than the baseline's energy (within the success tolerance), or "" without one."""
    if baseline is None:
        return ""
    if hits([best], baseline)[0]:
        return "same" if hits([baseline], best)[0] else "better"
    return "worse"


# --- plots and report --------------------------------------------------------------------------------------------
def make_plots(out: Path, summary: dict[str, Any]) -> list[str]:
    """tts99.png (TTS99 per problem and solver) and success.png (success-probability heat map)."""
    plt = pyplot()
    rows = [r for r in summary["summary"] if "success_p" in r]
    if not rows:
        return []
    cases = [c["case"] for c in summary["cases"] if any(r["case"] == c["case"] for r in rows)]
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    get = {(r["case"], r["solver"]): r for r in rows}
    files = []

    fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(cases) + 3), 4.6))
    width = 0.8 / max(len(solvers), 1)
    finite = [r["tts99_s"] for r in rows if math.isfinite(r["tts99_s"])]
    top = max(finite) * 3 if finite else 1.0
    for k, s in enumerate(solvers):
        xs, ys, inf_x = [], [], []
        for i, c in enumerate(cases):
            r = get.get((c, s))
            if r is None:
                continue
            if math.isfinite(r["tts99_s"]):
                xs.append(i + k * width)
                ys.append(max(r["tts99_s"], 1e-4))
            else:
                inf_x.append(i + k * width)
        bars = ax.bar(xs, ys, width, label=s)
        if inf_x:
            ax.scatter(inf_x, [top] * len(inf_x), marker="x", color=bars.patches[0].get_facecolor() if bars.patches
                       else "k")
    ax.set_yscale("log")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    ax.set_xticklabels(cases, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("TTS99 (s, log scale; × = never hit)")
    ax.set_title("Time to solution with 99% confidence")
    ax.legend(fontsize=7, ncol=min(len(solvers), 4))
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    fig.savefig(out / "tts99.png", dpi=120)
    plt.close(fig)
    files.append("tts99.png")

    grid = np.full((len(cases), len(solvers)), np.nan)
    for i, c in enumerate(cases):
        for j, s in enumerate(solvers):
            if (c, s) in get:
                grid[i, j] = get[(c, s)]["success_p"]
    fig, ax = plt.subplots(figsize=(1.1 * len(solvers) + 3, 0.4 * len(cases) + 1.5))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(len(cases)):
        for j in range(len(solvers)):
            ax.text(j, i, "—" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(solvers)))
    ax.set_xticklabels(solvers, fontsize=8)
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels(cases, fontsize=7)
    ax.set_title("Success probability (— = not run)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=120)
    plt.close(fig)
    files.append("success.png")
    return files


def render(summary: dict[str, Any]) -> str:
    """report.md of the study."""
    s = summary["settings"]
    rows = [r for r in summary["summary"] if "success_p" in r]
    cases = [c["case"] for c in summary["cases"]]
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    get = {(r["case"], r["solver"]): r for r in rows}
    cell = lambda c, sv, k: get[(c, sv)][k] if (c, sv) in get else None  # noqa: E731
    budgets = "; ".join(f"`{k}` {v['budget'] or 'defaults'}"
                        + (" (seed-independent: one run)" if v.get("deterministic") else "")
                        + (" (offline mode)" if v.get("offline") else "")
                        for k, v in summary["solvers"].items())
    steps = "; ".join(f"`{k}`: {' → '.join(v['postprocessing'])}" for k, v in summary["solvers"].items()
                      if v.get("postprocessing"))
    lines = [
        "# Solver study",
        "",
        f"{len(cases)} problems × {len(summary['solvers'])} solvers; run time {summary['total_seconds'] / 60:.1f} min"
        + (f", runs executed {summary['executor']}" if summary.get("executor") else "")
        + (" (quick mode)." if s["quick"] else "."),
        "",
        f"**Budget per run**: each solver's defaults except {budgets}; `time_limit` = {s.get('equal_time') or s['time_limit']} s passed to "
        f"every heuristic run and {s['reference_time']} s to solvers that prove optimality (solvers that honour it "
        f"stop there). Solvers whose result depends on the seed run {s['repeats']} times (seeds "
        f"{s['seed']}..{s['seed'] + s['repeats'] - 1}), the others once. TTS99 = t·ln(0.01)/ln(1 − p) with t the "
        "mean wall time per run and p the success probability (∞ when p = 0, t when p ≥ 0.99); a run succeeds when "
        "its best energy is within 1e-9 relative of the target. Time to target: mean wall time of the successful "
        "runs.",
        "",
        "**Raw and polished**: the success tables count a solver's returned best; the raw tables count the best "
        "feasible state among the sampler's own samples, before the post-processing each solver applies"
        + (f" ({steps})" if steps else "") + ". A solver whose raw success is far below its polished success owes "
        "its results to the repair and polish.",
        "",
        f"**Equal time**: every heuristic that honours `time_limit` and has an effort option ran until "
        f"{s['equal_time']} s per run, its effort option unbounded; the others stop on their own, within it "
        "(see the time table)." if s.get("equal_time") else "",
        "",
        f"**Baseline**: `{BASELINE}` is {summary['baseline']['description']}; a table below says whether each "
        "solver's best run beats it." if "baseline" in summary else "",
        "",
        "## Problems",
        "",
        table(["problem", "N", "constraints", "feasible states", "target energy", "target is", "reference run"],
              [[c["case"], c["N"], c["constraints"], c["feasible_states"], c["target"],
                f"proven optimum ({c['reference']})" if c["proven"] else "best energy any run found",
                f"{c['reference']}: {c['reference_s']:.3g} s" + ("" if c["proven"] else
                f", not proven, E = {c['reference_energy']:.6g}" if c["reference_energy"] is not None else
                ", no solution")] for c in summary["cases"]], 6),
        "",
        *[f"- `{c['case']}`: {c['note']}" for c in summary["cases"] if c["note"]],
        "",
        "## Success probability",
        "",
        table(["problem", *solvers], [[c, *[cell(c, sv, "success_p") for sv in solvers]] for c in cases], 3),
        "",
        "![success](success.png)",
        "",
        "## TTS99 (seconds)",
        "",
        table(["problem", *solvers], [[c, *[cell(c, sv, "tts99_s") for sv in solvers]] for c in cases], 3),
        "",
        "![tts99](tts99.png)",
        "",
        "## Raw samples: success probability / feasible fraction",
        "",
        table(["problem", *solvers],
              [[c, *[None if (c, sv) not in get else f"{fmt(get[(c, sv)].get('raw_success_p'), 3)} / "
                     f"{fmt(get[(c, sv)].get('raw_feasible_fraction'), 3)}" for sv in solvers]] for c in cases]),
        "",
        "## Raw samples: TTS99 (seconds)",
        "",
        table(["problem", *solvers], [[c, *[cell(c, sv, "raw_tts99_s") for sv in solvers]] for c in cases], 3),
        "",
        "## Best run against the baseline (better / same / worse)",
        "",
        table(["problem", *[sv for sv in solvers if sv != BASELINE]],
              [[c, *[cell(c, sv, "vs_baseline") for sv in solvers if sv != BASELINE]] for c in cases]),
        "",
        "## Relative gap of the best run to the target",
        "",
        table(["problem", *solvers], [[c, *[cell(c, sv, "best_gap") for sv in solvers]] for c in cases], 3),
        "",
        "## Mean wall time per run (seconds) and time to target",
        "",
        table(["problem", *solvers],
              [[c, *[None if (c, sv) not in get else f"{get[(c, sv)]['time_per_run_s']:.3g} / "
                     + (f"{get[(c, sv)]['time_to_target_s']:.3g}" if math.isfinite(get[(c, sv)]['time_to_target_s'])
                        else "∞") for sv in solvers]] for c in cases]),
        "",
    ]
    if summary["unavailable"] or summary["notes"] or summary["case_skips"]:
        lines += ["## Not run", ""]
        lines += [f"- solver `{k}`: {v}" for k, v in summary["unavailable"].items()]
        lines += [f"- problem `{k}`: {v}" for k, v in summary["notes"].items()]
        grouped: dict[tuple[str, str], list[str]] = {}
        for d in summary["case_skips"]:
            grouped.setdefault((d["solver"], d["why"]), []).append(d["case"])
        lines += [f"- `{solver}` not run on {', '.join(f'`{c}`' for c in names)}: {why}"
                  for (solver, why), names in grouped.items()]
        errs = [r for r in summary["summary"] if r.get("error")]
        lines += [f"- `{r['solver']}` on `{r['case']}` failed: {r['error']}" for r in errs]
        lines += [""]
    lines += [
        "## Files and reruns",
        "",
        "`runs.csv` (every run: energy, seconds, chosen indices, raw best energy and feasible fraction), "
        "`summary.csv` (the tables above), `cases.csv`, `summary.json`, `problems/<problem>.json`. Rerun any solver "
        f"on a problem without a model, e.g. `lmshrink solve problems/{cases[-1] if cases else 'PROBLEM'}.json "
        f"--solver {solvers[0] if solvers else 'NAME'} --json`.",
        "",
        "## Settings",
        "",
        dump_settings(s),
        "",
        "Solvers: " + ", ".join(f"{k} ({v['package']} {v['version']})" for k, v in summary["solvers"].items()) + ".",
        "",
        "Command: `" + summary["environment"]["command"] + "`",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["environment"]["versions"].items())
        + f"; {summary['environment']['cpus']} CPUs"
        + (f", load average (1, 5, 15 min) at the end of the run {summary['environment']['load_average']}."
           if summary["environment"].get("load_average") else "."),
        "",
    ]
    return "\n".join(lines)


def rerender(out: str | Path) -> Path:
    """Redraw the plots and rewrite report.md of a finished run from its summary.json."""
    import json

    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())  # Infinity and NaN read back as floats
    make_plots(out, summary)
    path = out / "report.md"
    path.write_text(render(summary))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.solvers [options]``, or ``--render DIR`` to redo a run's report."""
    return study_main(argv, run=run, parse_args=parse_args, rerender=rerender, default_dir="benchmarks/results/solvers")
