"""``dwave`` (quantum annealer) and ``dwave-hybrid`` (Leap hybrid CQM solver), through D-Wave's Ocean SDK.

``dwave`` samples the penalty BQM ``objective + P Σ_c (Σ_{i∈c} x_i − M_c)²`` on a quantum annealer:

* **sampler** ``"qpu"`` (default) is a real D-Wave QPU through ``DWaveSampler``; it needs a Leap API token
  (``DWAVE_API_TOKEN`` or the dwave config file written by ``dwave config create``). ``"mock-pegasus"`` and
  ``"mock-zephyr"`` run the same path offline on dwave-system's ``MockDWaveSampler`` with a real Pegasus
  (default P4, 264 qubits) or Zephyr (default Z(3, 4), 336 qubits) working graph; the mock anneals the
  embedded problem with dwave-samplers' simulated annealing (seeded); its QPU timing is D-Wave's timing model
  (dwave-cloud-client's ``estimate_qpu_access_time``) on Advantage4.1 timing data for the run's qubits, reads and
  anneal time.
* **embedding** ``"clique"`` (default): a block-removal problem is dense (every pair of blocks couples), so the
  logical graph is a clique. It is embedded by ``DWaveCliqueSampler``'s machinery (minorminer's busclique
  native clique embedding, cached per working graph, with ``DWaveCliqueSampler``'s scaling into the QPU's
  h and J ranges). ``"minorminer"`` uses a heuristic ``minorminer.find_embedding`` of the actual coupling graph
  instead (better for sparse problems), then ``FixedEmbeddingComposite``. A path to an embedding file (the
  ``embedding.json`` of a record, :mod:`lmshrink.experiments.record`) reuses its chains, so repeated runs use the
  same qubits.
* **annealing_time** or **anneal_schedule** (flat t,s pairs of a forward anneal), passed to the QPU.
* **max_qpu_seconds**: the QPU access time of the run is estimated by D-Wave's timing model on the sampler's own
  ``problem_timing_data`` after embedding, before sampling; a run over the limit is refused then
  (:class:`~lmshrink.core.budget.BudgetExceededError`), which is how sweeps keep to a budget.
* **chain_strength** default ``None`` = Ocean's ``uniform_torque_compensation`` (√2 × the RMS coupling times
  √(mean degree)), computed on the penalty BQM; pass a number for a fixed strength in BQM units.
* **penalty** default ``None``: chosen from the problem by :func:`~lmshrink.solvers.composites.choose_penalty`
  (the smaller of the largest single-flip change and a greedy feasible energy minus a lower bound), reported as
  ``penalty`` and ``penalty_rule``. A smaller one keeps more of the QPU's limited precision for the objective at
  the cost of more infeasible reads.

The solver is the stack ``RepairComposite(PenaltyComposite(DWaveAnnealer()))``. Chains are resolved by majority
vote. A read that still breaks a cardinality constraint is made feasible by the greedy repair (switch off the one
whose removal costs least, or switch on the zero whose addition costs least, one flip at a time, until
Σ_{i∈c} x_i = M_c) and counted in ``info["num_repaired"]``; with ``polish`` every read then descends by
constraint-preserving swaps. The reads themselves (their feasible fraction and best feasible energy, before any
repair or polish) are summarised in the result's ``raw``. A weighted band ``L ≤ Σ w·x ≤ U`` enters the BQM in the
slack-penalty form (:mod:`lmshrink.solvers.slack`), and the repair brings each read into the band. Reported too: ``qpu_access_time_us``,
``qpu_anneal_time_per_sample_us`` and the rest of the QPU timing, ``qpu_time_estimate`` (before sampling),
``qpu_seconds``, ``annealing_time_us``, ``chain_break_fraction`` (mean over reads), the chain lengths, and ``mock``
(true when the offline mock ran, with a ``note`` saying so). A recorded run also keeps the raw sample set, the
embedding and the penalty BQM.

``dwave-hybrid`` sends :meth:`BinaryQuadraticProblem.to_cqm` to ``LeapHybridCQMSampler``, which keeps the
cardinality constraints and weighted bands (parameter budgets) as constraints; it needs Leap credentials too (``sampler="mock"`` runs dimod's exhaustive
``ExactCQMSolver`` offline instead, for tests, on at most 16 variables).

Credentials are checked before any Ocean module is imported, so a missing token is said at once; a token the
service refuses, or a service that cannot be reached, is said in one sentence too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from ..core import BinaryQuadraticProblem, MissingCredentialsError, Samples, Solver, SolverCapabilities, option
from ..core.budget import check_budget
from ..core.capture import offer
from ..core.errors import CredentialsRefusedError, LmshrinkError, ProblemTooLargeError, require
from ..report import read_json
from .composites import PenaltyComposite, RepairComposite, RepairedSolver
from .tabu import bqm_samples

#: default working-graph shapes of the offline mock samplers (kept small so tests stay quick), and the larger
#: ones tried, in order, when the problem's clique does not fit
MOCK_SHAPES = {"mock-pegasus": ("pegasus", [[4], [8], [16]]), "mock-zephyr": ("zephyr", [[3, 4], [6, 4], [12, 4]])}
LEAP_CREDENTIALS = "set DWAVE_API_TOKEN or run 'dwave config create'"
#: dwave-hybrid's offline mock enumerates every state
HYBRID_MOCK_MAX = 16


def has_dwave_credentials() -> bool:
    """Whether a Leap API token is configured (``DWAVE_API_TOKEN`` or the dwave config file).

    Reads the config file with dwave-cloud-client's light config module only: no Ocean sampler is imported.
    """
    if os.environ.get("DWAVE_API_TOKEN"):
        return True
    config = require("dwave.cloud.config", "dwave", "The D-Wave solvers")
    try:
        return bool(config.load_config().get("token"))
    except Exception:  # an unreadable config file is the same as none
        return False


def _require_credentials(what: str) -> None:
    if not has_dwave_credentials():
        raise MissingCredentialsError(f"{what} needs D-Wave Leap credentials: {LEAP_CREDENTIALS}.")


def leap_call(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, with a refused token or an unreachable service said in one sentence."""
    exceptions = require("dwave.cloud.exceptions", "dwave", "The D-Wave solvers")
    try:
        return call(*args, **kwargs)
    except exceptions.SolverAuthenticationError as exc:
        raise CredentialsRefusedError(
            f"The token was refused by D-Wave Leap ({what}): check DWAVE_API_TOKEN or 'dwave config create' "
            f"({type(exc).__name__})."
        ) from exc
    except (exceptions.RequestTimeout, exceptions.PollingTimeout, ConnectionError, OSError) as exc:
        raise CredentialsRefusedError(
            f"D-Wave Leap could not be reached ({what}): check the network, the token and the endpoint "
            f"({type(exc).__name__})."
        ) from exc


