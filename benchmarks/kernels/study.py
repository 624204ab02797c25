"""The compiled kernels against today's solvers, side by side in one process.

1. Annealing at N = 128 with 32 reads: today's ``anneal`` (numpy) vs the numba swap kernel, as simulated annealing
   and as parallel tempering (sweeps/s counting every replica's sweeps, final-state hit rate, TTS99), the
   "greedy + swap descent" baseline, and dwave-samplers' SimulatedAnnealingSampler and TabuSampler on the penalty
   BQM at the best of a small penalty sweep (raw samples: no repair), on a Fisher-like, a low-spread and a planted
   instance.
2. Proven top-k: branch and bound vs ``exact`` (enumeration rate × feasible states, when it refuses) vs ``milp``,
   for top-10 at N = 80, M = 8 and top-1 at N = 128, M = 16 (Fisher-like).
3. QAOA: the subspace simulator vs qiskit's statevector of the same circuit at 12 qubits (time per evaluation,
   largest probability difference), the angle optimization on the 12-qubit sub-problem of a real problem (fixed
   as ``qaoa`` fixes variables) and a 22-qubit run without fixing.

TTS99 counts one read: t_read · ln(0.01)/ln(1 − p) with p the fraction of reads whose FINAL state is optimal and
t_read the run's time over its number of reads. ``python -m benchmarks.kernels [--quick] [--problem FILE]``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..common import Log, environment, hits, table, tts, write_json
from ..solvers.study import generated_problem


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/kernels", help="output folder")
    p.add_argument("--problem", default=None,
                   help="a saved layer problem (problem.json of `lmshrink prune`) for the SmolLM2 rows and the QAOA "
                        "sub-problem; without it those rows are skipped")
    p.add_argument("--quick", action="store_true", help="small budgets (a few minutes)")
    p.add_argument("--time-limit", type=float, default=None, help="per proof run (default 60 s; quick 10 s)")
    p.add_argument("--sections", default="anneal,topk,smollm2,qaoa",
                   help="comma-separated subset of anneal, topk, smollm2, qaoa (default: all)")
    return p.parse_args(argv)


def _annealers(problem: Any, reads: int, sweeps: int, old_sweeps: int, seed: int) -> list[dict[str, Any]]:
    """One run of each annealer; per read: final-state energies."""
    from lmshrink.solvers.anneal import AnnealSolver
    from lmshrink.solvers.kernels.anneal_swap import anneal_problem, greedy_descent
    from lmshrink.solvers.kernels.layout import problem_layout

    rows = []
    for label, replicas in (("kernel anneal_swap, annealing (replicas=1)", 1),
                            ("kernel anneal_swap, tempering (replicas=8, default)", 8)):
        t = time.perf_counter()
        res = anneal_problem(problem, num_reads=reads, num_sweeps=sweeps, replicas=replicas, seed=seed)
        rows.append({"solver": label, "sweeps": sweeps * replicas, "time_s": time.perf_counter() - t,
                     "final": res.final_energies, "feasible": 1.0})
    lay = problem_layout(problem)
    t = time.perf_counter()
    _, e = greedy_descent(problem.linear, problem.quadratic, [lay.group(g) for g in range(lay.num_groups)],
                          lay.equals.tolist())
    # deterministic: one read, hit or miss
    rows.append({"solver": "greedy + swap descent (baseline)", "sweeps": None, "time_s": time.perf_counter() - t,
                 "final": np.array([e + problem.offset]), "feasible": 1.0, "reads": 1})
    opts = {k: v.default for k, v in AnnealSolver.options.items()} | {"num_reads": reads, "num_sweeps": old_sweeps}
    t = time.perf_counter()
    raw = AnnealSolver().sample(problem, num_solutions=1, seed=seed, time_limit=None, **opts)
    final = raw.states[reads: 2 * reads]  # best_x first, then each read's final state
    rows.append({"solver": "anneal (today)", "sweeps": old_sweeps, "time_s": time.perf_counter() - t,
                 "final": problem.energies(final), "feasible": 1.0})
    return rows


def _dwave(problem: Any, reads: int, sweeps: int, seed: int) -> list[dict[str, Any]]:
    """dwave-samplers SA and tabu on the penalty BQM, best of a penalty sweep, raw samples (infeasible = miss)."""
    try:
        from dwave.samplers import SimulatedAnnealingSampler, TabuSampler
    except ImportError:
        return []
    rows = []
    base = problem.default_penalty()
    for name, run in (
        ("dwave SA (penalty BQM)", lambda bqm: SimulatedAnnealingSampler().sample(bqm, num_reads=reads,
                                                                                 num_sweeps=sweeps, seed=seed)),
        ("dwave tabu (penalty BQM)", lambda bqm: TabuSampler().sample(bqm, num_reads=reads, timeout=20, seed=seed)),
    ):
        best = None
        for factor in (1.0, 0.3, 0.1, 0.03):
            bqm = problem.to_bqm(base * factor)
            t = time.perf_counter()
            ss = run(bqm)
            dt = time.perf_counter() - t
            X = ss.record.sample[:, np.argsort(np.array(ss.variables))]
            ok = np.array([problem.is_feasible(x) for x in X])
            E = np.where(ok, problem.energies(X), np.inf)
            row = {"solver": name, "sweeps": sweeps if "SA" in name else None, "time_s": dt, "final": E,
                   "feasible": float(ok.mean()), "penalty": base * factor}
            if best is None or np.sort(E)[len(E) // 2] < np.sort(best["final"])[len(E) // 2]:
                best = row
        rows.append(best)
    return rows


def anneal_section(cases: list[tuple[str, Any, float, str]], quick: bool, log: Log) -> list[dict[str, Any]]:
    reads, sweeps, old = 32, 1000, (20 if quick else 100)
    out = []
    for name, problem, target, ref in cases:
        for row in _annealers(problem, reads, sweeps, old, seed=0) + _dwave(problem, reads, sweeps, seed=0):
            p = float(hits(row.pop("final"), target).mean())
            t_read = row["time_s"] / row.setdefault("reads", reads)
            row.update(case=name, reference=ref, hit_final=p,
                       sweeps_per_s=(row["sweeps"] / row["time_s"]) if row.get("sweeps") else None,
                       tts99_s=tts(t_read, p))
            out.append(row)
            log(f"{name}: {row['solver']}: {row['time_s']:.2f} s, final-state hit {p:.2f}")
    return out


def reference(problem: Any, limit: float) -> tuple[float, str]:
    """(optimum, how it is known): the planted optimum, else branch and bound (proven, or best found)."""
    if "optimum" in problem.metadata:
        return float(problem.metadata["optimum"]), "planted"
    from lmshrink.solvers.kernels.topk import topk_problem

    res = topk_problem(problem, k=1, time_limit=limit)
    return float(res.energies[0]), "proven (B&B)" if res.info["proven"] else "best found by B&B"


def topk_section(limit: float, quick: bool, log: Log) -> list[dict[str, Any]]:
    from lmshrink.core import LmshrinkError
    from lmshrink.plugins import get_solver
    from lmshrink.solvers.exact import count_feasible
    from lmshrink.solvers.kernels.topk import topk_problem

    # exact's enumeration rate, measured on a problem it accepts
    small = generated_problem(40, 4, seed=1)
    t = time.perf_counter()
    get_solver("exact").solve(small, num_solutions=10)
    rate = count_feasible(small) / (time.perf_counter() - t)
    out = []
    for n, m, k in ((80, 8, 10), (128, 16, 1)):
        p = generated_problem(n, m, seed=n)
        name = f"fisher-like N={n} M={m} top-{k}"
        t = time.perf_counter()
        res = topk_problem(p, k=k, time_limit=limit)
        bnb = {"case": name, "solver": "kernel topk_bnb", "time_s": time.perf_counter() - t,
               "proven": res.info["proven"], "kth_energy": res.info["kth_energy"], "nodes": res.info["nodes"],
               "root_bound": res.info["root_bound"], "min_pruned_bound": res.info["min_pruned_bound"]}
        out.append(bnb)
        log(f"{name}: B&B {bnb['time_s']:.1f} s, proven {bnb['proven']}")
        out.append({"case": name, "solver": "exact (estimated)", "time_s": count_feasible(p) / rate, "proven": None,
                    "note": f"refuses; {count_feasible(p):.3g} states at the measured {rate:.3g} states/s"})
        if quick and n > 80:
            continue
        t = time.perf_counter()
        try:
            sols = get_solver("milp", p).solve(p, num_solutions=k, time_limit=limit)
            row = {"proven": bool(sols.info.get("optimal")), "kth_energy": max(float(s.energy) for s in sols),
                   "gap": sols.info.get("gap"), "note": f"{len(sols)} of {k} solutions"}
        except LmshrinkError as exc:
            row = {"proven": False, "note": str(exc)}
        row.update(case=name, solver="milp", time_s=time.perf_counter() - t)
        out.append(row)
        log(f"{name}: milp {row['time_s']:.1f} s, proven {row['proven']}")
    return out


def qaoa_section(problem: Any, quick: bool, log: Log) -> dict[str, Any]:
    from lmshrink.solvers.kernels.qaoa_subspace import optimize, subspace_problem
    from lmshrink.solvers.kernels.topk import topk_problem
    from lmshrink.solvers.qaoa import agreement_fixing, cost_operator, restrict, xy_circuits

    out: dict[str, Any] = {}
    # 1. the same 12-qubit circuit: subspace vs qiskit statevector (and Aer)
    from qiskit import transpile
    from qiskit.circuit.library import QAOAAnsatz
    from qiskit.quantum_info import Statevector

    p12 = generated_problem(12, 4, seed=3)
    op, scale = cost_operator(p12, None)
    init, mix = xy_circuits(p12, "ring")
    params = np.array([-0.4, -0.2, -0.1, 0.2, 0.5, 0.8])
    ansatz = QAOAAnsatz(op, reps=3, initial_state=init, mixer_operator=mix)
    basis = transpile(ansatz, basis_gates=["rz", "sx", "x", "cx", "ry", "rx", "h"], optimization_level=0)
    sim = subspace_problem(p12, scale=scale)
    reps = 3
    t = time.perf_counter()
    for _ in range(reps):
        ref = Statevector(basis.assign_parameters(params)).probabilities()
    t_qiskit = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for _ in range(20):
        mine = sim.probabilities(params)
    t_sub = (time.perf_counter() - t) / 20
    row = {"qubits": 12, "p": 3, "qiskit_statevector_s": t_qiskit, "subspace_s": t_sub,
           "speedup": t_qiskit / t_sub, "max_prob_diff": float(np.abs(ref[sim.codes] - mine).max()),
           "expectation_diff": float(abs(ref[sim.codes] @ sim.energies - mine @ sim.energies))}
    try:
        from qiskit_aer import AerSimulator

        aer = AerSimulator(method="statevector")
        circ = basis.assign_parameters(params)
        circ.save_statevector()
        aer.run(circ).result()
        t = time.perf_counter()
        for _ in range(reps):
            aer.run(circ).result()
        row["aer_statevector_s"] = (time.perf_counter() - t) / reps
    except ImportError:
        pass
    out["same_circuit"] = row
    log(f"QAOA 12 qubits: qiskit {t_qiskit * 1e3:.1f} ms, subspace {t_sub * 1e3:.2f} ms per evaluation")

    # 2. the 12-qubit sub-problem of a real problem, fixed the way ``qaoa`` fixes variables
    if problem is not None:
        # ``qaoa`` fixes by the agreement of the 8 best distinct classical states (best first)
        states = topk_problem(problem, k=8).states
        fixed, _ = agreement_fixing(problem, states, 12, {})
        sub, _ = restrict(problem, fixed)
        sim = subspace_problem(sub)
        out["real_sub_problem"] = []
        objectives = (("expectation", {}), ("CVaR α=0.1", {"cvar_alpha": 0.1}), ("Gibbs η=50", {"gibbs_eta": 50.0}))
        for label, kw in objectives:
            t = time.perf_counter()
            result = optimize(sim, p_max=3, maxiter=100, shots=1024, seed=0, **kw)
            out["real_sub_problem"].append({
                "objective": label, "time_s": time.perf_counter() - t, "constraints": repr(sub),
                **{k: result[k] for k in ("dim", "uniform", "p_optimal", "p_optimal_over_uniform", "best_sampled",
                                          "evaluations")},
                "p_optimal_by_depth": [d["p_optimal"] for d in result["depths"]]})
            log(f"QAOA real sub-problem, {label}: p_opt/uniform {result['p_optimal_over_uniform']:.1f}")
    # 3. 22 qubits, no fixing
    n22, m22 = (18, 6) if quick else (22, 11)
    p22 = generated_problem(n22, m22, seed=22)
    t = time.perf_counter()
    sim22 = subspace_problem(p22)
    build = time.perf_counter() - t
    t = time.perf_counter()
    result = optimize(sim22, p_max=3, maxiter=60, shots=1024, seed=0)
    out["large"] = {"qubits": n22, "M": m22, "dim": result["dim"], "build_s": build,
                    "optimizer_run_s": time.perf_counter() - t, "evaluations": result["evaluations"],
                    "per_depth_s": [d["time_s"] for d in result["depths"]],
                    "per_depth_evaluations": [d["evaluations"] for d in result["depths"]],
                    "p_optimal_over_uniform": result["p_optimal_over_uniform"]}
    log(f"QAOA {n22} qubits: {out['large']['optimizer_run_s']:.1f} s for {result['evaluations']} evaluations")
    return out


def smollm2_section(problem: Any, limit: float, log: Log) -> list[dict[str, Any]]:
    """Final-state hit rate of the kernel at its default budget on the layer problem for M = 4..12."""
    from lmshrink.core import Constraint
    from lmshrink.core.removal import with_constraints
    from lmshrink.solvers.kernels.anneal_swap import anneal_problem
    from lmshrink.solvers.kernels.topk import topk_problem

    out = []
    n = problem.num_variables
    for m in range(4, 13):
        p = with_constraints(problem, [Constraint(tuple(range(n)), m, "remove")])
        t = time.perf_counter()
        ref = topk_problem(p, k=1, time_limit=limit)
        t_bnb = time.perf_counter() - t
        opt = float(ref.energies[0])
        row = {"M": m, "optimum": opt, "proven": ref.info["proven"], "bnb_s": t_bnb}
        for key, replicas in (("sa", 1), ("pt", 8)):
            res = anneal_problem(p, num_reads=32, num_sweeps=1000, replicas=replicas, seed=0)
            row.update({f"{key}_s": res.info["time_s"], f"{key}_hit_final": float(hits(res.final_energies, opt).mean()),
                        f"{key}_hit_best_seen": float(hits(res.best_energies, opt).mean())})
        out.append(row)
        log(f"SmolLM2 layer M={m}: final-state hit {row['sa_hit_final']:.2f} annealing, {row['pt_hit_final']:.2f} "
            "tempering")
    return out


def render(data: dict[str, Any]) -> str:
    """report.md of a run: one table or paragraph per section that ran."""
    env = data["environment"]
    lines = ["# Compiled kernels vs today's solvers", "",
             f"Measured side by side in one process (`{env['command']}`), load average {env.get('load_average')} on "
             f"{env['cpus']} CPUs: the machine was shared and busy, so ratios hold better than seconds."]
    if data.get("anneal"):
        lines += ["", "## Annealing, N = 128, 32 reads", ""]
        lines.append(table(
            ["case", "reference", "solver", "sweeps (all replicas)", "time s", "sweeps/s", "feasible",
             "final-state hit", "TTS99 s (per read)", "penalty"],
            [[r["case"], r["reference"], r["solver"], r.get("sweeps"), r["time_s"], r.get("sweeps_per_s"),
              r["feasible"], r["hit_final"], r["tts99_s"], r.get("penalty")] for r in data["anneal"]]))
    if data.get("topk"):
        lines += ["", "## Proven top-k", ""]
        lines.append(table(
            ["case", "solver", "time s", "proven", "k-th energy", "nodes", "root bound", "note"],
            [[r["case"], r["solver"], r["time_s"], r.get("proven"), r.get("kth_energy"), r.get("nodes"),
              r.get("root_bound"), r.get("note", "")] for r in data["topk"]]))
    if data.get("smollm2"):
        lines += ["", "## SmolLM2 layer problems, 32 reads × 1000 sweeps (per replica)", ""]
        lines.append(table(
            ["M", "optimum", "proven", "B&B s", "annealing s", "final-state hit", "best-seen hit",
             "tempering (8 replicas, default) s", "final-state hit", "best-seen hit"],
            [[r["M"], r["optimum"], r["proven"], r["bnb_s"], r["sa_s"], r["sa_hit_final"], r["sa_hit_best_seen"],
              r["pt_s"], r["pt_hit_final"], r["pt_hit_best_seen"]] for r in data["smollm2"]]))
    q = data.get("qaoa") or {}
    if q:
        s = q["same_circuit"]
        lines += ["", "## QAOA", "",
                  f"Same circuit, 12 qubits, p = 3: qiskit Statevector {s['qiskit_statevector_s'] * 1e3:.1f} ms, "
                  f"Aer statevector {s.get('aer_statevector_s', math.nan) * 1e3:.1f} ms, subspace "
                  f"{s['subspace_s'] * 1e3:.3f} ms per evaluation ({s['speedup']:.0f}× qiskit); largest probability "
                  f"difference {s['max_prob_diff']:.1e}, expectation difference {s['expectation_diff']:.1e}."]
    if q.get("real_sub_problem"):
        r0 = q["real_sub_problem"][0]
        lines += ["", f"Real 12-qubit sub-problem, fixed as `qaoa` fixes ({r0['constraints']}, dim {r0['dim']}, "
                  f"uniform {r0['uniform']:.4f}); angles by linear ramp at p = 1, then INTERP to p = 2, 3, COBYLA at "
                  "each:", ""]
        lines.append(table(
            ["objective", "P(opt)/uniform p=1", "p=2", "p=3", "best of 1024 samples optimal",
             "its probability/uniform", "evaluations", "time s"],
            [[r["objective"], *[v / r["uniform"] for v in r["p_optimal_by_depth"]], r["best_sampled"]["optimal"],
              r["best_sampled"]["over_uniform"], r["evaluations"], r["time_s"]] for r in q["real_sub_problem"]]))
    if q.get("large"):
        g = q["large"]
        lines += ["", f"{g['qubits']} qubits, M = {g['M']}, no fixing (dim {g['dim']:,}): build {g['build_s']:.1f} s, "
                  f"optimizer run p = 1→3 {g['optimizer_run_s']:.1f} s ({g['evaluations']} evaluations; COBYLA at "
                  f"p = 1, 2, 3: {', '.join(f'{t:.1f} s' for t in g.get('per_depth_s', []))}), P(optimum) "
                  f"{g['p_optimal_over_uniform']:.1f}× uniform."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from lmshrink.core import load_problem
    from lmshrink.solvers.kernels.anneal_swap import anneal_problem
    from lmshrink.solvers.kernels.instances import low_spread_problem, planted_problem

    args = parse_args(argv)
    limit = args.time_limit or (10.0 if args.quick else 60.0)
    log = Log()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = load_problem(args.problem) if args.problem else None
    sections = {v.strip() for v in args.sections.split(",")}
    unknown = sections - {"anneal", "topk", "smollm2", "qaoa"}
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
    anneal_problem(generated_problem(8, 2), num_reads=2, num_sweeps=2)  # compile (or load) the kernels first
    data: dict[str, Any] = {"environment": environment("benchmarks.kernels"), "quick": args.quick,
                            "time_limit": limit, "anneal": [], "topk": [], "smollm2": [], "qaoa": {}}
    if "anneal" in sections:
        cases = []
        for name, p in (("fisher-like N=128 M=32", generated_problem(128, 32, seed=128)),
                        ("low-spread N=128 M=32", low_spread_problem(128, 32, seed=0)),
                        ("planted N=128 M=32", planted_problem(128, 32, seed=0))):
            target, how = reference(p, limit)
            cases.append((name, p, target, how))
        data["anneal"] = anneal_section(cases, args.quick, log)
    if "topk" in sections:
        data["topk"] = topk_section(limit, args.quick, log)
    if "smollm2" in sections and real is not None:
        data["smollm2"] = smollm2_section(real, limit, log)
    if "qaoa" in sections:
        data["qaoa"] = qaoa_section(real, args.quick, log)
    data["environment"]["load_average_end"] = environment()["load_average"]
    write_json(out / "results.json", data)
    (out / "report.md").write_text(render(data))
    print(out / "report.md")
    return 0
