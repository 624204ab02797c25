"""Experiment records: everything a solver run used and produced, in a folder that can be analysed and replayed.

A record folder (``lmshrink solve ... --record DIR``, :func:`record_run`) holds JSON files only:

- ``record.json`` (format ``lmshrink.record/1``): when and how the run was made (solver, validated options,
  seed, the command that repeats it), the result as ``lmshrink solve --json`` prints it, the hardware facts in one
  place (``hardware``: sampler or backend, device, topology, chain strength, annealing time and schedule, QPU
  access and programming time, transpiled depth and two-qubit count, shots, ...), the library versions and the
  names of the files below;
- ``problem.json``: the problem as solved;
- one ``<artifact>.json`` per artifact the solver offered (:mod:`.capture`): for D-Wave ``sampleset.json`` (the raw
  reads with their energies and chain-break fractions, dimod's ``SampleSet.to_serializable`` form),
  ``embedding.json`` (the chains; ``--option embedding=DIR/embedding.json`` reuses them) and ``bqm.json`` (the
  penalty BQM the annealer saw); for QAOA ``circuit.json`` (ISA circuit facts and OpenQASM 3) and
  ``optimizer_trace.json``.

A record is written only after the run succeeded, into a temporary folder renamed at the end, so a failed run
leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..core import BinaryQuadraticProblem, LmshrinkError, Problem, SolutionSet, load_problem
from ..core.capture import collecting
from ..core.errors import require
from ..core.problem import json_default
from ..plugins import get_solver
from ..report import library_versions, read_json
from .metrics import HIT_RTOL, hits

RECORD_FORMAT = "lmshrink.record/1"
#: result.info keys gathered into ``hardware`` (those a run reports)
HARDWARE_KEYS = (
    "sampler", "mock", "backend", "device", "topology", "embedding", "embedding_file", "num_qubits_used",
    "max_chain_length", "mean_chain_length", "chain_strength", "chain_break_fraction", "num_reads",
    "annealing_time_us", "anneal_schedule", "qpu_access_time_us", "qpu_programming_time_us",
    "qpu_anneal_time_per_sample_us", "qpu_timing_us", "qpu_time_estimate", "num_qubits", "formulation", "reps", "shots",
    "circuit_depth", "two_qubit_gates", "gate_counts", "optimizer_evals", "execution_mode", "device_time_estimate",
    "qpu_seconds", "qpu_seconds_source", "num_jobs", "penalty", "penalty_rule", "note",
)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=json_default))


def qpu_seconds(info: dict[str, Any]) -> float | None:
    """The QPU (or device) seconds a run used, from its info: ``qpu_seconds``, else the QPU access time."""
    if info.get("qpu_seconds") is not None:
        return float(info["qpu_seconds"])
    if info.get("qpu_access_time_us") is not None:
        return float(info["qpu_access_time_us"]) / 1e6
    return None


def replay_command(problem_file: str, solver: str, options: dict[str, Any], defaults: dict[str, Any], *,
                   seed: Any, top_k: int, time_limit: Any, embedding: str | None) -> str:
    """The ``lmshrink solve`` command that repeats a run: its non-default options, and the saved embedding."""
    parts = ["lmshrink", "solve", problem_file, "--solver", solver, "--top-k", str(top_k)]
    if seed is not None:
        parts += ["--seed", str(seed)]
    if time_limit is not None:
        parts += ["--time-limit", str(time_limit)]
    for key, value in options.items():
        if key == "embedding" and embedding:
            value = embedding
        elif value == defaults.get(key) or value is None:
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        parts += ["--option", f"{key}={text}"]
    return " ".join(parts)


def record_run(problem: Problem, solver: Any, out: str | Path, *, num_solutions: int = 1, seed: int | None = None,
               time_limit: float | None = None, options: dict[str, Any] | None = None,
               problem_source: str | None = None, command: str | None = None) -> tuple[SolutionSet, Path]:
    """Solve ``problem`` with ``solver`` (a name or a Solver) and write the record folder ``out``.

    ``out`` must not exist yet, or be an empty folder (checked before the run). Returns the result and the path.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmshrinkError(f"The record folder {str(out)!r} already exists and is not empty; give a new one.")
    solver = get_solver(solver, problem) if isinstance(solver, str) else solver
    options = dict(options or {})
    with collecting() as artifacts:
        result = solver.solve(problem, num_solutions=num_solutions, seed=seed, time_limit=time_limit, **options)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        problem.save(tmp / "problem.json")
        files = {"problem": "problem.json"}
        for name, data in artifacts.items():
            files[name] = f"{name}.json"
            _write_json(tmp / files[name], data)
        validated = dict(result.info.get("options", {}))
        defaults = {k: o.default for k, o in solver.options.items()}
        embedding = str(out / "embedding.json") if "embedding" in artifacts else None
        hardware = {k: result.info[k] for k in HARDWARE_KEYS if k in result.info}
        hardware["qpu_seconds"] = qpu_seconds(result.info)
        meta = {
            "format": RECORD_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "lmshrink": __version__,
            "command": command,
            "replay": replay_command(str(out / "problem.json"), result.solver, validated, defaults, seed=seed,
                                     top_k=num_solutions, time_limit=time_limit, embedding=embedding),
            "solver": {"name": result.solver, "options": validated, "capabilities": solver.capabilities.to_dict()},
            "run": {"num_solutions": num_solutions, "seed": seed, "time_limit": time_limit},
            "problem": {"file": "problem.json", "source": problem_source, "sha256": _sha256(tmp / "problem.json"),
                        "repr": repr(problem)},
            "hardware": hardware,
            "result": result.to_dict(),
            "files": files,
            "versions": library_versions(),
        }
        _write_json(tmp / "record.json", meta)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result, out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Record:
    """A record folder read back: ``meta`` is record.json, ``artifacts`` the other JSON files by name."""

    path: Path
    meta: dict[str, Any]
    problem: Problem
    artifacts: dict[str, Any]

    @property
    def info(self) -> dict[str, Any]:
        return self.meta["result"]["info"]

    @property
    def hardware(self) -> dict[str, Any]:
        return self.meta.get("hardware", {})

    def sampleset(self) -> Any:
        """The raw reads as a ``dimod.SampleSet`` (None when the solver offered none)."""
        if "sampleset" not in self.artifacts:
            return None

        dimod = require("dimod", "dwave", "Reading a record's sample set")
        return dimod.SampleSet.from_serializable(self.artifacts["sampleset"])

    def raw_samples(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The sampler's own states (rows, in problem variable order) and the weight of each (occurrences or
        probability): from the sample set (D-Wave) or the final QAOA distribution; None when neither exists."""
        sampleset = self.sampleset()
        if sampleset is not None:
            n = self.problem.num_variables
            cols = [sampleset.variables.index(i) for i in range(n)]
            X = np.asarray(sampleset.record.sample)[:, cols].astype(np.int8)
            return X, np.asarray(sampleset.record.num_occurrences, dtype=float)
        dist = self.artifacts.get("distribution")
        if not dist:
            return None
        # the distribution is over the variables QAOA ran on; the classically fixed ones take their fixed values
        names = list(self.problem.variables)
        X = np.zeros((len(dist["states"]), len(names)), dtype=np.int8)
        for name, value in (self.info.get("fixed_variables") or {}).items():
            X[:, names.index(name)] = value
        cols = [names.index(v) for v in dist["variables"]]
        X[:, cols] = np.asarray(dist["states"], dtype=np.int8).reshape(len(X), len(cols))
        return X, np.asarray(dist["probabilities"], dtype=float)

    def success_probability(self, target: float, rtol: float = HIT_RTOL) -> float | None:
        """Fraction of the raw samples (weighted) that are feasible and reach ``target`` within ``rtol``."""
        raw = self.raw_samples()
        if raw is None or not isinstance(self.problem, BinaryQuadraticProblem):
            return None
        X, w = raw
        ok = np.array([self.problem.is_feasible(x) for x in X])
        energies = np.full(len(X), np.inf)
        if ok.any():
            energies[ok] = self.problem.energies(X[ok])
        hit = hits(energies, target, rtol)
        return float(w[hit].sum() / w.sum()) if w.sum() > 0 else None


def load_record(path: str | Path) -> Record:
    """Read a record folder written by :func:`record_run`; anything else gets one sentence."""
    path = Path(path)
    meta_path = path / "record.json"
    if not meta_path.is_file():
        raise LmshrinkError(f"{str(path)!r} is not a record folder (no record.json); write one with "
                            "'lmshrink solve ... --record DIR'.")
    meta = read_json(meta_path, "record")
    if not isinstance(meta, dict) or meta.get("format") != RECORD_FORMAT:
        raise LmshrinkError(f"{str(meta_path)!r} is not an lmshrink record (format {RECORD_FORMAT!r}).")
    files = dict(meta.get("files", {}))
    problem = load_problem(path / files.pop("problem", "problem.json"))
    artifacts = {name: read_json(path / file, f"file of the record ({name})") for name, file in files.items()}
    return Record(path, meta, problem, artifacts)