@dataclass(frozen=True)
class DWaveOptions:
    sampler: Literal["qpu", "mock-pegasus", "mock-zephyr"] = option(
        "qpu", "qpu (needs Leap credentials), mock-pegasus or mock-zephyr")
    embedding: str = option("clique", "clique (DWaveCliqueSampler's busclique), minorminer, or an embedding file "
                                      "(embedding.json of a record) to reuse its chains")
    num_reads: int = option(100, "anneals (reads)", minimum=1)
    chain_strength: float | None = option(None, "chain coupling in BQM units; default: uniform torque compensation",
                                          minimum=0.0)
    annealing_time: float | None = option(None, "anneal time per read in µs (default: the QPU's, 20 µs)",
                                          minimum=0.0)
    anneal_schedule: list[float] | None = option(None, "piecewise-linear schedule as flat t,s pairs in µs, e.g. "
                                                       "'0,0,10,0.4,30,0.4,40,1' (instead of annealing_time)")
    mock_shape: list[int] | None = option(None, "mock topology shape, e.g. '6' or '4,4' (default: P4 / Z(3,4), or "
                                                "P8, P16 / Z(6,4), Z(12,4) when the problem's clique needs them)")
    mock_sweeps: int = option(1000, "simulated-annealing sweeps per read of the mock sampler", minimum=1)
    solver: str | None = option(None, "QPU solver name or feature filter for DWaveSampler (default: any QPU)")
    max_qpu_seconds: float | None = option(None, "refuse, before submitting, a run whose estimated QPU access time "
                                                 "exceeds this", minimum=0.0)


