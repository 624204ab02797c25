"""Build the reference set of the problem library from real models (``lmshrink problems build``).

The reference set:

- the embedded default model (SmolLM2-135M-Instruct, 30 layers), at ``layer`` and ``sublayer`` granularity, for the
  objectives ``fisher``, ``fisher`` with the first-order term (``fisher-fo``) and ``pairs``, with M = 4 … 12 blocks
  removed in total;
- a random-weight Nemotron-H with the 52-block pattern of Nemotron-3-Nano-30B-A3B
  (:data:`lmshrink.tiny_models.NEMOTRON_3_NANO_PATTERN`), ``fisher`` and ``fisher-fo``, with per-kind removal counts.

Each instance gets its proven optimum (``exact`` when the feasible states are few enough to enumerate, which also
proves the lowest states; else ``milp`` within a time limit) or its best known energy (the lower of ``milp``'s
incumbent and ``anneal``'s best, with HiGHS's lower bound), its lowest states, and, for the real model, the
measured calibration loss and held-out perplexity of each of those states.

The build is resumable: one file per instance, written atomically, and finished instances are skipped; the
measured losses and perplexities are kept per model and granularity in ``.measured/`` so that a state shared by
several instances, or measured before an interruption, is measured once.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import BinaryQuadraticProblem, LmshrinkError
from ..core.removal import removal_constraints, with_constraints
from ..data import evaluation_ids, load_texts, make_calibration
from ..models import load_model
from ..plugins import find_adapter, get_objective, get_solver
from ..report import library_versions
from ..report import log as _log
from ..tiny_models import NEMOTRON_3_NANO_PATTERN, tiny_nemotron_h, tiny_tokenizer
from .instance import LibraryInstance, load_instance

#: objective labels of the library → (objective plugin, its options)
OBJECTIVES: dict[str, tuple[str, dict[str, Any]]] = {
    "fisher": ("fisher", {}),
    "fisher-fo": ("fisher", {"first_order": True}),
    "pairs": ("pairs", {}),
}
#: totals M of the SmolLM2 instances
SMOLLM2_TOTALS = tuple(range(4, 13))
#: per-kind removal counts of the Nemotron-H instances
NEMOTRON_REMOVALS: tuple[dict[str, int], ...] = (
    {"moe": 2},
    {"mamba": 2, "moe": 2},
    {"mamba": 4, "moe": 4, "attention": 1},
)

#: the instances shipped in the package (:func:`~lmshrink.library.shipped_dir`): small, each with a proven
#: optimum that ``exact`` or ``milp`` reproduces in seconds, measured where the model is real
SHIPPED = ("smollm2-layer-fisher-m04", "smollm2-layer-fisher-m06", "smollm2-layer-fisher-fo-m08",
           "nemotron-h-nano-fisher-mamba2-moe2", "nemotron-h-nano-fisher-fo-mamba4-moe4-attention1")


@dataclass(frozen=True)
class BuildSettings:
    """How instances are built and measured (written into every instance)."""

    samples: int = 64
    seq_len: int = 128
    #: the first calibration samples every loss measurement uses (pairs objective, measured loss of the states)
    loss_samples: int = 4
    eval_tokens: int = 1024
    eval_window: int = 512
    #: lowest states kept per instance
    top: int = 20
    #: problems with at most this many feasible states are enumerated (proven optimum and proven lowest states)
    exact_limit: int = 3_000_000
    #: seconds of ``milp`` per larger instance
    milp_time: float = 120.0
    anneal_reads: int = 128
    seed: int = 0


@dataclass(frozen=True)
class ModelSource:
    """Where the problems of some instances come from: ``load()`` gives (model, tokenizer); ``real`` says whether
    measured losses mean anything (random weights: no)."""

    name: str
    load: Callable[[], tuple[Any, Any]]
    real: bool
    description: str
    data: str | None = None


@dataclass(frozen=True)
class InstanceSpec:
    """One instance to build: its model source, objective label, granularity and removal counts."""

    name: str
    source: str
    objective: str
    granularity: str
    remove: dict[str | None, int] = field(hash=False)


def _load_smollm2() -> tuple[Any, Any]:
    loaded = load_model(None)
    return loaded.model, loaded.tokenizer


def _load_nemotron() -> tuple[Any, Any]:
    return tiny_nemotron_h(NEMOTRON_3_NANO_PATTERN, seed=0), tiny_tokenizer()


SOURCES: dict[str, ModelSource] = {
    "smollm2": ModelSource("smollm2", _load_smollm2, True,
                           "SmolLM2-135M-Instruct (the embedded default), pydoc calibration and held-out text"),
    "nemotron-h-nano": ModelSource("nemotron-h-nano", _load_nemotron, False,
                                   "random-weight Nemotron-H with the 52-block Nemotron-3-Nano-30B-A3B pattern"),
}


def instance_name(source: str, objective: str, granularity: str | None, remove: dict[str | None, int]) -> str:
    """``smollm2-layer-fisher-m04``, ``nemotron-h-nano-fisher-fo-mamba2-moe2``."""
    counts = "-".join(f"m{v:02d}" if k is None else f"{k}{v}" for k, v in remove.items())
    return "-".join(p for p in (source, granularity, objective, counts) if p)


def reference_specs() -> list[InstanceSpec]:
    """Every instance of the reference set, cheapest model group first (layer before sub-layer)."""
    specs = []
    for gran in ("layer", "sublayer"):
        for objective in OBJECTIVES:
            for m in SMOLLM2_TOTALS:
                remove: dict[str | None, int] = {None: m}
                specs.append(InstanceSpec(instance_name("smollm2", objective, gran, remove), "smollm2", objective,
                                          gran, remove))
        if gran == "layer":  # the Nemotron-H instances are quick: build them before the sub-layer ones
            for objective in ("fisher", "fisher-fo"):
                for counts in NEMOTRON_REMOVALS:
                    remove = dict(counts)
                    specs.append(InstanceSpec(instance_name("nemotron-h-nano", objective, None, remove),
                                              "nemotron-h-nano", objective, "layer", remove))
    return specs


def select_specs(specs: Sequence[InstanceSpec], only: Iterable[str] | None) -> list[InstanceSpec]:
    """The specs whose name contains one of the ``only`` substrings (all without ``only``); a pattern that
    matches none gets one sentence."""
    if not only:
        return list(specs)
    only = list(only)
    for pattern in only:
        if not any(pattern in s.name for s in specs):
            raise LmshrinkError(f"No instance of the reference set matches {pattern!r}; names look like "
                                f"{specs[0].name!r} or {specs[-1].name!r} ('lmshrink problems build --list').")
    return [s for s in specs if any(p in s.name for p in only)]


# --- solving ---------------------------------------------------------------------------------------------------
def solve_reference(problem: BinaryQuadraticProblem, settings: BuildSettings
                    ) -> tuple[dict[str, Any], list[tuple[list[int], float]], bool]:
    """(reference, lowest states as (indices, energy), whether the lowest are proven).

    ``exact`` enumerates problems with at most ``exact_limit`` feasible states: the optimum and the lowest states
    are then proven. Larger ones get ``anneal``'s lowest states and ``milp`` within ``milp_time`` seconds; the
    reference is ``milp``'s proven optimum, or else the lower of the two best energies (best known), with HiGHS's
    lower bound.
    """
    top, seed = settings.top, settings.seed
    if problem.num_feasible_states() <= settings.exact_limit:
        sols = get_solver("exact", problem).solve(problem, num_solutions=top, seed=seed)
        ref = {"energy": sols.best.energy, "proven": True, "solver": "exact", "time_s": sols.time_s,
               "indices": list(sols.best.indices)}
        return ref, [(list(s.indices), s.energy) for s in sols], True
    anneal = get_solver("anneal", problem).solve(problem, num_solutions=top, seed=seed,
                                                 num_reads=settings.anneal_reads)
    milp = get_solver("milp", problem).solve(problem, num_solutions=1, seed=seed, time_limit=settings.milp_time)
    found = {tuple(s.indices): s.energy for s in anneal}
    found.setdefault(tuple(milp.best.indices), milp.best.energy)
    lowest = sorted(([list(k), e] for k, e in found.items()), key=lambda t: t[1])[:top]
    tol = 1e-9 * max(1.0, abs(milp.best.energy))
    if milp.proven_optimal or milp.best.energy <= anneal.best.energy + tol:
        ref = {"energy": milp.best.energy, "proven": bool(milp.proven_optimal), "solver": "milp",
               "time_s": milp.time_s, "indices": list(milp.best.indices)}
    else:
        ref = {"energy": anneal.best.energy, "proven": False, "solver": "anneal", "time_s": anneal.time_s,
               "indices": list(anneal.best.indices),
               "options": {"num_reads": settings.anneal_reads}}
    if not milp.proven_optimal:
        ref.update(lower_bound=milp.info.get("bound"), milp_time_limit_s=settings.milp_time,
                   milp_energy=milp.best.energy, anneal_energy=anneal.best.energy)
    return ref, [(list(i), float(e)) for i, e in lowest], False


# --- measurements -----------------------------------------------------------------------------------------------
def removal_meter(model: Any, adapter: Any, input_ids: Any, granularity: str) -> Callable[[Sequence[int]], float]:
    """Mean next-token loss over the windows ``input_ids`` (rows) with the blocks ``removed`` gated off (exactly the
    model with them removed): lmshrink's mid-stack ``RemovalLoss`` where it is installed, else whole passes of
    :func:`~lmshrink.evaluate.loss.calibration_loss`."""
    try:
        from ..evaluate.measured import RemovalLoss
    except ImportError:
        from ..evaluate.loss import calibration_loss

        return lambda removed: calibration_loss(model, input_ids, adapter=adapter, removed=list(removed),
                                                granularity=granularity)
    meter = RemovalLoss(model, adapter, input_ids, granularity=granularity)
    return lambda removed: meter(removed).mean


class StateMeasurements:
    """Measured calibration loss and held-out perplexity of removal states, remembered in a JSON file so that an
    interrupted build measures nothing twice.

    The perplexity is exp of the mean next-token loss over the held-out text cut into equal windows, with the
    blocks gated off (the same numbers as the pruned model's, which gate 0 equals exactly).
    """

    def __init__(self, path: Path, model: Any, adapter: Any, granularity: str, loss_ids: Any, eval_windows: Any,
                 settings: dict[str, Any]) -> None:
        self.path = path
        self.settings = settings
        self._make = lambda ids: removal_meter(model, adapter, ids, granularity)
        self._loss_ids, self._eval_windows = loss_ids, eval_windows
        self._meters: tuple[Callable, Callable] | None = None
        self.values: dict[str, dict[str, float]] = {}
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("settings") == settings:
                self.values = saved["states"]

    def __call__(self, removed: Sequence[int]) -> dict[str, float]:
        """``{"loss", "perplexity"}`` of removing ``removed`` (nothing: the unpruned model); saved at once."""
        key = ",".join(str(i) for i in sorted(int(i) for i in removed))
        if key not in self.values:
            if self._meters is None:
                self._meters = (self._make(self._loss_ids), self._make(self._eval_windows))
            loss, held_out = (meter(sorted(removed)) for meter in self._meters)
            self.values[key] = {"loss": float(loss), "perplexity": math.exp(float(held_out))}
            self.save()
        return self.values[key]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "states": self.values}))
        os.replace(tmp, self.path)


# --- the build --------------------------------------------------------------------------------------------------
def build_library(out: str | Path, specs: Sequence[InstanceSpec] | None = None, *,
                  settings: BuildSettings = BuildSettings(), sources: dict[str, ModelSource] | None = None,
                  force: bool = False, progress: bool = True) -> list[Path]:
    """Build the instances ``specs`` (default: the whole reference set) into ``out``, one JSON file each.

    Two passes per model: first every problem with its reference and lowest states (written at once, marked
    pending where measurements follow), then the measured loss and perplexity of the states. Finished instances
    are skipped unless ``force``; a model is loaded only when one of its instances is unfinished. Returns the
    paths of every instance of ``specs`` (built now or before).
    """
    out = Path(out)
    sources = dict(SOURCES, **(sources or {}))
    specs = list(reference_specs() if specs is None else specs)
    unknown = sorted({s.source for s in specs} - set(sources))
    if unknown:
        raise LmshrinkError(f"Unknown model source {unknown[0]!r}; known: {', '.join(sorted(sources))}.")
    unknown_obj = sorted({s.objective for s in specs} - set(OBJECTIVES))
    if unknown_obj:
        raise LmshrinkError(f"Unknown library objective {unknown_obj[0]!r}; known: {', '.join(OBJECTIVES)}.")
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if force or not _finished(out / f"{s.name}.json")]
    _log(progress, f"library: {len(specs) - len(todo)} of {len(specs)} instances already built in {out}")
    loaded: dict[str, tuple[Any, Any]] = {}
    # in the order given, a run of instances of one model and granularity at a time: each is finished (measured
    # too) before the next run starts, so an interrupted build has whole instances to show
    for _, chunk in itertools.groupby(todo, key=lambda s: (s.source, s.granularity)):
        chunk = list(chunk)
        source = sources[chunk[0].source]
        if source.name not in loaded:
            _log(progress, f"library: loading {source.description}")
            loaded.clear()  # one model in memory at a time
            loaded[source.name] = source.load()
        _build_group(out, source, loaded[source.name], chunk, settings, force, progress)
    return [out / f"{s.name}.json" for s in specs]


def _finished(path: Path) -> bool:
    return path.exists() and not load_instance(path).pending


def _build_group(out: Path, source: ModelSource, loaded: tuple[Any, Any], specs: list[InstanceSpec],
                 settings: BuildSettings, force: bool, progress: bool) -> None:
    """Build instances of one model (``loaded``: model and tokenizer): each (objective, granularity) problem once,
    then every instance from it, then (real models) the measurements of every instance's states."""
    torch.manual_seed(settings.seed)
    model, tokenizer = loaded
    model.eval()
    adapter = find_adapter(model)
    texts = load_texts(source.data)
    calib = make_calibration(tokenizer, texts, settings.samples, settings.seq_len, settings.seed)
    problems: dict[tuple[str, str], BinaryQuadraticProblem] = {}
    for spec in specs:  # pass 1: problems, references, lowest states
        path = out / f"{spec.name}.json"
        if path.exists() and not force:
            continue
        t0 = time.perf_counter()
        key = (spec.objective, spec.granularity)
        if key not in problems:
            name, opts = OBJECTIVES[spec.objective]
            o = dict(opts, granularity=spec.granularity, progress=False)
            if name == "pairs":
                o["samples"] = settings.loss_samples
            _log(progress, f"library: building the {spec.objective} problem of {source.name} ({spec.granularity})")
            problems[key] = get_objective(name).build(model, adapter, calib, **o)
        blocks = adapter.blocks(model, spec.granularity)
        problem = with_constraints(problems[key], removal_constraints(blocks, spec.remove))
        problem.metadata["remove"] = {str(k) if k else "total": v for k, v in spec.remove.items()}
        problem.metadata["library_instance"] = spec.name
        ref, lowest, proven = solve_reference(problem, settings)
        instance = LibraryInstance(
            spec.name, problem, ref, [{"indices": idx, "energy": e} for idx, e in lowest], proven, None,
            source={"model": source.name, "description": source.description, "objective": spec.objective,
                    "objective_options": OBJECTIVES[spec.objective][1], "granularity": spec.granularity,
                    "remove": problem.metadata["remove"], "calibration": {"source": calib.source, **calib.info}},
            build={"settings": asdict(settings), "solve_seconds": round(time.perf_counter() - t0, 2),
                   "versions": library_versions()},
            pending=source.real,
        )
        instance.save(path)
        _log(progress, f"library: {spec.name}: N={problem.num_variables}, energy {ref['energy']:.6g} "
                       f"({'proven' if ref['proven'] else 'best known'}, {ref['solver']}), "
                       f"{time.perf_counter() - t0:.1f} s")
    if not source.real:
        return
    eval_ids = evaluation_ids(tokenizer, texts, settings.eval_tokens)
    window = min(settings.eval_window, len(eval_ids))
    eval_windows = eval_ids[: len(eval_ids) // window * window].reshape(-1, window)
    loss_ids = calib.input_ids[: settings.loss_samples]
    meta = {"loss_samples": settings.loss_samples, "seq_len": settings.seq_len, "eval_tokens": int(eval_windows.numel()),
            "eval_window": window, "seed": settings.seed}
    measurements: dict[str, StateMeasurements] = {}
    for spec in specs:  # pass 2: measured loss and perplexity of the lowest states
        path = out / f"{spec.name}.json"
        instance = load_instance(path)
        if not instance.pending:
            continue
        t0 = time.perf_counter()
        if spec.granularity not in measurements:
            measurements[spec.granularity] = StateMeasurements(
                out / ".measured" / f"{source.name}-{spec.granularity}.json", model, adapter, spec.granularity,
                loss_ids, eval_windows, meta)
        meas = measurements[spec.granularity]
        base = meas(())
        for state in instance.lowest:
            state.update(meas(state["indices"]))
        instance.measured = {"base_loss": base["loss"], "base_perplexity": base["perplexity"], **meta,
                             "loss": "mean next-token cross-entropy on the first calibration samples, the removed "
                                     "blocks gated off",
                             "perplexity": "exp of the mean next-token cross-entropy on held-out pydoc windows, the "
                                           "removed blocks gated off"}
        instance.pending = False
        instance.build["measure_seconds"] = round(time.perf_counter() - t0, 2)
        instance.save(path)
        _log(progress, f"library: {spec.name}: measured {len(instance.lowest)} states in "
                       f"{time.perf_counter() - t0:.1f} s")
