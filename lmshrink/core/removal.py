"""Which blocks may be removed and how many: the cardinality constraints of a block-removal problem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from .adapter import Block
from .errors import LmshrinkError, did_you_mean
from .problem import BinaryQuadraticProblem, Constraint

#: a removal spec: a total count (key None) or a count per block kind
RemovalSpec = Mapping[str | None, int]


def parse_remove(text: str | int) -> dict[str | None, int]:
    """Read ``--remove``: ``"6"`` → {None: 6}; ``"moe=2,attention=1"`` → {"moe": 2, "attention": 1}."""
    if isinstance(text, int):
        return {None: text}
    spec: dict[str | None, int] = {}
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
        try:
            spec[name] = int(value if sep else key)
        except ValueError:
            raise LmshrinkError(f"--remove {text!r}: expected a count like 6 or kind=count pairs like moe=2,attention=1.") from None
    if not spec or any(v < 0 for v in spec.values()):
        raise LmshrinkError(f"--remove {text!r}: counts must be non-negative integers.")
    if None in spec and len(spec) > 1:
        raise LmshrinkError(f"--remove {text!r}: give either one total or per-kind counts, not both.")
    return spec


def removal_constraints(blocks: Sequence[Block], spec: RemovalSpec, kinds: Sequence[str] | None = None) -> list[Constraint]:
    """One cardinality constraint per group; blocks outside every named group get a 'kept' constraint (= 0)."""
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
    groups: list[tuple[str, list[int], int]] = []
    if None in spec:
        allowed = [b.index for b in blocks if kinds is None or b.kind in kinds]
        groups.append(("remove" if kinds is None else "remove:" + "+".join(kinds), allowed, spec[None]))
    else:
        for kind, count in spec.items():
            groups.append((f"remove:{kind}", [b.index for b in blocks if b.kind == kind], count))
    for name, idx, count in groups:
        if count > len(idx):
            kinds = "" if name == "remove" else name.split(":", 1)[1].replace("+", " or ") + " "
            raise LmshrinkError(f"--remove asks for {count} {kinds}blocks, but the model has only {len(idx)}.")
    used = {i for _, idx, _ in groups for i in idx}
    constraints = [Constraint(idx, count, name) for name, idx, count in groups]
    kept = [b.index for b in blocks if b.index not in used]
    if kept:
        constraints.append(Constraint(kept, 0, "kept"))
    return constraints


def with_constraints(problem: BinaryQuadraticProblem, constraints: Sequence[Constraint]) -> BinaryQuadraticProblem:
    """A copy of ``problem`` with ``constraints`` in place of its own."""
    return replace(problem, constraints=list(constraints), metadata=dict(problem.metadata))
