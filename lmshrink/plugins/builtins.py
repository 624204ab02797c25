"""The modules that register lmshrink's own plugins, through the same hooks a third party uses.

Every solver has a unique canonical name. Where a built-in solver class still declares a short name that another
problem type's solver also uses, :data:`SOLVER_NAMES` gives its canonical name; the class's own name stays an alias,
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
    "lmshrink.search.surrogate_search",
    # rank allocation for SVD compression
    "lmshrink.solvers.rank_fermigrad",
    "lmshrink.solvers.rank_milp",
    "lmshrink.solvers.uniform",
    "lmshrink.objectives.fermi_rank",
    # architectures and commands
    "lmshrink.adapters.llama",
    "lmshrink.adapters.nemotron_h",
    "lmshrink.cli.commands",
)

#: "module.Class" → canonical name, for built-in solver classes whose own ``name`` is not unique across problem
#: types (their own name becomes an alias for their problem type)
SOLVER_NAMES = {
    "lmshrink.solvers.rank_milp.RankMilpSolver": "rank-milp",
    "lmshrink.solvers.rank_fermigrad.RankFermiGradSolver": "rank-fermigrad",
    "lmshrink.solvers.uniform.UniformSolver": "rank-uniform",
}
