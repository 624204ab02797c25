"""``lmshrink show DIR``: a readable summary of a record (or a sweep) and its plots.

Plots (PNG, in ``DIR/plots``; needs matplotlib, ``pip install 'lmshrink[plot]'``): the energy histogram of the raw
samples (feasible and infeasible apart, the best solution marked), the chain-break fraction of each read (D-Wave)
and the optimizer trace (QAOA).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import require
from .record import Record
from .sweep import sweep_rows_array


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(_fmt(v) for v in value)
    return str(value)


def summary_lines(record: Record) -> list[str]:
    """What the run was and what it gave, in plain text."""
    meta, result, hw = record.meta, record.meta["result"], record.hardware
    solver = meta["solver"]
    lines = [f"record {record.path} ({meta['created']}, lmshrink {meta.get('lmshrink', '?')})",
             f"problem: {meta['problem'].get('repr', '')}" + (f" from {meta['problem']['source']}"
                                                             if meta["problem"].get("source") else ""),
             f"solver: {solver['name']}, seed {meta['run']['seed']}, {result['time_s']:.3f} s wall"]
    options = {k: v for k, v in solver["options"].items() if v is not None}
    if options:
        lines.append("options: " + ", ".join(f"{k}={_fmt(v)}" for k, v in options.items()))
    best = result["solutions"][0] if result["solutions"] else None
    if best is not None:
        proof = "proven optimal" if result["proven_optimal"] else "not proven optimal"
        lines.append(f"best energy {best['energy']:.6g} ({proof}), removes {best['indices']}")
    raw = result.get("raw")
    if raw:
        best_raw = "none feasible" if raw["best_energy"] is None else f"best feasible {raw['best_energy']:.6g}"
        lines.append(f"raw samples: {raw['num_samples']}, {raw['feasible_fraction']:.0%} feasible, {best_raw}")
    shown = {"sampler": "sampler", "device": "device", "topology": "topology", "embedding": "embedding",
             "num_qubits_used": "qubits used", "max_chain_length": "longest chain", "chain_strength": "chain strength",
             "chain_break_fraction": "chain-break fraction (mean)", "num_reads": "reads",
             "annealing_time_us": "annealing time (µs)", "anneal_schedule": "anneal schedule (t µs, s)",
             "qpu_access_time_us": "QPU access time (µs)", "qpu_programming_time_us": "QPU programming time (µs)",
             "formulation": "formulation", "reps": "QAOA layers", "shots": "shots", "execution_mode": "execution mode",
             "circuit_depth": "transpiled depth", "two_qubit_gates": "two-qubit gates",
             "optimizer_evals": "optimizer evaluations", "qpu_seconds": "QPU / device seconds",
             "qpu_seconds_source": "seconds from", "penalty": "penalty weight", "note": "note"}
    for key, label in shown.items():
        if hw.get(key) is not None:
            lines.append(f"{label}: {_fmt(hw[key])}")
    estimate = hw.get("device_time_estimate")
    if estimate:
        lines.append(f"device time estimated before submitting: {estimate['seconds']:.4g} s "
                     f"({estimate['executions']} executions × {estimate['shots']} shots)")
    lines.append(f"files: {', '.join(meta['files'].values())}")
    lines.append(f"replay: {meta['replay']}")
    return lines


def raw_energies(record: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(energies, weights, feasible) of the raw samples; infeasible samples get the energy of the penalty form
    when the record has the BQM the sampler saw, else their objective energy."""
    raw = record.raw_samples()
    if raw is None:
        return None
    X, w = raw
    problem = record.problem
    feasible = np.array([problem.is_feasible(x) for x in X])
    energies = problem.energies(X)
    sampleset = record.sampleset()
    if sampleset is not None and (~feasible).any():
        energies = np.where(feasible, energies, np.asarray(sampleset.record.energy, dtype=float))
    return energies, w, feasible


def make_plots(record: Record, out: str | Path | None = None) -> list[Path]:
    """Write the record's plots (PNG) to ``out`` (default ``DIR/plots``); returns their paths."""
    require("matplotlib", "plot", "lmshrink show's plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out) if out is not None else record.path / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    name = record.meta["solver"]["name"]
    raw = raw_energies(record)
    if raw is not None:
        energies, weights, feasible = raw
        fig, ax = plt.subplots(figsize=(6, 3.6))
        bins = np.histogram_bin_edges(energies, bins=min(40, max(5, len(np.unique(energies)))))
        ax.hist(energies[feasible], bins=bins, weights=weights[feasible], label="feasible", color="tab:blue")
        if (~feasible).any():
            ax.hist(energies[~feasible], bins=bins, weights=weights[~feasible], label="infeasible (penalty form)",
                    color="tab:orange", alpha=0.7)
        best = record.meta["result"]["solutions"][0]["energy"]
        ax.axvline(best, color="black", ls="--", lw=1, label=f"best solution {best:.4g}")
        ax.set_xlabel("energy")
        ax.set_ylabel("reads" if record.sampleset() is not None else "probability")
        ax.set_title(f"{name}: energies of the raw samples")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "energy_histogram.png"))
    sampleset = record.sampleset()
    if sampleset is not None and "chain_break_fraction" in sampleset.record.dtype.names:
        cbf = np.asarray(sampleset.record.chain_break_fraction, dtype=float)
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.hist(cbf, bins=np.linspace(0, max(cbf.max(), 1e-3), 21), weights=sampleset.record.num_occurrences,
                color="tab:red")
        ax.set_xlabel("fraction of broken chains in the read")
        ax.set_ylabel("reads")
        ax.set_title(f"{name}: chain breaks (mean {cbf.mean():.3f})")
        paths.append(_save(fig, out / "chain_breaks.png"))
    trace = record.artifacts.get("optimizer_trace")
    if trace:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([t["evaluation"] for t in trace], [t["cost"] for t in trace], marker="o", ms=3)
        ax.set_xlabel("optimizer evaluation")
        ax.set_ylabel("⟨H_C⟩ (energy units, no constant)")
        ax.set_title(f"{name}: optimizer trace")
        paths.append(_save(fig, out / "optimizer_trace.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_plots(data: dict[str, Any], out: str | Path) -> list[Path]:
    """The sweep's points: QPU seconds (estimated or used) and, for a run, success probability and TTS99."""
    require("matplotlib", "plot", "lmshrink show's plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = data["rows"]
    labels = [", ".join(f"{k}={r[f'option.{k}']}" for k in data["grid"]) for r in rows]
    x = np.arange(len(rows))
    panels = [("estimate_s", "estimated QPU s")] if data["dry_run"] else \
        [("qpu_s", "QPU s"), ("success_probability", "p success"), ("tts99_s", "TTS99 s")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.6 * len(rows) + 2), 2.4 * len(panels)), sharex=True,
                             squeeze=False)
    for ax, (key, label) in zip(axes[:, 0], panels):
        ax.bar(x, sweep_rows_array(rows, key), color="tab:blue")
        ax.set_ylabel(label)
    axes[-1, 0].set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    axes[0, 0].set_title(f"sweep of {data['solver']}" + (" (dry run)" if data["dry_run"] else ""))
    return [_save(fig, out / "sweep.png")]