_DWAVE_CAPABILITIES = SolverCapabilities(
    honours_time_limit=False, needs_credentials=f"D-Wave Leap: {LEAP_CREDENTIALS}", needs_network=True,
    requires=("dimod", "dwave.system", "dwave.samplers", "minorminer"), extra="dwave",
    budget_options={"reads": "num_reads"}, offline_options={"sampler": "mock-pegasus"},
    quick_options={"num_reads": 40, "mock_sweeps": 300},
    constraint_kinds=("cardinality", "weighted"),  # bands through the slack-penalty form
)
EMBEDDING_METHODS = ("clique", "minorminer")
EMBEDDING_FORMAT = "lmshrink.embedding/1"


# --- embeddings saved with a record -----------------------------------------------------------------------------------
def embedding_document(chains: Mapping[Any, Any], variables: list[str], sampler: str, topology: Mapping[str, Any],
                       method: str) -> dict[str, Any]:
    """The JSON form of an embedding: one chain of qubits per problem variable (by index), and the working graph
    it was found on."""
    return {"format": EMBEDDING_FORMAT, "method": method, "sampler": sampler, "topology": dict(topology),
            "variables": list(variables),
            "chains": {str(int(v)): [int(q) for q in chain] for v, chain in sorted(chains.items())}}


def read_embedding(path: str, num_variables: int) -> dict[str, Any]:
    """An embedding file written with a record, checked against the problem (one sentence when it does not fit)."""
    if not Path(path).is_file():
        raise LmshrinkError(f"embedding={path!r} is neither {' nor '.join(EMBEDDING_METHODS)} nor an embedding file.")
    data = read_json(path, "embedding file")
    if not isinstance(data, dict) or data.get("format") != EMBEDDING_FORMAT or not isinstance(data.get("chains"), dict):
        raise LmshrinkError(f"{path!r} is not an embedding file ({EMBEDDING_FORMAT}, the embedding.json of a record).")
    try:
        chains = {int(v): [int(q) for q in chain] for v, chain in data["chains"].items()}
    except (TypeError, ValueError):
        raise LmshrinkError(f"{path!r} has a chain that is not a list of qubit numbers.") from None
    if sorted(chains) != list(range(num_variables)) or any(not c for c in chains.values()):
        raise LmshrinkError(f"{path!r} embeds {len(chains)} variables, the problem has {num_variables}; an "
                            "embedding is reusable only for a problem of the same size.")
    return {**data, "chains": chains}


def check_schedule(schedule: list[float] | None, annealing_time: float | None) -> list[list[float]] | None:
    """``anneal_schedule`` as [t, s] pairs: a forward anneal from s = 0 to s = 1 with non-decreasing times."""
    if schedule is None:
        return None
    if annealing_time is not None:
        raise LmshrinkError("Give annealing_time or anneal_schedule, not both (the schedule's last time is the "
                            "anneal time).")
    pairs = [[float(schedule[k]), float(schedule[k + 1])] for k in range(0, len(schedule) - 1, 2)]
    times = [t for t, _ in pairs]
    if len(schedule) % 2 or len(pairs) < 2 or pairs[0] != [0.0, 0.0] or pairs[-1][1] != 1.0 \
            or any(b < a for a, b in zip(times, times[1:])) or any(not 0 <= s <= 1 for _, s in pairs):
        raise LmshrinkError(f"anneal_schedule {schedule} is not a forward schedule: flat t,s pairs starting at 0,0 "
                            "and ending at s = 1, with non-decreasing times, e.g. 0,0,10,0.4,30,0.4,40,1.")
    return pairs


# --- QPU timing ---------------------------------------------------------------------------------------------------------
def mock_timing_data() -> dict[str, Any]:
    """The ``problem_timing_data`` the mock samplers report: dwave-cloud-client's Advantage4.1 figures (2022)."""
    from dwave.cloud.testing.mocks import qpu_problem_timing_data

    return qpu_problem_timing_data("advantage")


def estimate_access_time_us(properties: Mapping[str, Any], num_qubits: int, num_reads: int,
                            annealing_time: float | None = None,
                            anneal_schedule: list[list[float]] | None = None) -> float:
    """QPU access time in µs by D-Wave's timing model (dwave-cloud-client's ``estimate_qpu_access_time``) from a
    sampler's ``problem_timing_data``: programming + reads × (anneal + readout + delay)."""
    from dwave.cloud.solver import StructuredSolver

    return float(StructuredSolver.estimate_qpu_access_time(
        SimpleNamespace(properties=properties), int(num_qubits), num_reads=int(num_reads),
        annealing_time=annealing_time, anneal_schedule=anneal_schedule))


