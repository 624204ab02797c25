"""Proof times of ``exact`` with a 120 s limit: ``python -m benchmarks.kernels.bands band60`` (a SmolLM2-like
sub-layer budget: 30 attention + 30 MLP units, the band 25 % of the parameters, one attention unit wide) or
``card160`` (Fisher-like N = 160, M = 32, cardinality). Prints one JSON line: time, proof, best, lower bound."""
import sys, time, json
import numpy as np
from lmshrink.core import BinaryQuadraticProblem, Constraint
from lmshrink.testing.solvers import fisher_problem
from lmshrink.solvers.exact import ExactSolver
which = sys.argv[1]
if which == "band60":
    p = fisher_problem(60, 8, seed=0)
    w = np.where(np.arange(60) % 2 == 0, 884_736, 2_654_208)
    T = 0.25 * w.sum()
    c = Constraint(tuple(range(60)), weights=w.tolist(), lower=T, upper=T + w.min(), name="budget")
    p = BinaryQuadraticProblem(variables=p.variables, linear=p.linear, quadratic=p.quadratic, constraints=[c])
else:
    p = fisher_problem(160, 32, seed=0)
t = time.perf_counter()
r = ExactSolver().solve(p, num_solutions=1, time_limit=120)
i = r.info
cert = i.get("certificate", {})
print(json.dumps({"which": which, "time_s": round(time.perf_counter() - t, 1), "proven": r.proven_optimal, "best": r.best.energy,
  "lower_bound": i.get("lower_bound"), "splits": i.get("num_splits"), "root_bound": cert.get("root_bound"), "nodes": cert.get("nodes")}), flush=True)
