"""``qaoa``: gate-model QAOA with qiskit-optimization 0.7's ``QAOA`` on Qiskit 2 ``SamplerV2`` primitives.

With x_i = (1 − Z_i)/2 (qubit i in state |1⟩ means x_i = 1) the objective becomes the Ising cost Hamiltonian

    H_C = c + Σ_i h_i Z_i + Σ_{i<j} J_ij Z_i Z_j,   h_i = −(l_i + Q_ii)/2 − Σ_{j≠i} Q_ij/2,   J_ij = Q_ij/2,

scaled by its largest coefficient (which leaves the minimiser unchanged and makes one set of starting angles fit
every problem). Two formulations:

* ``formulation="xy"`` (default), constraint-preserving (Hadfield et al., arXiv:1709.03489): every group starts
  in the Dicke state |D^n_M⟩, the uniform superposition of its C(n, M) feasible strings, prepared exactly with
  the O(nM)-gate circuit of Bärtschi and Eidenbenz (arXiv:1904.07358); the mixer applies
  exp(−iβ(X_aX_b + Y_aY_b)/2) (an ``XXPlusYYGate``) to neighbouring qubits of each group, on a ``ring`` or on
  the ``complete`` graph. Both conserve each group's Hamming weight, so every ideal sample is feasible; only the
  objective is in H_C. Free variables start in |+⟩ and mix with RX(2β).
* ``formulation="penalty"``: H_C of the penalty QUBO ``objective + P Σ_c (Σ x − M_c)²`` (P chosen from the
  problem by :func:`~lmshrink.solvers.composites.choose_penalty` unless ``penalty`` is set; reported as ``penalty``
  and ``penalty_rule``), |+⟩^N and the standard X mixer.

Backends: ``subspace`` (default, the xy formulation only): the exact state over the feasible basis states alone,
Π_g C(n_g, M_g) · 2^free amplitudes instead of 2^n (:mod:`lmshrink.solvers.kernels.qaoa_subspace`, compiled with
numba; the same circuit, equal to qiskit's statevector to 1e-10, hundreds of times faster at 12 qubits). Its angles
start from a linear ramp at p = 1 (the best Δ of a scan) and grow one layer at a time by INTERP, COBYLA at each
depth, minimising the expectation, CVaR (``cvar_alpha``) or the Gibbs objective (``gibbs_eta``), which reward
probability on the lowest states; ``info`` reports the optimum's probability and the best sampled state's against
the uniform baseline 1/dim, per depth. ``statevector`` (qiskit's exact ``StatevectorSampler``), ``aer``
(qiskit-aer's ``SamplerV2``, for larger problems), ``ibm`` (IBM Quantum hardware through qiskit-ibm-runtime's ``SamplerV2``; needs
``QISKIT_IBM_TOKEN`` or a saved account) and ``fake-ibm``, the offline hardware path: the same ISA
transpilation and ``SamplerV2`` run as ``ibm`` but on a noisy fake device of qiskit-ibm-runtime's
``fake_provider`` (default ``FakeGuadalupeV2``, 16 qubits, simulated by Aer with the device's noise model).
Without qiskit-ibm-runtime, ``fake-ibm`` falls back to qiskit's ``GenericBackendV2`` with its generated noise,
run by qiskit-aer's ``SamplerV2`` on ``AerSimulator.from_backend`` (reported as ``device``). With ``init="ramp"``
(default) the qiskit backends of the xy formulation start COBYLA from the angles the subspace simulator optimised
(γ rescaled from its energy scale to the circuit's), when numba is installed; otherwise, and with ``init="random"``,
from angles drawn uniformly in [0.2, 0.6] (``info["initial_point"]`` says which).
Both IBM backends run
through :func:`lmshrink.solvers.ibm_runtime.open_runtime`: ``ibm_mode`` job, session or batch for the optimizer
loop, the device time estimated before submitting (``device_time_estimate``; ``max_qpu_seconds`` refuses a run
over it) and the quantum seconds used (``qpu_seconds``).

The solver is the stack ``RepairComposite(FixingComposite(QAOACircuits()))`` (:mod:`lmshrink.solvers.composites`).
A problem with more variables than ``max_qubits`` (after dropping groups that the constraints fix entirely) is
reduced classically: lmshrink's ``anneal`` solver returns its ``reduce_top`` best distinct states, and the
variables on which they agree most with the best one are fixed to its values until ``max_qubits`` remain; the
reduced problem keeps the couplings to fixed variables as linear terms. ``info["fixed_variables"]`` lists them and
``info["reduction"]["classical_best_energy"]`` is what the classical pre-solve found, next to QAOA's own best
(the result's ``raw`` summary, before repair).

Sampled states of the final circuit (and the best measurement seen during the optimization) are mapped back to
full vectors; a state that breaks a constraint (penalty formulation, or hardware noise) is repaired by the greedy
step of :mod:`lmshrink.solvers.repair` and counted. IBM credentials are checked before qiskit is imported.
Reported: ``circuit_depth`` and ``two_qubit_gates`` of the transpiled circuit (the device's ISA on IBM backends),
``shots``, ``optimizer_evals``, and ``p_optimal``, the ideal (noiseless statevector) probability of the reduced
problem's optimal state at the final angles, when that problem is small enough to enumerate. A recorded run
(:mod:`lmshrink.experiments.record`) also keeps the ISA circuit, the optimizer trace and the final distribution.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..core import BinaryQuadraticProblem, Samples, Solver, SolverCapabilities, option
from ..core.budget import check_budget
from ..core.capture import offer
from ..core.errors import (
    LmshrinkError,
    MissingDependencyError,
    require,
)
from .composites import (  # noqa: F401 - restrict, forced_variables, agreement_fixing: importable from here too
    FixingComposite,
    RepairComposite,
    agreement_fixing,
    choose_penalty,
    forced_variables,
    restrict,
)
from .exact import count_feasible, feasible_states
from .ibm_runtime import (
    IBM_BACKENDS,
    has_ibm_credentials,
    ibm_call,
    isa_facts,
    isa_pass_manager,
    open_runtime,
    require_ibm_credentials,
)

BACKENDS = ("subspace", "statevector", "aer", "fake-ibm", "ibm")


# --- circuits -------------------------------------------------------------------------------------------------------
def cost_operator(problem: BinaryQuadraticProblem, penalty: float | None) -> tuple[Any, float]:
    """H_C as a ``SparsePauliOp`` (constant dropped), divided by its largest |coefficient|; returns (op, scale)."""
    from qiskit.quantum_info import SparsePauliOp

    if penalty is None:
        lin, Q = problem.linear, problem.quadratic
    else:
        lin, Q, _ = problem.penalty_qubo(penalty)
    n = problem.num_variables
    a = lin + np.diag(Q)
    off = Q - np.diag(np.diag(Q))
    # Σ a_i x_i + Σ_{i≠j} Q_ij x_i x_j with x = (1 − Z)/2:
    #   h_i = −a_i/2 − Σ_{j≠i} Q_ij/2,  J_ij = Q_ij/2 (i < j)
    h = -a / 2 - off.sum(axis=1) / 2
    terms = [("Z", [i], float(h[i])) for i in range(n) if h[i] != 0]
    iu, ju = np.triu_indices(n, 1)
    terms += [("ZZ", [int(i), int(j)], float(off[i, j] / 2)) for i, j in zip(iu, ju) if off[i, j] != 0]
    scale = max((abs(t[2]) for t in terms), default=1.0) or 1.0
    if not terms:
        return SparsePauliOp.from_sparse_list([("Z", [0], 0.0)], num_qubits=n), 1.0
    return SparsePauliOp.from_sparse_list([(p, q, c / scale) for p, q, c in terms], num_qubits=n), scale


def _scs(qc: Any, q: list[int], k: int) -> None:
    """Split-and-cyclic-shift block SCS_{n,k} of Bärtschi & Eidenbenz on qubits q[0..n−1] (n = len(q))."""
    n = len(q)
    qc.cx(q[n - 2], q[n - 1])
    qc.cry(2 * math.acos(math.sqrt(1 / n)), q[n - 1], q[n - 2])
    qc.cx(q[n - 2], q[n - 1])
    for ell in range(2, k + 1):
        qc.cx(q[n - ell - 1], q[n - 1])
        qc.mcry(2 * math.acos(math.sqrt(ell / n)), [q[n - 1], q[n - ell]], q[n - ell - 1])
        qc.cx(q[n - ell - 1], q[n - 1])


def dicke_state(qc: Any, qubits: list[int], k: int) -> None:
    """Append the preparation of |D^n_k⟩ (uniform over weight-k strings) on ``qubits``, starting from |0…0⟩.

    U_{n,k} = Π_{l=n}^{k+1} SCS_{l,k} · Π_{l=k}^{2} SCS_{l,l−1} applied to |0^{n−k} 1^k⟩ (arXiv:1904.07358).
    """
    n = len(qubits)
    if k == 0:
        return
    for i in range(n - k, n):
        qc.x(qubits[i])
    if k == n:
        return
    for ell in range(n, k, -1):
        _scs(qc, qubits[:ell], k)
    for ell in range(k, 1, -1):
        _scs(qc, qubits[:ell], ell - 1)


def xy_circuits(problem: BinaryQuadraticProblem, mixer: str) -> tuple[Any, Any]:
    """(initial state, one-parameter mixer) of the constraint-preserving formulation."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.circuit.library import XXPlusYYGate

    n = problem.num_variables
    init = QuantumCircuit(n, name="dicke")
    mix = QuantumCircuit(n, name="xy_mixer")
    beta = Parameter("β")
    for c in problem.constraints:
        q = list(c.indices)
        dicke_state(init, q, c.equals)
        m = len(q)
        if m < 2:
            continue
        if mixer == "complete":
            pairs = [(q[a], q[b]) for a in range(m) for b in range(a + 1, m)]
        else:  # ring: neighbours, closed when there are more than two
            pairs = [(q[a], q[(a + 1) % m]) for a in range(m if m > 2 else 1)]
        for a, b in pairs:
            # XXPlusYYGate(θ) = exp(−iθ(XX + YY)/4): a hop that keeps the Hamming weight
            mix.append(XXPlusYYGate(2 * beta), [a, b])
    for i in problem.free_indices:
        init.h(i)
        mix.rx(2 * beta, i)
    return init, mix