def modelled_timing(properties: Mapping[str, Any], num_qubits: int, num_reads: int, annealing_time: float | None,
                    anneal_schedule: list[list[float]] | None) -> dict[str, float]:
    """The timing a mock run reports: the timing model's access time, split into programming and sampling."""
    total = estimate_access_time_us(properties, num_qubits, num_reads, annealing_time, anneal_schedule)
    programming = estimate_access_time_us(properties, num_qubits, 0, annealing_time, anneal_schedule)
    anneal = annealing_time if annealing_time is not None else (
        anneal_schedule[-1][0] if anneal_schedule else properties["problem_timing_data"]["default_annealing_time"])
    return {"qpu_access_time": total, "qpu_programming_time": programming, "qpu_sampling_time": total - programming,
            "qpu_anneal_time_per_sample": float(anneal),
            "qpu_access_time_per_sample": (total - programming) / max(int(num_reads), 1)}


class DWaveAnnealer(Solver):
    """A D-Wave QPU (or its offline mock) sampling a problem's BQM through a clique or minorminer embedding, or
    the chains of a saved embedding; raw reads only (no penalty, no repair: see :class:`DWaveSolver`)."""

    name = "dwave-annealer"
    description = "D-Wave quantum annealer (or mock) on the problem's BQM; raw reads."
    options = DWaveOptions
    capabilities = _DWAVE_CAPABILITIES

    def preflight(self, problem: BinaryQuadraticProblem, options: Mapping[str, Any]) -> None:
        if options.get("sampler") == "qpu":  # before any Ocean import: a missing token is said at once
            _require_credentials("The 'dwave' solver with sampler=qpu")
        check_schedule(options.get("anneal_schedule"), options.get("annealing_time"))
        if options.get("embedding") not in EMBEDDING_METHODS:
            read_embedding(options["embedding"], problem.num_variables)

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: DWaveOptions) -> Samples:
        o = options
        if o.sampler == "qpu":  # before any Ocean import: a missing token is said at once
            _require_credentials("The 'dwave' solver with sampler=qpu")
        schedule = check_schedule(o.anneal_schedule, o.annealing_time)
        require("dimod", "dwave", "The 'dwave' solver")
        system = require("dwave.system", "dwave", "The 'dwave' solver")
        seed = int(seed or 0) % (2**31)
        bqm = problem.to_bqm()
        child, composite, emb = self.embed(system, o, seed, bqm)
        estimate = self._estimate(child, o, schedule, sum(len(c) for c in emb.values()))
        check_budget(estimate["seconds"], o.max_qpu_seconds, f"Sampling on the {o.sampler} sampler")
        kwargs: dict[str, Any] = {"num_reads": o.num_reads, "answer_mode": "raw"}
        if o.annealing_time is not None:
            kwargs["annealing_time"] = o.annealing_time
        if schedule is not None:
            kwargs["anneal_schedule"] = schedule
        if o.embedding != "clique" and o.sampler == "qpu" and "auto_scale" in child.parameters:
            kwargs["auto_scale"] = True
        sampleset = leap_call("sampling", composite.sample, bqm, chain_strength=o.chain_strength,
                              return_embedding=True, **kwargs)
        sampleset.resolve()
        raw = bqm_samples(sampleset, problem.num_variables)
        chains = [len(c) for c in emb.values()]
        if o.sampler == "qpu":
            timing = dict(sampleset.info.get("timing", {}))
        else:  # the mock reports fixed figures: report the timing model's for this run instead
            timing = modelled_timing(child.properties, sum(chains), o.num_reads, o.annealing_time, schedule)
        emb_ctx = sampleset.info.get("embedding_context", {})
        cbf = np.asarray(sampleset.record.chain_break_fraction, dtype=float) if "chain_break_fraction" in \
            sampleset.record.dtype.names else np.zeros(len(raw))
        default_anneal = child.properties.get("default_annealing_time",
                                              (child.properties.get("problem_timing_data") or {})
                                              .get("default_annealing_time"))
        topology = dict(child.properties.get("topology", {}))
        info: dict[str, Any] = {
            "sampler": o.sampler,
            "mock": o.sampler != "qpu",
            "topology": topology,
            "embedding": o.embedding if o.embedding in EMBEDDING_METHODS else "file",
            "num_qubits_used": int(sum(chains)),
            "max_chain_length": int(max(chains, default=0)),
            "mean_chain_length": float(np.mean(chains)) if chains else 0.0,
            "chain_strength": _plain(emb_ctx.get("chain_strength", o.chain_strength)),
            "chain_break_fraction": float(cbf.mean()) if len(cbf) else 0.0,
            "num_reads": o.num_reads,
            "annealing_time_us": _plain(schedule[-1][0] if schedule else o.annealing_time or default_anneal),
            "anneal_schedule": schedule,
            "qpu_access_time_us": timing.get("qpu_access_time"),
            "qpu_programming_time_us": timing.get("qpu_programming_time"),
            "qpu_anneal_time_per_sample_us": timing.get("qpu_anneal_time_per_sample"),
            "qpu_timing_us": timing,
            "qpu_time_estimate": estimate,
            "qpu_seconds": None if timing.get("qpu_access_time") is None else timing["qpu_access_time"] / 1e6,
            "qpu_seconds_source": "reported by the QPU" if o.sampler == "qpu" else "timing model (mock)",
        }
        if o.embedding not in EMBEDDING_METHODS:
            info["embedding_file"] = o.embedding
        if o.sampler != "qpu":
            info["note"] = ("offline MockDWaveSampler: simulated annealing on the embedded problem; QPU timing from "
                            "D-Wave's timing model with Advantage4.1 figures")
        offer("embedding", lambda: embedding_document(emb, problem.variables, o.sampler, topology, info["embedding"]))
        offer("sampleset", lambda: _serializable(sampleset))
        offer("bqm", lambda: bqm.to_serializable())
        return Samples(raw, info)

    def embed(self, system: Any, o: DWaveOptions, seed: int, bqm: Any) -> tuple[Any, Any, dict]:
        """(child sampler, composite that samples through the embedding, embedding variable → chain)."""
        n = len(bqm.variables)
        if o.embedding == "clique":
            return self._clique_child(system, o, seed, list(bqm.variables))
        if o.embedding == "minorminer":
            child = self._child(system, o.sampler, seed, o.mock_shape, o.mock_sweeps, o.solver)
            minorminer = require("minorminer", "dwave", "The 'dwave' solver with embedding=minorminer")
            target = child.to_networkx_graph()
            emb = dict(minorminer.find_embedding(list(bqm.quadratic), target, random_seed=seed))
            if bqm.num_interactions and not emb:
                raise ProblemTooLargeError(
                    f"minorminer found no embedding of the {n}-variable problem on the {o.sampler} graph."
                )
            # variables without couplings are not in the source graph: give each a spare qubit
            spare = iter(sorted(set(target) - {q for chain in emb.values() for q in chain}))
            for v in bqm.variables:
                if v not in emb:
                    emb[v] = [next(spare)]
        else:
            saved = read_embedding(o.embedding, n)
            shape = o.mock_shape or saved.get("topology", {}).get("shape")
            child = self._child(system, o.sampler, seed, shape, o.mock_sweeps, o.solver)
            emb = saved["chains"]
            kinds = (saved.get("topology", {}).get("type"), child.properties.get("topology", {}).get("type"))
            if None not in kinds and kinds[0] != kinds[1]:
                raise LmshrinkError(f"The embedding in {o.embedding!r} was found on a {kinds[0]} graph; the "
                                    f"{o.sampler} sampler's graph is {kinds[1]}.")
            missing = sorted({q for chain in emb.values() for q in chain} - set(child.nodelist))
            if missing:
                raise LmshrinkError(f"The embedding in {o.embedding!r} uses qubit {missing[0]}, which the {o.sampler} "
                                    f"working graph ({dict(child.properties.get('topology', {}))}) lacks.")
        return child, system.FixedEmbeddingComposite(child, emb), emb

    def estimate_qpu_seconds(self, problem: BinaryQuadraticProblem, values: Mapping[str, Any],
                             seed: int | None = None) -> dict[str, Any]:
        """The QPU access time a run with these (validated) options would take, by D-Wave's timing model on the
        sampler's own timing data, before anything is submitted: ``{"seconds", "num_qubits", "model"}``."""
        o = DWaveOptions(**values)
        schedule = check_schedule(o.anneal_schedule, o.annealing_time)
        system = require("dwave.system", "dwave", "The 'dwave' solver")
        child, _, emb = self.embed(system, o, int(seed or 0) % (2**31), problem.to_bqm())
        return self._estimate(child, o, schedule, sum(len(c) for c in emb.values()))

    @staticmethod
    def _estimate(child: Any, o: DWaveOptions, schedule: list[list[float]] | None, qubits: int) -> dict[str, Any]:
        if o.sampler == "qpu":
            us = leap_call("estimating QPU time", child.solver.estimate_qpu_access_time, qubits,
                           num_reads=o.num_reads, annealing_time=o.annealing_time, anneal_schedule=schedule)
            model = f"D-Wave's timing model with {child.solver.name}'s problem_timing_data"
        else:
            us = estimate_access_time_us(child.properties, qubits, o.num_reads, o.annealing_time, schedule)
            model = "D-Wave's timing model with Advantage4.1 figures (mock)"
        return {"seconds": float(us) / 1e6, "num_qubits": int(qubits), "num_reads": o.num_reads, "model": model}

    def _clique_child(self, system: Any, o: DWaveOptions, seed: int, variables: list[Any]) -> tuple[Any, Any, dict]:
        """The child sampler, its clique composite and the clique embedding; a mock without ``mock_shape`` grows
        until the clique fits."""
        shapes = [o.mock_shape] if o.sampler == "qpu" or o.mock_shape else MOCK_SHAPES[o.sampler][1]
        n = len(variables)
        for shape in shapes:
            child = self._child(system, o.sampler, seed, shape, o.mock_sweeps, o.solver)
            composite = _clique_sampler(system, child)
            emb = composite.clique(variables)  # empty when the clique does not fit
            if len(emb) >= n:
                return child, composite, emb
        size = composite.largest_clique_size
        raise ProblemTooLargeError(
            f"'dwave' can clique-embed at most {size} variables on this {o.sampler} graph, the problem has "
            f"{n}; use embedding=minorminer for sparse problems, a larger mock_shape, or a smaller problem."
        )

    @staticmethod
    def _child(system: Any, sampler: str, seed: int, shape: list[int] | None, sweeps: int, solver: str | None) -> Any:
        if sampler == "qpu":
            return leap_call("connecting", system.DWaveSampler, **({"solver": solver} if solver else {}))
        testing = require("dwave.system.testing", "dwave", "The 'dwave' mock samplers")
        samplers = require("dwave.samplers", "dwave", "The 'dwave' mock samplers")
        topology, default_shapes = MOCK_SHAPES[sampler]
        return testing.MockDWaveSampler(
            topology_type=topology,
            topology_shape=list(shape or default_shapes[0]),
            parameter_warnings=False,
            substitute_sampler=samplers.SimulatedAnnealingSampler(),
            substitute_kwargs={"seed": seed, "num_sweeps": int(sweeps)},
            properties={"problem_timing_data": mock_timing_data()},
        )


