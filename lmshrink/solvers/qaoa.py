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

Backends: ``statevector`` (qiskit's exact ``StatevectorSampler``), ``aer`` (qiskit-aer's ``SamplerV2``, for
larger problems), ``ibm`` (IBM Quantum hardware through qiskit-ibm-runtime's ``SamplerV2``; needs
``QISKIT_IBM_TOKEN`` or a saved account) and ``fake-ibm``, the offline hardware path: the same ISA
transpilation and ``SamplerV2`` run as ``ibm`` but on a noisy fake device of qiskit-ibm-runtime's
``fake_provider`` (default ``FakeGuadalupeV2``, 16 qubits, simulated by Aer with the device's noise model).
Without qiskit-ibm-runtime, ``fake-ibm`` falls back to qiskit's ``GenericBackendV2`` with its generated noise,
run by qiskit-aer's ``SamplerV2`` on ``AerSimulator.from_backend`` (reported as ``device``).

The solver is the stack ``RepairComposite(FixingComposite(QAOACircuits()))`` (:mod:`lmshrink.solvers.composites`).
A problem with more variables than ``max_qubits`` (after dropping groups that the constraints fix entirely) is
reduced classically: lmshrink's ``anneal`` solver returns its ``reduce_top`` best distinct states, and the
variables on which they agree most with the best one are fixed to its values until ``max_qubits`` remain; the
reduced problem keeps the couplings to fixed variables as linear terms. ``info["fixed_variables"]`` lists them and
``info["reduction"]["classical_best_energy"]`` is what the classical pre-solve found, next to QAOA's own best
(the result's ``raw`` summary, before repair).

Sampled states of the final circuit (and the best measurement seen during the optimization) are mapped back to
full vectors; a state that breaks a constraint (penalty formulation, or hardware noise) is repaired by the greedy
step of :mod:`lmshrink.solvers.repair` and counted. IBM credentials are checked before qiskit is imported. Reported: ``circuit_depth`` and ``two_qubit_gates`` of the
transpiled circuit, ``optimizer_evals``, and ``p_optimal``, the ideal (noiseless statevector) probability of the
reduced problem's optimal state at the final angles, when that problem is small enough to enumerate.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..core import BinaryQuadraticProblem, MissingCredentialsError, Samples, Solver, SolverCapabilities, option
from ..core.errors import CredentialsRefusedError, LmshrinkError, ProblemTooLargeError, require
from ..plugins import hookimpl
from .composites import (  # noqa: F401 - restrict, forced_variables, agreement_fixing: importable from here too
    FixingComposite,
    RepairComposite,
    agreement_fixing,
    choose_penalty,
    forced_variables,
    restrict,
)

BACKENDS = ("statevector", "aer", "fake-ibm", "ibm")
IBM_CREDENTIALS = "set QISKIT_IBM_TOKEN or save an account with QiskitRuntimeService.save_account()"


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
def has_ibm_credentials() -> bool:
    """Whether IBM Quantum credentials are configured: ``QISKIT_IBM_TOKEN`` or an account saved by
    ``QiskitRuntimeService.save_account()`` (``~/.qiskit/qiskit-ibm.json``), read without importing qiskit."""
    if os.environ.get("QISKIT_IBM_TOKEN"):
        return True
    try:
        return bool(json.loads((Path.home() / ".qiskit" / "qiskit-ibm.json").read_text()))
    except (OSError, ValueError):  # no file, or an unreadable one: the same as none
        return False


def _require_ibm_credentials() -> None:
    if not has_ibm_credentials():
        raise MissingCredentialsError(
            f"The 'qaoa' solver with backend=ibm needs IBM Quantum credentials: {IBM_CREDENTIALS}."
        )


def ibm_call(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, with a refused token or an unreachable service said in one sentence."""
    exceptions = require("qiskit_ibm_runtime.exceptions", "ibm", "The 'qaoa' solver with backend=ibm")
    accounts = require("qiskit_ibm_runtime.accounts", "ibm", "The 'qaoa' solver with backend=ibm")
    refused = (exceptions.IBMNotAuthorizedError, exceptions.IBMAccountError, accounts.InvalidAccountError,
               accounts.AccountNotFoundError)
    try:
        return call(*args, **kwargs)
    except refused as exc:
        raise CredentialsRefusedError(
            f"The token was refused by IBM Quantum ({what}): check QISKIT_IBM_TOKEN or the saved account "
            f"({type(exc).__name__})."
        ) from exc
    except (exceptions.IBMApiError, ConnectionError, TimeoutError) as exc:
        raise CredentialsRefusedError(
            f"IBM Quantum could not be reached ({what}): check the network, the token and the instance "
            f"({type(exc).__name__})."
        ) from exc


def _ibm_service() -> Any:
    """A ``QiskitRuntimeService`` from QISKIT_IBM_TOKEN or a saved account."""
    _require_ibm_credentials()
    runtime = require("qiskit_ibm_runtime", "ibm", "The 'qaoa' solver with backend=ibm")
    kwargs: dict[str, Any] = {}
    token = os.environ.get("QISKIT_IBM_TOKEN")
    if token:
        kwargs["token"] = token
        if os.environ.get("QISKIT_IBM_INSTANCE"):
            kwargs["instance"] = os.environ["QISKIT_IBM_INSTANCE"]
        if os.environ.get("QISKIT_IBM_CHANNEL"):
            kwargs["channel"] = os.environ["QISKIT_IBM_CHANNEL"]
    return ibm_call("connecting", runtime.QiskitRuntimeService, **kwargs)


def make_sampler(backend: str, num_qubits: int, shots: int, seed: int, device: str | None) -> tuple[Any, Any, str]:
    """(SamplerV2, pass manager or None, device description) for ``backend``."""
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

        pm = _isa_pass_manager(aer.AerSimulator(), seed)
        return AerSampler(default_shots=shots, seed=seed), pm, "AerSimulator"
    if backend == "fake-ibm":
        try:
            import qiskit_ibm_runtime  # noqa: F401
        except ImportError:
            require("qiskit_aer", "qaoa", "The 'qaoa' solver with backend=fake-ibm")
            from qiskit.providers.fake_provider import GenericBackendV2
            from qiskit_aer.noise import NoiseModel
            from qiskit_aer.primitives import SamplerV2 as AerSampler

            generic = GenericBackendV2(num_qubits=max(num_qubits, 5), seed=seed, noise_info=True)
            noise = NoiseModel.from_backend(generic)
            sampler = AerSampler(default_shots=shots, seed=seed, options={"backend_options": {"noise_model": noise}})
            pm = _isa_pass_manager(generic, seed)
            return sampler, pm, f"GenericBackendV2({generic.num_qubits} qubits) + Aer noise (no qiskit-ibm-runtime)"
        from qiskit_ibm_runtime import fake_provider

        name = device or "FakeGuadalupeV2"
        if not hasattr(fake_provider, name):
            raise LmshrinkError(f"qiskit_ibm_runtime.fake_provider has no {name!r} (e.g. FakeGuadalupeV2).")
        fake = getattr(fake_provider, name)()
        if fake.num_qubits < num_qubits:
            raise ProblemTooLargeError(f"{name} has {fake.num_qubits} qubits, the circuit needs {num_qubits}.")
        aer = require("qiskit_aer", "qaoa", "The 'qaoa' solver with backend=fake-ibm")
        # runtime's local mode would rebuild the device's noise model for every job; build it once
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy sparse-efficiency chatter while building the noise model
            sim = aer.AerSimulator.from_backend(fake, seed_simulator=seed)
        sampler = _runtime_sampler(sim, shots)
        return sampler, _isa_pass_manager(fake, seed), f"{name} (noisy, offline, runtime SamplerV2 on Aer)"
    service = _ibm_service()
    if device:
        hw = ibm_call("choosing a backend", service.backend, device)
    else:
        hw = ibm_call("choosing a backend", service.least_busy, operational=True, simulator=False,
                      min_num_qubits=num_qubits)
    return _runtime_sampler(hw, shots), _isa_pass_manager(hw, seed), f"IBM {hw.name}"


def _isa_pass_manager(backend: Any, seed: int) -> Any:
    from qiskit.transpiler import generate_preset_pass_manager

    return generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=seed)


def _runtime_sampler(backend: Any, shots: int) -> Any:
    """qiskit-ibm-runtime's ``SamplerV2`` in job mode on ``backend`` (a real device or a fake one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # SamplerV2 is deprecated from 0.50 on
        from qiskit_ibm_runtime import SamplerV2

        sampler = SamplerV2(mode=backend)
    sampler.options.default_shots = shots
    return sampler


# --- the solver -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QAOAOptions:
    formulation: Literal["xy", "penalty"] = option("xy", "xy (Dicke state + XY mixer, always feasible) or penalty "
                                                         "(X mixer)")
    mixer: Literal["ring", "complete"] = option("ring", "XY mixer graph within each group: ring or complete")
    reps: int = option(1, "QAOA layers p", minimum=1)
    backend: Literal["statevector", "aer", "fake-ibm", "ibm"] = option(
        "statevector", "statevector, aer, fake-ibm (noisy, offline) or ibm (hardware)")
    device: str | None = option(None, "IBM backend name (ibm) or fake_provider class (fake-ibm, default "
                                      "FakeGuadalupeV2)")
    shots: int = option(1024, "shots per circuit evaluation", minimum=1)
    maxiter: int = option(60, "COBYLA iterations (circuit evaluations)", minimum=1)
    cvar_alpha: float | None = option(None, "CVaR aggregation α in (0, 1]; default: the plain expectation",
                                      minimum=0.0)
    penalty: float | None = option(None, "penalty weight P (penalty formulation); default chosen from the problem",
                                   minimum=0.0)


class QAOACircuits(Solver):
    """QAOA (qiskit-optimization 0.7) on the whole problem it is given: a Dicke state + XY mixer, or the penalty
    QUBO + X mixer; raw measurements only (no variable fixing, no repair: see :class:`QAOASolver`)."""

    name = "qaoa-circuits"
    description = "Gate-model QAOA on every variable of the problem; raw measurements."
    options = QAOAOptions
    capabilities = SolverCapabilities(
        honours_time_limit=False, exponential_in="variables", requires=("qiskit", "qiskit_optimization"),
        extra="qaoa", quick_options={"maxiter": 15, "shots": 512},
    )

    def preflight(self, problem: BinaryQuadraticProblem, options: Mapping[str, Any]) -> None:
        if options.get("backend") == "ibm":  # before qiskit is imported: a missing token is said at once
            _require_ibm_credentials()

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: QAOAOptions) -> Samples:
        o = options
        if o.backend == "ibm":
            _require_ibm_credentials()
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
        sampler, pm, device_name = make_sampler(o.backend, n, o.shots, seed, o.device)
        info["device"] = device_name
        # γ multiplies H_C (normalised to max |coefficient| 1), β the mixer; start near a small-angle Trotter step
        initial = rng.uniform(0.2, 0.6, 2 * o.reps)
        qaoa = mes.QAOA(
            sampler,
            optimizers.COBYLA(maxiter=o.maxiter),
            reps=o.reps,
            initial_state=init,
            mixer=mix,
            initial_point=initial,
            aggregation=o.cvar_alpha,
            pass_manager=pm,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            run = qaoa.compute_minimum_eigenvalue
            result = ibm_call("running", run, op) if o.backend == "ibm" else run(op)

        # 2. circuit facts, from the circuit as it ran (ISA for hardware, a basis-gate transpile otherwise)
        info.update(self._circuit_facts(qaoa.ansatz, pm, seed))
        info["optimizer_evals"] = int(result.cost_function_evals or 0)
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
        return Samples(X, info, {"probability": probability})

    @staticmethod
    def _circuit_facts(ansatz: Any, pm: Any, seed: int) -> dict[str, Any]:
        circ = pm.run(ansatz)
        two = sum(1 for inst in circ.data if inst.operation.num_qubits == 2)
        return {"circuit_depth": int(circ.depth()), "two_qubit_gates": int(two), "gate_counts": dict(circ.count_ops())}

    @staticmethod
    def _p_optimal(sub: BinaryQuadraticProblem, ansatz: Any, point: np.ndarray) -> dict[str, Any]:
        """Ideal probability of the reduced problem's optimal state(s) at the final angles."""
        from .exact import count_feasible, feasible_states

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


def _bits(key: Any, n: int) -> str:
    """A measured outcome (bitstring or integer) as an n-character bitstring, qubit 0 rightmost."""
    if isinstance(key, str):
        return key.zfill(n)
    return format(int(key), f"0{n}b")


class QAOASolver(RepairComposite):
    """QAOA with classical variable fixing past ``max_qubits`` and greedy repair of infeasible measurements."""

    name = "qaoa"
    description = "Gate-model QAOA (qiskit-optimization): Dicke + XY mixer or penalty QUBO; statevector/Aer/IBM."
    capabilities = SolverCapabilities(
        honours_time_limit=False, exponential_in="variables", requires=("qiskit", "qiskit_optimization"),
        extra="qaoa", offline_options={"backend": "statevector"},
        quick_options={"max_qubits": 8, "maxiter": 15, "shots": 512},
    )

    def __init__(self) -> None:
        fixing = FixingComposite(QAOACircuits(), limit=12, limit_option="max_qubits", reduce_top=8)
        super().__init__(fixing, polish=False)


@hookimpl
def lmshrink_register_solvers(register: Any) -> None:
    register(QAOASolver)