# --- backends ---------------------------------------------------------------------------------------------------------
def make_sampler(backend: str, num_qubits: int, shots: int, seed: int, device: str | None) -> tuple[Any, Any, str]:
    """(SamplerV2, pass manager or None, device description) for the simulator ``backend``."""
    if backend == "statevector":
        from qiskit.primitives import StatevectorSampler
        from qiskit.transpiler import generate_preset_pass_manager

        # transpiled once to basis gates: the Dicke state's multi-controlled rotations are not re-synthesised
        # at every evaluation
        pm = generate_preset_pass_manager(
            optimization_level=1, basis_gates=["rz", "sx", "x", "cx"], seed_transpiler=seed
        )
        return StatevectorSampler(default_shots=shots, seed=seed), pm, "StatevectorSampler (exact)"
    if backend == "aer":
        aer = require("qiskit_aer", "qaoa", "The 'qaoa' solver with backend=aer")
        from qiskit_aer.primitives import SamplerV2 as AerSampler

        pm = isa_pass_manager(aer.AerSimulator(), seed)
        return AerSampler(default_shots=shots, seed=seed), pm, "AerSimulator"
    raise LmshrinkError(f"make_sampler runs the simulators (statevector, aer), not {backend!r}: IBM backends run "
                        "through lmshrink.solvers.ibm_runtime.open_runtime.")