class DWaveSolver(RepairComposite):
    """D-Wave quantum annealer (or its offline mock) on the penalty BQM, with clique embedding and repair."""

    name = "dwave"
    description = "D-Wave quantum annealer (QPU, or mock Pegasus/Zephyr offline) on the penalty BQM, repaired."
    capabilities = _DWAVE_CAPABILITIES

    def __init__(self) -> None:
        self.annealer = DWaveAnnealer()
        super().__init__(PenaltyComposite(self.annealer), polish=True)

    def estimate_qpu_seconds(self, problem: BinaryQuadraticProblem, options: Mapping[str, Any],
                             seed: int | None = None) -> dict[str, Any]:
        """The QPU access time a run with ``options`` would take (see :meth:`DWaveAnnealer.estimate_qpu_seconds`)."""
        values = self.validate(options)
        self.preflight(problem, values)
        return self.annealer.estimate_qpu_seconds(problem, {k: v for k, v in values.items()
                                                            if k in self.annealer.options}, seed)


def _serializable(sampleset: Any) -> dict[str, Any]:
    """The sample set in dimod's JSON form, its info cut down to plain data (timing, problem id)."""
    copy = sampleset.copy()
    copy.info.clear()
    copy.info.update({k: sampleset.info[k] for k in ("timing", "problem_id", "problem_label") if k in sampleset.info})
    return copy.to_serializable()


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


