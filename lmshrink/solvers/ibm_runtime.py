"""IBM Quantum through qiskit-ibm-runtime, for the ``qaoa`` solver's ``ibm`` and ``fake-ibm`` backends.

- **ISA circuits**: every circuit is transpiled to the chosen backend's instruction set architecture (its basis
  gates, coupling map and, for real devices, its calibrated qubits) by a preset pass manager, so the depth and the
  two-qubit gate count reported are those of the circuit the device runs. ``fake-ibm`` does the same offline on a
  fake device of ``qiskit_ibm_runtime.fake_provider`` (its noise model simulated by Aer); ``device`` names it by
  class (``FakeSherbrooke``) or by the real device's name (``ibm_sherbrooke``).
- **Execution modes** (``ibm_mode``): ``job`` (each circuit evaluation of the optimizer loop is its own job),
  ``session`` (a runtime Session keeps the device for the whole loop: no queueing between iterations) or
  ``batch`` (a runtime Batch). Fake devices run the same code in qiskit-ibm-runtime's local mode.
- **Device time before submitting**: :func:`estimate_device_seconds` takes the ISA circuit's duration on the
  backend's target (``QuantumCircuit.estimate_duration``) plus the backend's repetition delay, times the shots
  and the circuit executions the optimizer may make; it excludes runtime's per-job overhead. ``max_qpu_seconds``
  refuses a run whose estimate exceeds it, before anything is submitted (:class:`BudgetExceededError`).
- **Device time used**: the quantum seconds IBM reports for each job (``job.usage()``), or, offline, the same
  model applied to the circuits that ran.

IBM credentials (``QISKIT_IBM_TOKEN`` or a saved account) are checked before qiskit is imported.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import MissingCredentialsError
from ..core.errors import CredentialsRefusedError, LmshrinkError, ProblemTooLargeError, require

IBM_BACKENDS = ("fake-ibm", "ibm")
RUNTIME_MODES = ("job", "session", "batch")
DEFAULT_FAKE_DEVICE = "FakeGuadalupeV2"
IBM_CREDENTIALS = "set QISKIT_IBM_TOKEN or save an account with QiskitRuntimeService.save_account()"
#: repetition delay assumed when a backend does not report one (IBM's usual default, 250 µs)
DEFAULT_REP_DELAY_S = 250e-6


# --- credentials and the service ---------------------------------------------------------------------------------
def has_ibm_credentials() -> bool:
    """Whether IBM Quantum credentials are configured: ``QISKIT_IBM_TOKEN`` or an account saved by
    ``QiskitRuntimeService.save_account()`` (``~/.qiskit/qiskit-ibm.json``), read without importing qiskit."""
    if os.environ.get("QISKIT_IBM_TOKEN"):
        return True
    try:
        return bool(json.loads((Path.home() / ".qiskit" / "qiskit-ibm.json").read_text()))
    except (OSError, ValueError):  # no file, or an unreadable one: the same as none
        return False


def require_ibm_credentials() -> None:
    """One sentence when no IBM Quantum credentials are configured."""
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


def ibm_service() -> Any:
    """A ``QiskitRuntimeService`` from QISKIT_IBM_TOKEN (with QISKIT_IBM_INSTANCE, QISKIT_IBM_CHANNEL) or a saved
    account."""
    require_ibm_credentials()
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


# --- backends and ISA circuits -----------------------------------------------------------------------------------
def fake_device_class(device: str | None) -> str:
    """The fake_provider class for ``device``: a class name as given, ``ibm_sherbrooke`` → ``FakeSherbrooke``."""
    if not device:
        return DEFAULT_FAKE_DEVICE
    if device.startswith("ibm_"):
        return "Fake" + device[4:].capitalize()
    return device


def fake_backend(device: str | None) -> Any:
    """A fake IBM device of qiskit-ibm-runtime's fake_provider (default FakeGuadalupeV2, 16 qubits)."""
    fake_provider = require("qiskit_ibm_runtime.fake_provider", "ibm", "The 'qaoa' solver with backend=fake-ibm")
    name = fake_device_class(device)
    if not hasattr(fake_provider, name):
        raise LmshrinkError(f"qiskit_ibm_runtime.fake_provider has no {name!r} (e.g. FakeGuadalupeV2, "
                            "FakeSherbrooke, or an IBM device name such as ibm_sherbrooke).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(fake_provider, name)()


def isa_pass_manager(backend: Any, seed: int) -> Any:
    """The preset pass manager (optimization level 1) that maps circuits to ``backend``'s ISA."""
    from qiskit.transpiler import generate_preset_pass_manager

    return generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=seed)


