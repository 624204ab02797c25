"""Every installed solver of binary problems passes lmshrink.testing.SolverConformance.

The solvers come from the registry and everything about how they run comes from their capabilities: the options
that keep a run offline where a backend needs credentials (a mock quantum device, an exhaustive stand-in for a cloud
solver), the options of a quick run, the modules whose absence skips them. On top of the suite's own checks the
built-ins must reach the brute-force optimum on its 12-variable problems and give at least three distinct states.
"""

from __future__ import annotations

import re


from lmshrink.core import BinaryQuadraticProblem
from lmshrink.plugins import registry
from lmshrink.testing import SolverConformance


def binary_solvers() -> list[str]:
    return sorted(e.name for e in registry("solver") if BinaryQuadraticProblem in e.problem_types)


def test_the_registry_has_binary_solvers_of_every_kind():
    caps = [registry("solver").entry(name).create().capabilities for name in binary_solvers()]
    assert any(c.proves_optimality for c in caps) and any(not c.proves_optimality for c in caps)
    assert any(c.offline_options for c in caps if c.needs_credentials)
    assert any("repair" in c.postprocessing for c in caps)


def test_the_solvers_that_honour_weighted_bands_say_so():
    weighted = {name for name in binary_solvers()
                if "weighted" in registry("solver").entry(name).create().capabilities.constraint_kinds}
    assert {"exact", "anneal"} <= weighted
    for name in ("milp", "tabu", "dwave", "dwave-hybrid"):  # present where their optional modules are installed
        if name in binary_solvers():
            assert name in weighted, name


def _conformance_class(name: str) -> type:
    solver = registry("solver").entry(name).create()
    attrs = {"solver": solver, "expect_optimum": True, "min_distinct": 3, "__module__": __name__}
    safe = re.sub(r"\W", "_", name)
    return type(f"TestConformance_{safe}", (SolverConformance,), attrs)


for _name in binary_solvers():
    _cls = _conformance_class(_name)
    globals()[_cls.__name__] = _cls
del _name, _cls
