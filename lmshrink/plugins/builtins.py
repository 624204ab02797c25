"""The modules that register lmshrink's own plugins, through the same hooks a third party uses.

Every solver has a unique canonical name; a short alias may be shared by solvers of different problem types and is
looked up together with the problem type (``get_solver("milp", RankAllocationProblem)`` is ``rank-milp``).
"""

BUILTIN_MODULES = (
    # binary problems: solvers, objectives, removal methods
    "lmshrink.solvers.exact",
    "lmshrink.solvers.anneal",
    "lmshrink.solvers.milp",
    "lmshrink.solvers.dwave",
    "lmshrink.solvers.qaoa",
    "lmshrink.solvers.tabu",
    "lmshrink.solvers.fermigrad",
    "lmshrink.objectives.fisher",
    "lmshrink.objectives.pairs",
    "lmshrink.baselines.block_influence",
    "lmshrink.baselines.norm_ratio",
    "lmshrink.baselines.angular",
    "lmshrink.baselines.sleb",
    "lmshrink.baselines.blockpruner",
    "lmshrink.baselines.evopress",
    "lmshrink.search.surrogate_search",
    # rank allocation for SVD compression
    "lmshrink.solvers.rank_fermigrad",
    "lmshrink.solvers.rank_milp",
    "lmshrink.solvers.uniform",
    "lmshrink.objectives.fermi_rank",
    # one budget over branch removal and SVD ranks
    "lmshrink.solvers.joint_milp",
    # architectures and commands
    "lmshrink.adapters.llama",
    "lmshrink.adapters.nemotron_h",
    "lmshrink.cli.commands",
)