def isa_facts(circuit: Any) -> dict[str, Any]:
    """Depth, two-qubit gate count and gate counts of a transpiled circuit."""
    two = sum(1 for inst in circuit.data if inst.operation.num_qubits == 2)
    return {"circuit_depth": int(circuit.depth()), "two_qubit_gates": int(two),
            "gate_counts": {str(k): int(v) for k, v in circuit.count_ops().items()}}


def rep_delay_seconds(backend: Any) -> float:
    """The backend's default repetition delay between shots (seconds)."""
    try:
        delay = backend.configuration().default_rep_delay
    except (AttributeError, TypeError):
        delay = None
    return float(delay) if delay else DEFAULT_REP_DELAY_S


def estimate_device_seconds(isa_circuit: Any, backend: Any, shots: int, executions: int) -> dict[str, Any]:
    """Device time of running ``isa_circuit`` ``executions`` times with ``shots`` shots each:
    executions × shots × (circuit duration on the backend's target + repetition delay); runtime's per-job
    overhead is not included."""
    bound = isa_circuit.assign_parameters([0.0] * isa_circuit.num_parameters) if isa_circuit.num_parameters \
        else isa_circuit
    duration = float(bound.estimate_duration(backend.target, unit="s"))
    delay = rep_delay_seconds(backend)
    return {"seconds": executions * shots * (duration + delay), "circuit_duration_s": duration,
            "rep_delay_s": delay, "shots": int(shots), "executions": int(executions),
            "model": "executions × shots × (ISA circuit duration + repetition delay), without per-job overhead"}


# --- execution ---------------------------------------------------------------------------------------------------
@dataclass
class RuntimeTarget:
    """What a QAOA run on IBM runtime uses: the sampler (in its execution mode), the ISA pass manager, the backend
    whose target the circuits are transpiled to, and the jobs it ran."""

    sampler: Any
    pass_manager: Any
    backend: Any
    device: str
    mode: str
    fake: bool
    shots: int
    jobs: list[Any] = field(default_factory=list)

    def estimate(self, circuit: Any, executions: int) -> dict[str, Any]:
        """The device time of ``executions`` runs of ``circuit`` (transpiled to the ISA here), before submitting."""
        return estimate_device_seconds(self.pass_manager.run(circuit), self.backend, self.shots, executions)

    def used_seconds(self, circuit: Any, executions: int) -> dict[str, Any]:
        """``qpu_seconds`` the run used: IBM's reported quantum seconds of its jobs, or offline the estimate for
        the ``executions`` that ran; with ``qpu_seconds_source`` and ``num_jobs``."""
        if self.fake:
            seconds, source = self.estimate(circuit, executions)["seconds"], "timing model (offline device)"
        else:
            seconds = sum(float(ibm_call("reading job usage", job.usage) or 0.0) for job in self.jobs)
            source = "reported by IBM Quantum (job usage)"
        return {"qpu_seconds": seconds, "qpu_seconds_source": source, "num_jobs": len(self.jobs)}


def _tracking(sampler: Any, jobs: list[Any]) -> Any:
    """``sampler`` with every job it runs appended to ``jobs`` (for the usage report)."""
    from qiskit.primitives import BaseSamplerV2

    class Tracking(BaseSamplerV2):
        def run(self, pubs: Any, *, shots: int | None = None) -> Any:
            job = sampler.run(pubs, shots=shots)
            jobs.append(job)
            return job

    return Tracking()


