"""Which blocks may be removed and how much: the constraints of a block-removal problem.

A removal spec maps a group (None: all blocks, or a block kind) to an amount: a count of blocks (``6``), or a
:class:`ParameterBudget` (``25%`` of the parameters, or an absolute number of parameters such as ``30M``). A count is
a cardinality constraint; a budget is a weighted band over the blocks' parameter counts w_i,

    T ≤ Σ_i w_i x_i ≤ T + min_i w_i                                                                          (1)

with T the parameters asked for: at least T parameters go, and less than one more smallest unit beyond them (so the
band is never empty when the smallest units are plentiful, and no solver is rewarded for overshooting).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .adapter import Block
from .errors import LmshrinkError, did_you_mean
from .problem import BinaryQuadraticProblem, Constraint


@dataclass(frozen=True)
class ParameterBudget:
    """Remove blocks holding ``fraction`` of the parameters (of the decoder for a total, of the kind for a per-kind
    budget) or an absolute number of ``parameters``; exactly one of the two is set."""

    fraction: float | None = None
    parameters: int | None = None

    def target(self, whole: float) -> float:
        """The parameters to remove, T of (1), given the parameters ``whole`` a fraction refers to."""
        return self.fraction * whole if self.fraction is not None else float(self.parameters)

    def __str__(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return f"{self.parameters}p"


#: a removal spec: a total (key None) or an amount per block kind; an amount is a block count or a budget
RemovalSpec = Mapping[str | None, "int | ParameterBudget"]

_SUFFIX = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "p": 1}
_AMOUNT = re.compile(r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>%|[kmbgp])?\s*$", re.IGNORECASE)


def _amount(text: str, value: str) -> int | ParameterBudget:
    """One amount of ``--remove``: ``6`` blocks, ``25%`` or ``12.5%``, ``30M`` / ``1.2B`` / ``500k`` / ``123456p``
    parameters."""
    m = _AMOUNT.match(value)
    if not m:
        raise LmshrinkError(f"--remove {text!r}: expected a count like 6, a share like 25%, a number of parameters "
                            "like 30M, or kind=amount pairs like moe=2,attention=1.")
    num, unit = m.group("num"), (m.group("unit") or "").lower()
    if not unit:
        if "." in num:
            raise LmshrinkError(f"--remove {text!r}: a block count is a whole number ({value.strip()!r} is not); "
                                "a share of the parameters takes a % sign.")
        return int(num)
    if unit == "%":
        pct = float(num)
        if not 0 < pct < 100:
            raise LmshrinkError(f"--remove {text!r}: a percentage must lie strictly between 0 and 100, not {num}%.")
        return ParameterBudget(fraction=pct / 100)
    params = float(num) * _SUFFIX[unit]
    if params < 1:
        raise LmshrinkError(f"--remove {text!r}: a number of parameters must be at least 1.")
    return ParameterBudget(parameters=int(round(params)))


def has_budget(spec: RemovalSpec) -> bool:
    """Whether some amount of ``spec`` is a :class:`ParameterBudget` (its constraints then need parameter counts)."""
    return any(isinstance(v, ParameterBudget) for v in spec.values())


def spec_text(spec: RemovalSpec) -> str:
    """``spec`` written back as ``--remove`` reads it."""
    return ",".join(str(v) if k is None else f"{k}={v}" for k, v in spec.items())


def parse_remove(text: str | int | ParameterBudget) -> dict[str | None, int | ParameterBudget]:
    """Read ``--remove``: ``"6"`` → {None: 6}; ``"25%"`` → {None: ParameterBudget(0.25)}; ``"moe=2,attention=1"``
    → {"moe": 2, "attention": 1}; ``"attention=50%,mlp=4"`` mixes the two."""
    if isinstance(text, (int, ParameterBudget)) and not isinstance(text, bool):
        return {None: text}
    spec: dict[str | None, int | ParameterBudget] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        name = key.strip() if sep else None
        if sep and not name:
            raise LmshrinkError(f"--remove {text!r}: a kind=count pair has no kind.")
        if name in spec:
            raise LmshrinkError(f"--remove {text!r}: {'the total' if name is None else repr(name)} is given twice.")
        spec[name] = _amount(str(text), value if sep else key)
    if not spec:
        raise LmshrinkError(f"--remove {text!r}: counts must be non-negative integers.")
    if None in spec and len(spec) > 1:
        raise LmshrinkError(f"--remove {text!r}: give either one total or per-kind counts, not both.")
    return spec


def removal_constraints(blocks: Sequence[Block], spec: RemovalSpec, kinds: Sequence[str] | None = None,
                        parameters: Sequence[int] | None = None, decoder: int | None = None) -> list[Constraint]:
    """One constraint per group, a cardinality for a count and the band (1) for a budget; blocks outside every
    named group get a 'kept' constraint (= 0).

    ``parameters`` are the blocks' parameter counts (needed by a budget; see
    :meth:`~lmshrink.core.ArchitectureAdapter.unit_parameters`), ``decoder`` the parameters a total share refers to
    (default: the sum of ``parameters``; the pipeline passes the decoder layers' own total, which at sub-layer
    granularity also counts the norms that no unit holds)."""
    if has_budget(spec) and parameters is None:
        raise LmshrinkError(f"--remove {spec_text(spec)} is a budget in parameters, which needs the parameter counts "
                            "of the blocks.")
    present = sorted({b.kind for b in blocks})
    if kinds is not None:
        kinds = list(dict.fromkeys(kinds))
        outside = [k for k in spec if k is not None and k not in kinds]
        if outside:
            raise LmshrinkError(
                f"--remove names kind {outside[0]!r}, which --kinds ({', '.join(kinds)}) leaves out; per-kind counts "
                "need no --kinds."
            )
    for kind in list(kinds or []) + [k for k in spec if k is not None]:
        if kind not in present:
            raise LmshrinkError(
                f"This model has no blocks of kind {kind!r}.{did_you_mean(kind, present)} Kinds present: {', '.join(present)}."
            )
    groups: list[tuple[str, list[int], int | ParameterBudget]] = []
    if None in spec:
        allowed = [b.index for b in blocks if kinds is None or b.kind in kinds]
        groups.append(("remove" if kinds is None else "remove:" + "+".join(kinds), allowed, spec[None]))
    else:
        for kind, count in spec.items():
            groups.append((f"remove:{kind}", [b.index for b in blocks if b.kind == kind], count))
    constraints = []
    for name, idx, amount in groups:
        if isinstance(amount, ParameterBudget):
            whole = (decoder if decoder is not None else sum(parameters)) if name.startswith("remove") and \
                None in spec else sum(parameters[i] for i in idx)
            constraints.append(budget_constraint(name, idx, [parameters[i] for i in idx], amount, whole,
                                                 [blocks[i].name for i in idx]))
            continue
        if amount > len(idx):
            kinds = "" if name == "remove" else name.split(":", 1)[1].replace("+", " or ") + " "
            raise LmshrinkError(f"--remove asks for {amount} {kinds}blocks, but the model has only {len(idx)}.")
        constraints.append(Constraint(idx, amount, name))
    used = {i for _, idx, _ in groups for i in idx}
    kept = [b.index for b in blocks if b.index not in used]
    if kept:
        constraints.append(Constraint(kept, 0, "kept"))
    return constraints


def model_constraints(adapter: Any, model: Any, blocks: Sequence[Block], spec: RemovalSpec,
                      kinds: Sequence[str] | None = None
                      ) -> tuple[list[Constraint], list[int] | None, int | None]:
    """:func:`removal_constraints` of ``spec`` on ``model``'s ``blocks``, with the parameter counts a budget needs
    read from the adapter (:meth:`~lmshrink.core.ArchitectureAdapter.unit_parameters` and
    ``decoder_parameters``); returns the constraints, the blocks' counts and the decoder's (both None for a spec of
    counts only)."""
    if not has_budget(spec):
        return removal_constraints(blocks, spec, kinds), None, None
    parameters = adapter.unit_parameters(model, blocks)
    decoder = adapter.decoder_parameters(model)
    constraints = removal_constraints(blocks, spec, kinds, parameters=parameters, decoder=decoder)
    return constraints, parameters, decoder


def budget_constraint(name: str, indices: Sequence[int], weights: Sequence[int], budget: ParameterBudget,
                      whole: float, names: Sequence[str]) -> Constraint:
    """The band (1) of ``budget`` over the blocks at ``indices`` (parameter counts ``weights``); a budget above what
    the group can give, or below its smallest unit, is refused in one sentence."""
    what = f"--remove {budget}" if name == "remove" else f"--remove {name.split(':', 1)[1]}={budget}"
    target = budget.target(whole)
    smallest = min(range(len(weights)), key=lambda k: (weights[k], k))
    if target < weights[smallest]:
        raise LmshrinkError(f"{what} asks for {target:,.0f} parameters, less than the smallest removable unit "
                            f"({names[smallest]}, {weights[smallest]:,} parameters).")
    available = sum(weights)
    if target > available - weights[smallest]:
        share = f" ({available / whole:.1%} of {whole:,.0f})" if whole else ""
        raise LmshrinkError(f"{what} asks for {target:,.0f} parameters, but the {len(weights)} blocks that may go "
                            f"hold {available:,}{share} and removing them all is not allowed; ask for at most "
                            f"{available - weights[smallest]:,}.")
    lower = float(math.ceil(target))
    return Constraint(list(indices), name=name, weights=[float(w) for w in weights], lower=lower,
                      upper=lower + float(weights[smallest]))


def with_constraints(problem: BinaryQuadraticProblem, constraints: Sequence[Constraint]) -> BinaryQuadraticProblem:
    """A copy of ``problem`` with ``constraints`` in place of its own."""
    return replace(problem, constraints=list(constraints), metadata=dict(problem.metadata))
