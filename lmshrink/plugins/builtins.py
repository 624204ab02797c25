"""lmshrink's own plugins, registered by lazy ``"module:attr"`` reference through the same hooks a third party uses.

Nothing here imports a plugin's module: an entry is imported the first time it is used, so listing names, aliases
and the command line's ``--help`` stay light. ``lmshrink plugins`` imports them all to describe them; the solver,
objective, method and adapter modules therefore import torch, and the lmshrink modules that do, inside the functions
that use them.

Every solver has a unique canonical name; a short alias may be shared by solvers of different problem types and is
looked up together with the problem type (``get_solver("milp", RankAllocationProblem)`` is ``rank-milp``).
"""

from __future__ import annotations

from typing import Any, Callable

from .hookspecs import hookimpl

#: kind → canonical name → "module:attr", in registration order
BUILTINS: dict[str, dict[str, str]] = {
    "solver": {
        # binary problems
        "exact": "lmshrink.solvers.exact:ExactSolver", "anneal": "lmshrink.solvers.anneal:AnnealSolver",
        "milp": "lmshrink.solvers.milp:MilpSolver", "tabu": "lmshrink.solvers.tabu:TabuSolver",
        "dwave": "lmshrink.solvers.dwave:DWaveSolver", "dwave-hybrid": "lmshrink.solvers.dwave:DWaveHybridSolver",
        "qaoa": "lmshrink.solvers.qaoa:QAOASolver", "fermigrad": "lmshrink.solvers.fermigrad:FermiGradSolver",
        # rank allocation for SVD compression
        "rank-fermigrad": "lmshrink.solvers.rank_fermigrad:RankFermiGradSolver",
        "rank-milp": "lmshrink.solvers.rank_milp:RankMilpSolver",
        "rank-uniform": "lmshrink.solvers.uniform:UniformSolver",
        "rank-trust-region": "lmshrink.solvers.rank_trust_region:RankTrustRegionSolver",
        # one budget over branch removal and SVD ranks
        "joint-milp": "lmshrink.solvers.joint_milp:JointMilpSolver",
    },
    "objective": {
        "fisher": "lmshrink.objectives.fisher:FisherObjective", "pairs": "lmshrink.objectives.pairs:PairsObjective",
        "fermi-rank": "lmshrink.objectives.fermi_rank:FermiRankObjective",
        "block-influence": "lmshrink.baselines.block_influence:BlockInfluenceObjective",
        "norm-ratio": "lmshrink.baselines.norm_ratio:NormRatioObjective",
    },
    "method": {
        "block-influence-iterative": "lmshrink.baselines.block_influence:IterativeBlockInfluence",
        "angular": "lmshrink.baselines.angular:AngularDistance", "sleb": "lmshrink.baselines.sleb:GreedyLossRemoval",
        "blockpruner": "lmshrink.baselines.blockpruner:BlockPrunerRemoval",
        "evopress": "lmshrink.baselines.evopress:EvoPressRemoval",
        "surrogate": "lmshrink.search.surrogate_search:SurrogateSearch",
        "surrogate-race": "lmshrink.search.surrogate_race:SurrogateRace",
    },
    "adapter": {"llama": "lmshrink.adapters.llama:LlamaAdapter",
                "nemotron_h": "lmshrink.adapters.nemotron_h:NemotronHAdapter"},
    "command": {name: f"lmshrink.cli.{name}_cmd:COMMAND" for name in (
        "prune", "solve", "plugins", "svd", "eval", "heal", "problems", "show", "sweep", "export", "compress")},
}
#: canonical name → the short names it also answers to (shared across problem types)
ALIASES: dict[str, tuple[str, ...]] = {"rank-fermigrad": ("fermigrad",), "rank-milp": ("milp",),
                                       "rank-uniform": ("uniform",), "joint-milp": ("milp",),
                                       "rank-trust-region": ("trust-region",)}


def _registers(kind: str) -> Callable[[Any], None]:
    """The hook implementation that registers the built-in plugins of ``kind`` (pluggy names it by attribute)."""

    def register_builtins(register: Any) -> None:
        for name, reference in BUILTINS[kind].items():
            register(reference, name=name, aliases=ALIASES.get(name, ()))

    return hookimpl(register_builtins)


lmshrink_register_solvers = _registers("solver")
lmshrink_register_objectives = _registers("objective")
lmshrink_register_methods = _registers("method")
lmshrink_register_adapters = _registers("adapter")
lmshrink_register_commands = _registers("command")
