"""``dwave`` (quantum annealer) and ``dwave-hybrid`` (Leap hybrid CQM solver), through D-Wave's Ocean SDK.

``dwave`` samples the penalty BQM ``objective + P Σ_c (Σ_{i∈c} x_i − M_c)²`` on a quantum annealer:

* **sampler** ``"qpu"`` (default) is a real D-Wave QPU through ``DWaveSampler``; it needs a Leap API token
  (``DWAVE_API_TOKEN`` or the dwave config file written by ``dwave config create``). ``"mock-pegasus"`` and
  ``"mock-zephyr"`` run the same path offline on dwave-system's ``MockDWaveSampler`` with a real Pegasus
  (default P4, 264 qubits) or Zephyr (default Z(3, 4), 336 qubits) working graph; the mock anneals the
  embedded problem with dwave-samplers' simulated annealing (seeded) and reports D-Wave's sample timing.
* **embedding** ``"clique"`` (default): a block-removal problem is dense (every pair of blocks couples), so the
  logical graph is a clique. It is embedded by ``DWaveCliqueSampler``'s machinery (minorminer's busclique
  native clique embedding, cached per working graph, with ``DWaveCliqueSampler``'s scaling into the QPU's
  h and J ranges). ``"minorminer"`` uses a heuristic ``minorminer.find_embedding`` of the actual coupling graph
  instead (better for sparse problems), then ``FixedEmbeddingComposite``.
* **chain_strength** default ``None`` = Ocean's ``uniform_torque_compensation`` (√2 × the RMS coupling times
  √(mean degree)), computed on the penalty BQM; pass a number for a fixed strength in BQM units.
* **penalty** default ``None`` = :meth:`BinaryQuadraticProblem.default_penalty`, large enough that every
  single-flip minimum of the penalty form is feasible. A smaller one keeps more of the QPU's limited precision
  for the objective at the cost of more infeasible reads.

Chains are resolved by majority vote. A read that still breaks a cardinality constraint is made feasible by the
greedy step of :mod:`lmshrink.solvers.repair` (switch off the one whose removal costs least, or switch on the
zero whose addition costs least, one flip at a time, until Σ_{i∈c} x_i = M_c) and counted in
``info["num_repaired"]``; with ``polish`` every read then descends by constraint-preserving swaps. Reported:
``qpu_access_time_us``, ``qpu_anneal_time_per_sample_us`` and the rest of the QPU timing,
``chain_break_fraction`` (mean over reads), the chain lengths, ``num_repaired`` and
``best_raw_feasible_energy`` (the best read that was feasible before any repair or polish).

``dwave-hybrid`` sends :meth:`BinaryQuadraticProblem.to_cqm` to ``LeapHybridCQMSampler``, which keeps the
cardinality constraints as constraints; it needs Leap credentials too.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core import BinaryQuadraticProblem, MissingCredentialsError, Option, Samples, Solver
from ..core.errors import ProblemTooLargeError, require
from ..plugins import hookimpl
from .repair import best_feasible_energy, check_choice, repair_and_polish
from .tabu import bqm_samples

#: default working-graph shapes of the offline mock samplers (kept small so tests stay quick)
MOCK_SHAPES = {"mock-pegasus": ("pegasus", [4]), "mock-zephyr": ("zephyr", [3, 4])}


def has_dwave_credentials() -> bool:
    """Whether a Leap API token is configured (``DWAVE_API_TOKEN`` or the dwave config file)."""
    if os.environ.get("DWAVE_API_TOKEN"):
        return True
    config = require("dwave.cloud.config", "dwave", "The D-Wave solvers")
    try:
        return bool(config.load_config().get("token"))
    except Exception:  # an unreadable config file is the same as none
        return False


def _require_credentials(what: str) -> None:
    if not has_dwave_credentials():
        raise MissingCredentialsError(
            f"{what} needs D-Wave Leap credentials: set DWAVE_API_TOKEN or run 'dwave config create'."
        )


class DWaveSolver(Solver):
    """D-Wave quantum annealer (or its offline mock) on the penalty BQM, with clique embedding and repair."""

    name = "dwave"
    description = "D-Wave quantum annealer (QPU, or mock Pegasus/Zephyr offline) on the penalty BQM, repaired."
    problem_types = (BinaryQuadraticProblem,)
    options = {
        "sampler": Option("qpu", "qpu (needs Leap credentials), mock-pegasus or mock-zephyr", str),
        "embedding": Option("clique", "clique (DWaveCliqueSampler's busclique) or minorminer", str),
        "num_reads": Option(100, "anneals (reads)", int),
        "chain_strength": Option(None, "chain coupling in BQM units; default: uniform torque compensation", float),
        "penalty": Option(None, "cardinality penalty weight P; default: problem.default_penalty()", float),
        "annealing_time": Option(None, "anneal time per read in µs (QPU only; default: the QPU's, 20 µs)", float),
        "polish": Option(True, "descend by constraint-preserving swaps after repair", bool),
        "mock_shape": Option(None, "mock topology shape, e.g. '6' or '4,4' (default P4 / Z(3,4))",
                             lambda s: [int(v) for v in s.split(",")]),
        "mock_sweeps": Option(1000, "simulated-annealing sweeps per read of the mock sampler", int),
        "solver": Option(None, "QPU solver name or feature filter for DWaveSampler (default: any QPU)", str),
    }

    def sample(
        self,
        problem: BinaryQuadraticProblem,
        *,
        num_solutions: int,
        seed: int | None,
        time_limit: float | None,
        sampler: str,
        embedding: str,
        num_reads: int,
        chain_strength: float | None,
        penalty: float | None,
        annealing_time: float | None,
        polish: bool,
        mock_shape: list[int] | None,
        mock_sweeps: int,
        solver: str | None,
    ) -> Samples:
        check_choice(self.name, "sampler", sampler, ("qpu", *MOCK_SHAPES))
        check_choice(self.name, "embedding", embedding, ("clique", "minorminer"))
        require("dimod", "dwave", "The 'dwave' solver")
        system = require("dwave.system", "dwave", "The 'dwave' solver")
        seed = int(seed or 0) % (2**31)
        child = self._child(system, sampler, seed, mock_shape, mock_sweeps, solver)
        bqm = problem.to_bqm(penalty)
        n = problem.num_variables
        kwargs: dict[str, Any] = {"num_reads": int(num_reads), "answer_mode": "raw"}
        if annealing_time is not None:
            kwargs["annealing_time"] = float(annealing_time)
        if embedding == "clique":
            composite = _clique_sampler(system, child)
            emb = composite.clique(list(bqm.variables))  # empty when the clique does not fit
            if len(emb) < n:
                size = composite.largest_clique_size
                raise ProblemTooLargeError(
                    f"'dwave' can clique-embed at most {size} variables on this {sampler} graph, the problem has "
                    f"{n}; use embedding=minorminer for sparse problems, a larger mock_shape, or a smaller problem."
                )
            sampleset = composite.sample(bqm, chain_strength=chain_strength, return_embedding=True, **kwargs)
        else:
            minorminer = require("minorminer", "dwave", "The 'dwave' solver with embedding=minorminer")
            target = child.to_networkx_graph()
            emb = dict(minorminer.find_embedding(list(bqm.quadratic), target, random_seed=seed))
            if bqm.num_interactions and not emb:
                raise ProblemTooLargeError(
                    f"minorminer found no embedding of the {n}-variable problem on the {sampler} graph."
                )
            # variables without couplings are not in the source graph: give each a spare qubit
            spare = iter(sorted(set(target) - {q for chain in emb.values() for q in chain}))
            for v in bqm.variables:
                if v not in emb:
                    emb[v] = [next(spare)]
            composite = system.FixedEmbeddingComposite(child, emb)
            if "auto_scale" in child.parameters and sampler == "qpu":
                kwargs["auto_scale"] = True
            sampleset = composite.sample(bqm, chain_strength=chain_strength, return_embedding=True, **kwargs)
        sampleset.resolve()
        raw = bqm_samples(sampleset, n)
        states, counts = repair_and_polish(problem, raw, polish, num_solutions)
        timing = dict(sampleset.info.get("timing", {}))
        chains = [len(c) for c in emb.values()]
        emb_ctx = sampleset.info.get("embedding_context", {})
        cbf = np.asarray(sampleset.record.chain_break_fraction, dtype=float) if "chain_break_fraction" in \
            sampleset.record.dtype.names else np.zeros(len(raw))
        info: dict[str, Any] = {
            "sampler": sampler,
            "topology": dict(child.properties.get("topology", {})),
            "embedding": embedding,
            "num_qubits_used": int(sum(chains)),
            "max_chain_length": int(max(chains, default=0)),
            "mean_chain_length": float(np.mean(chains)) if chains else 0.0,
            "chain_strength": _plain(emb_ctx.get("chain_strength", chain_strength)),
            "chain_break_fraction": float(cbf.mean()) if len(cbf) else 0.0,
            "penalty": problem.default_penalty() if penalty is None else float(penalty),
            "num_reads": int(num_reads),
            "best_raw_feasible_energy": best_feasible_energy(problem, raw),
            "raw_feasible_fraction": float(np.mean([problem.is_feasible(x) for x in raw])),
            "qpu_access_time_us": timing.get("qpu_access_time"),
            "qpu_anneal_time_per_sample_us": timing.get("qpu_anneal_time_per_sample"),
            "qpu_timing_us": timing,
            **counts,
        }
        if sampler != "qpu":
            info["note"] = "offline MockDWaveSampler: simulated annealing on the embedded problem, mocked timing"
        return Samples(states, info)

    @staticmethod
    def _child(system: Any, sampler: str, seed: int, shape: list[int] | None, sweeps: int, solver: str | None) -> Any:
        if sampler == "qpu":
            _require_credentials("The 'dwave' solver with sampler=qpu")
            return system.DWaveSampler(**({"solver": solver} if solver else {}))
        testing = require("dwave.system.testing", "dwave", "The 'dwave' mock samplers")
        samplers = require("dwave.samplers", "dwave", "The 'dwave' mock samplers")
        topology, default_shape = MOCK_SHAPES[sampler]
        return testing.MockDWaveSampler(
            topology_type=topology,
            topology_shape=list(shape or default_shape),
            parameter_warnings=False,
            substitute_sampler=samplers.SimulatedAnnealingSampler(),
            substitute_kwargs={"seed": seed, "num_sweeps": int(sweeps)},
        )


def _plain(value: Any) -> Any:
    """A number as a Python float (for JSON reports); anything else unchanged."""
    return float(value) if isinstance(value, (int, float, np.number)) else value


def _clique_sampler(system: Any, child: Any) -> Any:
    """A ``DWaveCliqueSampler`` on an existing child sampler (the QPU's ``DWaveSampler`` or the mock).

    ``DWaveCliqueSampler.__init__`` only opens a ``DWaveSampler``; everything else (busclique embedding, scaling
    into the h and J ranges, per-qubit coupling limits, chain strength) works on any structured child.
    """

    class _OnChild(system.DWaveCliqueSampler):
        def __init__(self, child: Any) -> None:  # noqa: D401 - skip the QPU connection of the base class
            self.child = child

    return _OnChild(child)


class DWaveHybridSolver(Solver):
    """Leap's hybrid CQM solver: the cardinality constraints stay constraints (no penalty)."""

    name = "dwave-hybrid"
    description = "D-Wave Leap hybrid CQM solver (LeapHybridCQMSampler); constraints kept natively."
    problem_types = (BinaryQuadraticProblem,)
    options = {
        "hybrid_time_limit": Option(None, "seconds of hybrid run time (default: the solver's minimum)", float),
        "label": Option("lmshrink", "problem label shown in the Leap dashboard", str),
        "polish": Option(False, "descend by constraint-preserving swaps after repair", bool),
    }

    def sample(
        self,
        problem: BinaryQuadraticProblem,
        *,
        num_solutions: int,
        seed: int | None,
        time_limit: float | None,
        hybrid_time_limit: float | None,
        label: str,
        polish: bool,
    ) -> Samples:
        require("dimod", "dwave", "The 'dwave-hybrid' solver")
        sampler = self._sampler()
        cqm = problem.to_cqm()
        kwargs: dict[str, Any] = {"label": label}
        limit = hybrid_time_limit if hybrid_time_limit is not None else time_limit
        if limit is not None:
            kwargs["time_limit"] = max(float(limit), float(sampler.min_time_limit(cqm)))
        sampleset = sampler.sample_cqm(cqm, **kwargs)
        sampleset.resolve()
        raw = bqm_samples(sampleset, problem.num_variables)
        states, counts = repair_and_polish(problem, raw, polish, num_solutions)
        timing = dict(sampleset.info)
        info = {
            "run_time_us": timing.get("run_time"),
            "qpu_access_time_us": timing.get("qpu_access_time"),
            "charge_time_us": timing.get("charge_time"),
            "problem_id": timing.get("problem_id"),
            "num_reported_feasible": int(np.sum(sampleset.record.is_feasible))
            if "is_feasible" in sampleset.record.dtype.names else None,
            **counts,
        }
        return Samples(states, info)

    @staticmethod
    def _sampler() -> Any:
        system = require("dwave.system", "dwave", "The 'dwave-hybrid' solver")
        _require_credentials("The 'dwave-hybrid' solver")
        return system.LeapHybridCQMSampler()


@hookimpl
def lmshrink_register_solvers(register: Any) -> None:
    register(DWaveSolver)
    register(DWaveHybridSolver)