@dataclass(frozen=True)
class HybridOptions:
    sampler: Literal["leap", "mock"] = option("leap", "leap (LeapHybridCQMSampler, needs credentials) or mock "
                                                      f"(dimod's exhaustive ExactCQMSolver, offline, ≤ {HYBRID_MOCK_MAX} "
                                                      "variables)")
    hybrid_time_limit: float | None = option(None, "seconds of hybrid run time (default: the solver's minimum)",
                                             minimum=0.0)
    label: str = option("lmshrink", "problem label shown in the Leap dashboard")


class HybridCQM(Solver):
    """Leap's hybrid CQM solver (or its offline stand-in) on the constrained problem; raw samples."""

    name = "dwave-hybrid-cqm"
    description = "D-Wave Leap hybrid CQM solver; raw samples."
    options = HybridOptions
    capabilities = SolverCapabilities(
        needs_credentials=f"D-Wave Leap: {LEAP_CREDENTIALS}", needs_network=True, requires=("dimod", "dwave.system"),
        extra="dwave", offline_options={"sampler": "mock"},
        constraint_kinds=("cardinality", "weighted"),  # to_cqm() keeps bands as linear constraints
    )

    def preflight(self, problem: BinaryQuadraticProblem, options: Mapping[str, Any]) -> None:
        if options.get("sampler") == "leap":
            _require_credentials("The 'dwave-hybrid' solver")

    def sample(self, problem: BinaryQuadraticProblem, *, num_solutions: int, seed: int | None,
               time_limit: float | None, options: HybridOptions) -> Samples:
        if options.sampler == "leap":
            _require_credentials("The 'dwave-hybrid' solver")
        dimod = require("dimod", "dwave", "The 'dwave-hybrid' solver")
        cqm = problem.to_cqm()
        if options.sampler == "mock":
            if problem.num_variables > HYBRID_MOCK_MAX:
                raise ProblemTooLargeError(
                    f"'dwave-hybrid' with sampler=mock enumerates all 2^N states and takes at most "
                    f"{HYBRID_MOCK_MAX} variables, the problem has {problem.num_variables}."
                )
            # like Leap, return a few feasible samples, lowest energy first
            every = dimod.ExactCQMSolver().sample_cqm(cqm).filter(lambda d: d.is_feasible)
            sampleset = every.truncate(max(num_solutions, 10))
            sampleset.info.update({"run_time": 0, "qpu_access_time": 0, "problem_id": "offline mock"})
        else:
            sampler = self._sampler()
            kwargs: dict[str, Any] = {"label": options.label}
            limit = options.hybrid_time_limit if options.hybrid_time_limit is not None else time_limit
            if limit is not None:
                kwargs["time_limit"] = max(float(limit), float(sampler.min_time_limit(cqm)))
            sampleset = leap_call("sampling", sampler.sample_cqm, cqm, **kwargs)
        sampleset.resolve()
        raw = bqm_samples(sampleset, problem.num_variables)
        timing = dict(sampleset.info)
        info = {
            "sampler": options.sampler,
            "mock": options.sampler == "mock",
            "run_time_us": timing.get("run_time"),
            "qpu_access_time_us": timing.get("qpu_access_time"),
            "charge_time_us": timing.get("charge_time"),
            "problem_id": timing.get("problem_id"),
            "num_reported_feasible": int(np.sum(sampleset.record.is_feasible))
            if "is_feasible" in sampleset.record.dtype.names else None,
        }
        if options.sampler == "mock":
            info["note"] = "offline stand-in: dimod's ExactCQMSolver enumerated every state, no Leap call"
        return Samples(raw, info)

    @staticmethod
    def _sampler() -> Any:
        system = require("dwave.system", "dwave", "The 'dwave-hybrid' solver")
        return leap_call("connecting", system.LeapHybridCQMSampler)


class DWaveHybridSolver(RepairedSolver):
    """Leap's hybrid CQM solver: the cardinality constraints stay constraints (no penalty)."""

    name = "dwave-hybrid"
    description = "D-Wave Leap hybrid CQM solver (LeapHybridCQMSampler); constraints kept natively."
    sampler = HybridCQM
    polishes = False

