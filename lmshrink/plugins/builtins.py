"""The modules that register lmshrink's own plugins, through the same hooks a third party uses."""

BUILTIN_MODULES = (
    "lmshrink.solvers.exact",
    "lmshrink.solvers.anneal",
    "lmshrink.objectives.fisher",
    "lmshrink.objectives.pairs",
    "lmshrink.adapters.llama",
    "lmshrink.adapters.nemotron_h",
    "lmshrink.solvers.milp",
    "lmshrink.solvers.dwave",
    "lmshrink.solvers.qaoa",
    "lmshrink.solvers.tabu",
    "lmshrink.solvers.fermigrad",
    "lmshrink.cli.commands",
)