# --- the solver -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QAOAOptions:
    formulation: Literal["xy", "penalty"] = option("xy", "xy (Dicke state + XY mixer, always feasible) or penalty "
                                                         "(X mixer)")
    mixer: Literal["ring", "complete"] = option("ring", "XY mixer graph within each group: ring or complete")
    reps: int = option(1, "QAOA layers p", minimum=1)
    backend: Literal["subspace", "statevector", "aer", "fake-ibm", "ibm"] = option(
        "subspace", "subspace (exact state over the feasible states; xy only), statevector, aer, fake-ibm (noisy, "
                    "offline) or ibm (hardware)")
    device: str | None = option(None, "IBM backend name (ibm) or fake_provider class (fake-ibm, default "
                                      "FakeGuadalupeV2)")
    shots: int = option(1024, "shots per circuit evaluation", minimum=1)
    maxiter: int = option(60, "COBYLA iterations (circuit evaluations; per depth with the subspace ramp)", minimum=1)
    init: Literal["ramp", "random"] = option("ramp", "ramp (linear ramp + INTERP; the qiskit backends start from the "
                                                     "subspace simulator's angles) or random")
    cvar_alpha: float | None = option(None, "CVaR aggregation α in (0, 1]; default: the plain expectation",
                                      minimum=0.0)
    gibbs_eta: float | None = option(None, "Gibbs objective −log⟨exp(−η(E − E_min)/σ)⟩, σ the energies' spread over "
                                           "the feasible states (subspace only); default: the plain expectation",
                                     minimum=0.0)
    penalty: float | None = option(None, "penalty weight P (penalty formulation); default chosen from the problem",
                                   minimum=0.0)
    ibm_mode: Literal["job", "session", "batch"] = option("job", "IBM execution mode of the optimizer loop: job, "
                                                                 "session or batch (ibm, fake-ibm)")
    max_qpu_seconds: float | None = option(None, "refuse, before submitting, a run whose estimated device time "
                                                 "exceeds this (ibm, fake-ibm)", minimum=0.0)