@contextmanager
def open_runtime(backend: str, num_qubits: int, shots: int, seed: int, device: str | None,
                 mode: str = "job") -> Iterator[RuntimeTarget]:
    """The sampler of a run on ``backend`` (``ibm`` or ``fake-ibm``) in the execution ``mode``, open for the
    duration of the block (a session or batch is closed on exit, also on error).

    Without qiskit-ibm-runtime, ``fake-ibm`` runs on qiskit's ``GenericBackendV2`` with its generated noise
    (qiskit-aer's ``SamplerV2``, job mode).
    """
    if mode not in RUNTIME_MODES:
        raise LmshrinkError(f"ibm_mode must be one of {', '.join(RUNTIME_MODES)}, not {mode!r}.")
    if backend == "ibm":
        require_ibm_credentials()
    else:
        try:
            import qiskit_ibm_runtime  # noqa: F401
        except ImportError:
            yield _generic_fake(num_qubits, shots, seed)
            return
    runtime = require("qiskit_ibm_runtime", "ibm", f"The 'qaoa' solver with backend={backend}")
    if backend == "fake-ibm":
        aer = require("qiskit_aer", "qaoa", "The 'qaoa' solver with backend=fake-ibm")
        hw = fake_backend(device)
        if hw.num_qubits < num_qubits:
            raise ProblemTooLargeError(f"{type(hw).__name__} has {hw.num_qubits} qubits, the circuit needs "
                                       f"{num_qubits}.")
        # runtime's local mode would rebuild the device's noise model for every job; build it once
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy sparse-efficiency chatter while building the noise model
            run_on = aer.AerSimulator.from_backend(hw, seed_simulator=seed)
        description = f"{type(hw).__name__} (noisy, offline, runtime SamplerV2 on Aer, {mode} mode)"
    else:
        service = ibm_service()
        if device:
            hw = ibm_call("choosing a backend", service.backend, device)
        else:
            hw = ibm_call("choosing a backend", service.least_busy, operational=True, simulator=False,
                          min_num_qubits=num_qubits)
        run_on = hw
        description = f"IBM {hw.name} ({mode} mode)"
    holder = None
    if mode != "job":
        opening = {"session": runtime.Session, "batch": runtime.Batch}[mode]
        holder = ibm_call(f"opening a {mode}", opening, backend=run_on)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # SamplerV2 is deprecated from 0.50 on
            sampler = runtime.SamplerV2(mode=holder if holder is not None else run_on)
        sampler.options.default_shots = shots
        target = RuntimeTarget(sampler, isa_pass_manager(hw, seed), hw, description, mode, backend == "fake-ibm",
                               shots)
        target.sampler = _tracking(sampler, target.jobs)
        yield target
    finally:
        if holder is not None:
            holder.close()


def _generic_fake(num_qubits: int, shots: int, seed: int) -> RuntimeTarget:
    """``fake-ibm`` without qiskit-ibm-runtime: ``GenericBackendV2`` and its noise model on qiskit-aer."""
    require("qiskit_aer", "qaoa", "The 'qaoa' solver with backend=fake-ibm")
    from qiskit.providers.fake_provider import GenericBackendV2
    from qiskit_aer.noise import NoiseModel
    from qiskit_aer.primitives import SamplerV2 as AerSampler

    generic = GenericBackendV2(num_qubits=max(num_qubits, 5), seed=seed, noise_info=True)
    noise = NoiseModel.from_backend(generic)
    sampler = AerSampler(default_shots=shots, seed=seed, options={"backend_options": {"noise_model": noise}})
    return RuntimeTarget(sampler, isa_pass_manager(generic, seed), generic,
                         f"GenericBackendV2({generic.num_qubits} qubits) + Aer noise (no qiskit-ibm-runtime)",
                         "job", True, shots)


__all__ = [
    "IBM_BACKENDS", "RUNTIME_MODES", "RuntimeTarget", "estimate_device_seconds", "fake_backend",
    "fake_device_class", "has_ibm_credentials", "ibm_call", "ibm_service", "isa_facts", "isa_pass_manager",
    "open_runtime", "rep_delay_seconds", "require_ibm_credentials",
]
