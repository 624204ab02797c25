"""The modules that register lmshrink's own plugins, through the same hooks a third party uses."""

BUILTIN_MODULES = (
    "lmshrink.solvers.exact",
    "lmshrink.solvers.anneal",
    "lmshrink.objectives.fisher",
    "lmshrink.objectives.pairs",
    "lmshrink.adapters.llama",
    "lmshrink.adapters.nemotron_h",
    "lmshrink.cli.commands",
    "lmshrink.solvers.rank_fermigrad",
    "lmshrink.solvers.rank_milp",
    "lmshrink.solvers.uniform",
    "lmshrink.objectives.fermi_rank",
    "lmshrink.solvers.milp",
    "lmshrink.solvers.dwave",
    "lmshrink.solvers.qaoa",
    "lmshrink.solvers.tabu",
    "lmshrink.solvers.fermigrad",
    "lmshrink.baselines.block_influence",
    "lmshrink.baselines.norm_ratio",
    "lmshrink.baselines.angular",
    "lmshrink.baselines.sleb",
)