class QAOACircuits(Solver):
    """QAOA (qiskit-optimization 0.7) on the whole problem it is given: a Dicke state + XY mixer, or the penalty
    QUBO + X mixer; raw measurements only (no variable fixing, no repair: see :class:`QAOASolver`)."""

    name = "qaoa-circuits"
    description = "Gate-model QAOA on every variable of the problem; raw measurements."
    options = QAOAOptions
    capabilities = SolverCapabilities(
        honours_time_limit=False, exponential_in="variables", requires=("numba", "scipy"),
        extra="qaoa", quick_options={"maxiter": 15, "shots": 512},
    )

    def preflight(self, problem: BinaryQuadraticProblem, options: Mapping[str, Any]) -> None:
        check_objective_options(options)
        if options.get("backend") == "ibm":  # before qiskit is imported: a missing token is said at once
            require_ibm_credentials()

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: QAOAOptions) -> Samples:
        o = options
        if o.backend == "subspace":
            return subspace_samples(problem, o, seed)
        if o.backend == "ibm":
            require_ibm_credentials()
        require("qiskit", "qaoa", "The 'qaoa' solver")
        mes = require("qiskit_optimization.minimum_eigensolvers", "qaoa", "The 'qaoa' solver")
        optimizers = require("qiskit_optimization.optimizers", "qaoa", "The 'qaoa' solver")
        seed = int(seed or 0) % (2**31)
        rng = np.random.default_rng(seed)
        n = problem.num_variables
        info: dict[str, Any] = {"formulation": o.formulation, "backend": o.backend, "reps": o.reps, "num_qubits": n}

        # 1. circuits
        if o.formulation == "xy":
            op, scale = cost_operator(problem, None)
            init, mix = xy_circuits(problem, o.mixer)
        else:
            if o.penalty is None:
                P, rule = choose_penalty(problem)
            else:
                P, rule = float(o.penalty), "given"
            info.update(penalty=P, penalty_rule=rule)
            op, scale = cost_operator(problem, P)
            init, mix = None, None
        hardware = o.backend in IBM_BACKENDS
        runtime = open_runtime(o.backend, n, o.shots, seed, o.device, o.ibm_mode) if hardware else nullcontext()
        with runtime as target:
            sampler, pm, device_name = (target.sampler, target.pass_manager, target.device) if hardware \
                else make_sampler(o.backend, n, o.shots, seed, o.device)
            info["device"] = device_name
            # γ multiplies H_C (normalised to max |coefficient| 1), β the mixer
            initial, info["initial_point"] = initial_point(problem, o, scale, seed, rng)
            trace: list[dict[str, Any]] = []
            qaoa = mes.QAOA(
                sampler,
                optimizers.COBYLA(maxiter=o.maxiter),
                reps=o.reps,
                initial_state=init,
                mixer=mix,
                initial_point=initial,
                aggregation=o.cvar_alpha,
                pass_manager=pm,
                callback=lambda k, x, mean, _: trace.append(
                    {"evaluation": int(k), "cost": float(np.real(mean)) * scale, "parameters": [float(v) for v in x]}),
            )
            if hardware:  # the device time of the whole loop, before anything is submitted
                estimate = target.estimate(qaoa_ansatz(op, o.reps, init, mix), o.maxiter + 1)
                info["device_time_estimate"] = estimate
                check_budget(estimate["seconds"], o.max_qpu_seconds, f"QAOA on {device_name}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                run = qaoa.compute_minimum_eigenvalue
                result = ibm_call("running", run, op) if o.backend == "ibm" else run(op)
            if hardware:
                info.update(target.used_seconds(qaoa.ansatz, int(result.cost_function_evals or 0) + 1))
            info["execution_mode"] = target.mode if hardware else None

        # 2. circuit facts, from the circuit as it ran (ISA for hardware, a basis-gate transpile otherwise)
        facts, isa = self._circuit_facts(qaoa.ansatz, pm, seed)
        info.update(facts)
        info["shots"] = o.shots
        info["optimizer_evals"] = int(result.cost_function_evals or 0)
        offer("optimizer_trace", trace)
        offer("circuit", lambda: {**facts, "device": device_name, "shots": o.shots, "reps": o.reps,
                                  "qasm3": _qasm3(isa)})
        info["optimal_value"] = float(np.real(result.eigenvalue) * scale)
        info["optimal_parameters"] = [float(v) for v in result.optimal_point]

        # 3. states: the final distribution, most probable first, plus the best measurement of the run
        dist = dict(result.eigenstate or {})
        items = sorted(dist.items(), key=lambda kv: -kv[1])
        bitstrings = [_bits(k, n) for k, _ in items]
        if result.best_measurement:
            bitstrings.append(_bits(result.best_measurement["bitstring"], n))
        X = np.array([[int(b[n - 1 - i]) for i in range(n)] for b in bitstrings], dtype=np.int8)
        info["num_distinct_measured"] = len(items)
        feasible = np.array([problem.is_feasible(x) for x in X])
        info["measured_feasible_fraction"] = float(sum(p for (k, p), ok in zip(items, feasible[: len(items)]) if ok))
        info.update(self._p_optimal(problem, qaoa.ansatz, result.optimal_point))
        probability = [p for _, p in items] + ([None] if result.best_measurement else [])
        offer("distribution", lambda: {"variables": list(problem.variables), "states": X[: len(items)].tolist(),
                                       "probabilities": [float(p) for _, p in items]})
        return Samples(X, info, {"probability": probability})

    @staticmethod
    def _circuit_facts(ansatz: Any, pm: Any, seed: int) -> tuple[dict[str, Any], Any]:
        """Depth, two-qubit count and gate counts of the circuit as it ran (ISA for hardware), and the circuit."""
        circ = pm.run(ansatz)
        return isa_facts(circ), circ

    @staticmethod
    def _p_optimal(sub: BinaryQuadraticProblem, ansatz: Any, point: np.ndarray) -> dict[str, Any]:
        """Ideal probability of the reduced problem's optimal state(s) at the final angles."""
        n = sub.num_variables
        if n > 20 or count_feasible(sub) > 1 << 16:
            return {}
        from qiskit.quantum_info import Statevector

        X = np.concatenate(list(feasible_states(sub)))
        E = sub.energies(X)
        best = X[E <= E.min() + 1e-9 * (1 + abs(E.min()))]
        from qiskit import transpile

        circ = ansatz.remove_final_measurements(inplace=False).assign_parameters(point)
        # basis gates first: Statevector would otherwise exponentiate each Pauli evolution as a 2^n matrix
        circ = transpile(circ, basis_gates=["rz", "sx", "x", "cx", "ry", "rx", "h"], optimization_level=0)
        probs = Statevector(circ).probabilities()
        idx = [int(sum(int(v) << i for i, v in enumerate(x))) for x in best]
        return {"p_optimal": float(probs[idx].sum()), "reduced_optimum": float(E.min())}


# --- the subspace simulator and the initial angles ---------------------------------------------------------------
def check_objective_options(options: Mapping[str, Any]) -> None:
    """One sentence for option combinations the backends cannot run, before any slow work."""
    backend = options.get("backend", "subspace")
    if backend == "subspace" and options.get("formulation") == "penalty":
        raise LmshrinkError("backend=subspace simulates the xy formulation only (the penalty circuit leaves the "
                            "feasible states); use backend=statevector or aer with formulation=penalty.")
    if options.get("gibbs_eta") is not None and backend != "subspace":
        raise LmshrinkError(f"gibbs_eta needs backend=subspace (the qiskit backends aggregate by cvar_alpha), not "
                            f"backend={backend}.")
    if options.get("gibbs_eta") is not None and options.get("cvar_alpha") is not None:
        raise LmshrinkError("Give cvar_alpha or gibbs_eta, not both.")


def _subspace_kernel() -> Any:
    require("numba", "qaoa", "The 'qaoa' solver's subspace simulator")
    require("scipy.optimize", "qaoa", "The 'qaoa' solver's angle optimization")
    from .kernels import qaoa_subspace

    return qaoa_subspace


def subspace_samples(problem: BinaryQuadraticProblem, o: QAOAOptions, seed: int | None) -> Samples:
    """QAOA of the xy formulation simulated over the feasible states: optimised angles, then ``o.shots`` samples
    (distinct states, most frequent first, with their count and ideal probability)."""
    kernel = _subspace_kernel()
    sim = kernel.subspace_problem(problem, mixer=o.mixer)
    seed = int(seed or 0) % (2**31)
    initial = None if o.init == "ramp" else np.random.default_rng(seed).uniform(0.2, 0.6, 2 * o.reps)
    run = kernel.optimize(sim, p_max=o.reps, maxiter=o.maxiter, shots=o.shots, seed=seed, cvar_alpha=o.cvar_alpha,
                          gibbs_eta=o.gibbs_eta, initial=initial)
    index, counts = np.unique(run["draws"], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    index, counts = index[order], counts[order]
    probs = sim.probabilities(run["params"])
    objective = ("CVaR" if o.cvar_alpha is not None else "Gibbs" if o.gibbs_eta is not None else "expectation")
    info: dict[str, Any] = {
        "formulation": "xy", "backend": "subspace", "reps": o.reps, "num_qubits": problem.num_variables,
        "device": f"subspace statevector (exact amplitudes over the {sim.dim:,} feasible states)",
        "init": o.init, "objective": objective, "optimizer_evals": run["evaluations"],
        "optimal_parameters": run["params"], "dim": sim.dim, "uniform": run["uniform"],
        "p_optimal": run["p_optimal"], "p_optimal_over_uniform": run["p_optimal_over_uniform"],
        "reduced_optimum": run["optimum"], "best_sampled": {k: v for k, v in run["best_sampled"].items()
                                                             if k != "state"},
        "depths": [{k: d[k] for k in ("p", "expectation", "p_optimal", "evaluations", "time_s")}
                   for d in run["depths"]],
        "num_distinct_measured": len(index), "measured_feasible_fraction": 1.0,
    }
    return Samples(sim.states(index), info, {"probability": probs[index].tolist(), "count": counts.tolist()})


def initial_point(problem: BinaryQuadraticProblem, o: QAOAOptions, scale: float, seed: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """COBYLA's starting angles for a qiskit backend and how they were found.

    With ``init="ramp"`` and the xy formulation: the subspace simulator's optimised angles (when numba is
    installed). Its cost layer is e^{−iγ(E − E_ref)/σ} (σ the energies' spread), the circuit's e^{−iγ'(E − c)/s}
    (s the largest Ising coefficient, :func:`cost_operator`), so γ' = γ·s/σ; β is the same.
    """
    if o.init == "ramp" and o.formulation == "xy":
        try:
            kernel = _subspace_kernel()
        except MissingDependencyError:
            kernel = None
        if kernel is not None:
            sim = kernel.subspace_problem(problem, mixer=o.mixer)
            run = kernel.optimize(sim, p_max=o.reps, maxiter=o.maxiter, shots=1, seed=seed, cvar_alpha=o.cvar_alpha)
            params = np.array(run["params"])
            params[o.reps:] *= scale / sim.scale
            return params, "subspace simulator's optimised angles (linear ramp + INTERP), γ rescaled"
    return rng.uniform(0.2, 0.6, 2 * o.reps), "uniform random in [0.2, 0.6]"


def qaoa_ansatz(op: Any, reps: int, initial_state: Any, mixer: Any) -> Any:
    """The measured QAOA circuit qiskit-optimization's ``QAOA`` runs for ``op`` (for estimates before a run)."""
    from qiskit.circuit.library import QAOAAnsatz

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the class qiskit-optimization's QAOA uses, deprecated
        ansatz = QAOAAnsatz(op, reps=reps, initial_state=initial_state, mixer_operator=mixer)
        ansatz.measure_all()
    return ansatz


def _qasm3(circuit: Any) -> str | None:
    """The circuit as OpenQASM 3 text (None when qiskit cannot export one of its gates)."""
    from qiskit import qasm3

    try:
        return qasm3.dumps(circuit)
    except Exception:  # noqa: BLE001 - an export failure only drops the text from the record
        return None


def _bits(key: Any, n: int) -> str:
    """A measured outcome (bitstring or integer) as an n-character bitstring, qubit 0 rightmost."""
    if isinstance(key, str):
        return key.zfill(n)
    return format(int(key), f"0{n}b")


class QAOASolver(RepairComposite):
    """QAOA with classical variable fixing past ``max_qubits`` and greedy repair of infeasible measurements."""

    name = "qaoa"
    description = ("Gate-model QAOA: Dicke + XY mixer simulated over the feasible states (default), or qiskit "
                   "circuits (XY or penalty QUBO) on statevector/Aer/IBM.")
    capabilities = SolverCapabilities(
        honours_time_limit=False, exponential_in="variables", requires=("numba", "scipy"),
        extra="qaoa", offline_options={"backend": "subspace"},
        quick_options={"max_qubits": 8, "maxiter": 15, "shots": 512},
    )

    def __init__(self) -> None:
        fixing = FixingComposite(QAOACircuits(), limit=12, limit_option="max_qubits", reduce_top=8)
        super().__init__(fixing, polish=False)
