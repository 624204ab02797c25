"""benchmarks/kernels: its report renders every section from the results it stores."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.kernels.study import parse_args, render  # noqa: E402


def test_report_renders_every_section():
    data = {
        "environment": {"command": "python -m benchmarks.kernels", "load_average": [1.0], "cpus": 2},
        "anneal": [{"case": "c", "reference": "planted", "solver": "s", "sweeps": 1000, "time_s": 2.0,
                    "sweeps_per_s": 500.0, "feasible": 1.0, "hit_final": 0.5, "tts99_s": 0.2}],
        "topk": [{"case": "c", "solver": "kernel topk_bnb", "time_s": 1.0, "proven": True, "kth_energy": 0.5,
                  "nodes": 10, "root_bound": 0.1}],
        "smollm2": [{"M": 4, "optimum": 0.1, "proven": True, "bnb_s": 0.5, "sa_s": 0.2, "sa_hit_final": 0.5,
                     "sa_hit_best_seen": 1.0, "pt_s": 1.0, "pt_hit_final": 1.0, "pt_hit_best_seen": 1.0}],
        "qaoa": {"same_circuit": {"qiskit_statevector_s": 0.5, "aer_statevector_s": 0.2, "subspace_s": 0.001,
                                  "speedup": 500.0, "max_prob_diff": 1e-16, "expectation_diff": 1e-13},
                 "real_sub_problem": [{"objective": "expectation", "constraints": "P", "dim": 220, "uniform": 1 / 220,
                                       "p_optimal_by_depth": [0.01, 0.02, 0.03], "evaluations": 100, "time_s": 1.0,
                                       "best_sampled": {"optimal": True, "over_uniform": 6.6}}],
                 "large": {"qubits": 22, "M": 11, "dim": 705432, "build_s": 4.0, "optimizer_run_s": 50.0,
                           "evaluations": 150, "p_optimal_over_uniform": 4.0}},
    }
    text = render(data)
    assert "| c | planted | s | 1000 | 2 | 500 | 1 | 0.5 | 0.2 |" in text
    assert "(500× qiskit)" in text
    assert "| expectation | 2.2 | 4.4 | 6.6 | True | 6.6 | 100 | 1 |" in text
    assert "22 qubits, M = 11, no fixing (dim 705,432)" in text
    assert parse_args(["--quick"]).quick
