"""Library instances in the formats solver researchers use (``lmshrink problems export DIR --format F``).

| format | file | what it holds | read back with |
|---|---|---|---|
| ``lmshrink`` | ``NAME.json`` | the problem file (``lmshrink.binary_quadratic/1``) | ``lmshrink.load_problem`` |
| ``bqm`` | ``NAME.bqm.json`` | the penalty BQM objective + P Σ_c (Σ x − M_c)², dimod's ``to_serializable`` JSON; a weighted band in the slack-penalty form (:mod:`lmshrink.solvers.slack`, slack bits after the problem's variables) | ``dimod.BinaryQuadraticModel.from_serializable`` |
| ``cqm`` | ``NAME.cqm`` | the constrained model, constraints (cardinalities and bands) kept (dimod's CQM file) | ``dimod.ConstrainedQuadraticModel.from_file`` |
| ``lp``, ``mps`` | ``NAME.lp``, ``NAME.mps`` | the linearized MILP that ``milp`` solves (McCormick + RLT), written by Pyomo | any MILP solver (HiGHS, ...) |
| ``qplib`` | ``NAME.qplib`` | QPLIB text, type QBL (:mod:`.qplib`) | :func:`~lmshrink.library.qplib.read_qplib` |

Weighted bands (``L ≤ Σ w·x ≤ U``, parameter budgets) are linear rows in ``lp``/``mps`` and ``qplib`` and linear
constraints in ``cqm``; the ``lmshrink`` file is then format ``/2``. :func:`problem_instance` wraps a user's own
problem file so that ``lmshrink problems export --problem FILE`` writes it like a library instance.

Every format has the same energies as the problem for every feasible state (the BQM's penalty vanishes there; the
MILP's objective at y_ij = x_i x_j is the energy; constants are kept). ``index.json`` next to the files lists each
instance with its file, variable names (the MILP's ``x[i]`` and QPLIB's ``x_{i+1}`` are variable i), constraints,
reference energy, lowest states with their measured loss and perplexity, and for ``bqm`` the penalty weight.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core import BinaryQuadraticProblem, LmshrinkError, load_problem
from ..core.errors import did_you_mean, require
from ..core.problem import json_default
from ..solvers.composites import choose_penalty
from ..solvers.milp import linearized_model
from ..solvers.slack import slack_problem
from .instance import LibraryInstance
from .qplib import write_qplib

#: format → file suffix
FORMATS = {"lmshrink": ".json", "bqm": ".bqm.json", "cqm": ".cqm", "lp": ".lp", "mps": ".mps", "qplib": ".qplib"}
EXPORT_FORMAT = "lmshrink.library_export/1"


def check_format(fmt: str) -> None:
    """One sentence for a format lmshrink does not write, before anything else is done."""
    if fmt not in FORMATS:
        raise LmshrinkError(f"Unknown library format {fmt!r}.{did_you_mean(fmt, FORMATS)} Formats: "
                            f"{', '.join(FORMATS)}.")
    needs = {"bqm": ("dimod", "dwave"), "cqm": ("dimod", "dwave"), "lp": ("pyomo.environ", "milp"),
             "mps": ("pyomo.environ", "milp")}
    if fmt in needs:
        require(needs[fmt][0], needs[fmt][1], f"Export as {fmt}")


def export_instance(instance: LibraryInstance, folder: str | Path, fmt: str) -> tuple[Path, dict[str, Any]]:
    """Write one instance in ``fmt``; returns the file and its entry facts for index.json."""
    folder = Path(folder)
    problem = instance.problem
    path = folder / f"{instance.name}{FORMATS[fmt]}"
    extra: dict[str, Any] = {}
    if fmt == "lmshrink":
        problem.save(path)
    elif fmt == "bqm":
        penalty, rule = choose_penalty(problem)
        extra = {"penalty": penalty, "penalty_rule": rule}
        if problem.has_weighted_constraints:
            form = slack_problem(problem, penalty)
            path.write_text(json.dumps(form.to_bqm().to_serializable()))
            extra["slack_variables"] = form.variables[problem.num_variables:]
        else:
            path.write_text(json.dumps(problem.to_bqm(penalty).to_serializable()))
    elif fmt == "cqm":
        with open(path, "wb") as f, problem.to_cqm().to_file() as data:
            f.write(data.read())
    elif fmt in ("lp", "mps"):
        linearized_model(problem).write(str(path), format=fmt, io_options={"symbolic_solver_labels": True})
        extra = {"milp": "x[i] binary (variable i), y[i,j] = x_i·x_j continuous (McCormick + RLT cuts)"}
    else:
        write_qplib(problem, path, instance.name)
    return path, extra


def problem_instance(path: str | Path) -> LibraryInstance:
    """A user's problem file (``.json`` or ``.npz``, any binary problem lmshrink reads) as an instance to export,
    named after the file, with no reference energy or states."""
    path = Path(path)
    if not path.is_file():
        raise LmshrinkError(f"No problem file at {str(path)!r}.")
    problem = load_problem(path)
    if not isinstance(problem, BinaryQuadraticProblem):
        raise LmshrinkError(f"{str(path)!r} holds a {type(problem).__name__}; only binary problems are exported.")
    name = path.name.removesuffix(".npz").removesuffix(".json")
    return LibraryInstance(name=name, problem=problem, reference={}, lowest=[], source={"file": str(path)})


def export_library(instances: Sequence[LibraryInstance], out: str | Path, fmt: str) -> list[Path]:
    """Write every instance in ``fmt`` to ``out`` and an ``index.json``; returns the instance files."""
    check_format(fmt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths, entries = [], []
    for instance in instances:
        path, extra = export_instance(instance, out, fmt)
        paths.append(path)
        entries.append({"name": instance.name, "file": path.name, "variables": instance.problem.variables,
                        "constraints": [c.to_dict() for c in instance.problem.constraints],
                        "reference": instance.reference, "lowest": instance.lowest,
                        "lowest_proven": instance.lowest_proven, "measured": instance.measured,
                        "source": instance.source, **extra})
    index = {"format": EXPORT_FORMAT, "file_format": fmt,
             "energy": "offset + linear·x + xᵀQx of the lmshrink problem; every file has this energy at every "
                       "feasible state", "instances": entries}
    (out / "index.json").write_text(json.dumps(index, indent=1, default=json_default))
    return paths
