"""Combining removal-study results made apart: the same calibration seed run for different totals M (one run for
M = 6, 8, 10, another for 4 and 12) becomes one seed result, and two finished study folders become one.

Rows of different M values never depend on each other (each M has its own portfolio, SLEB's greedy order is the
same prefix however far it runs, the objectives are built from the seed's calibration draw alone), so a combined
seed is what one run over every M would have produced, apart from the seconds each component took.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

#: settings that may differ between two runs combined: which M values and seeds each ran, where it was written
#: and whether it refreshed
RUN_ONLY = ("remove", "seeds", "out", "refresh")
#: settings a finished seed grows by instead of running again: rows it skipped, KD rows at more M values
GROWABLE = ("skip", "kd")


class CombineError(ValueError):
    """Two results that cannot be combined, with the reason."""


def comparable(a: dict[str, Any] | None, b: dict[str, Any] | None, ignore: tuple[str, ...] = RUN_ONLY) -> bool:
    """Whether two runs' settings agree apart from ``ignore``."""
    return a is not None and b is not None and (
        {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore})


def differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The settings two runs do not share (apart from :data:`RUN_ONLY`), as ``name: a vs b`` phrases."""
    keys = sorted({*a, *b} - set(RUN_ONLY))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))


def saved_seed(path: Path, settings: dict[str, Any], ignore: tuple[str, ...], log: Callable[[str], None]
               ) -> dict[str, Any] | None:
    """The seed result at ``path`` when it was run with ``settings`` (apart from ``ignore``); None when there is
    none, or when its settings differ: it is then moved aside to ``*.replaced.json`` and ``log`` says so."""
    saved = json.loads(path.read_text()) if path.exists() else None
    if saved is not None and not comparable(saved.get("settings"), settings, ignore):
        aside = path.with_suffix(".replaced.json")
        path.replace(aside)
        changed = differences(saved.get("settings") or {}, settings)
        log(f"seed {saved.get('seed')}: {path} was run with other settings ({changed}); running it again (the old "
            f"result kept as {aside})")
        saved = None
    return saved


def merge_seeds(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One seed result holding the rows of both (``second`` run for M values ``first`` lacks).

    The calibration draw must be the same; the rows either left out count as left out (``skip``: both runs'),
    though the other run may have them; seconds per component add up, and ``parts`` keeps each run's M values and
    wall time."""
    if first["seed"] != second["seed"]:
        raise CombineError(f"seed {first['seed']} and seed {second['seed']} are different calibration draws")
    if not comparable(first.get("settings"), second.get("settings"), (*RUN_ONLY, *GROWABLE)):
        raise CombineError(f"seed {first['seed']}: the runs' settings differ ("
                           f"{differences(first.get('settings') or {}, second.get('settings') or {})})")
    if first["calibration"] != second["calibration"]:
        raise CombineError(f"seed {first['seed']}: the runs drew different calibration samples")
    ms_first = set(first["settings"]["remove"])
    ms_second = set(second["settings"]["remove"])
    if ms_first & ms_second:
        raise CombineError(f"seed {first['seed']}: both runs have M = {sorted(ms_first & ms_second)}")
    seconds = summed_seconds(first.get("seconds", {}), second.get("seconds", {}))
    parts = [*seed_parts(first), *seed_parts(second)]
    kd = [*first.get("kd", []), *second.get("kd", [])]
    return {
        **first,
        "rows": [*first["rows"], *second["rows"]],
        "kd": kd,
        "skipped": {**first.get("skipped", {}), **second.get("skipped", {})},
        "seconds": seconds,
        "portfolio_tables": {**first.get("portfolio_tables", {}), **second.get("portfolio_tables", {})},
        "validation_seconds_per_set": first.get("validation_seconds_per_set")
        or second.get("validation_seconds_per_set"),
        "settings": {**first["settings"], "remove": sorted(ms_first | ms_second),
                     "skip": sorted({*first["settings"]["skip"], *second["settings"]["skip"]}),
                     "kd": kd_values(kd)},
        "wall_seconds": sum(p["wall_seconds"] for p in parts),
        "parts": parts,
    }


def kd_values(kd: list[dict[str, Any]]) -> list[int]:
    """The M values a seed has KD rows for."""
    return sorted({int(k["M"]) for k in kd})


def summed_seconds(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Seconds per component of two runs added up."""
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in {**a, **b}}


def with_step(saved: dict[str, Any], grown: dict[str, Any], spent: dict[str, float],
              part: dict[str, Any]) -> dict[str, Any]:
    """``grown`` (``saved`` after one growth step) with the step's seconds per component added to the saved ones and
    ``part`` (what the step ran, with its ``wall_seconds``) appended to the seed's parts."""
    parts = [*seed_parts(saved), part]
    return {**grown, "seconds": summed_seconds(saved.get("seconds", {}), spent), "parts": parts,
            "wall_seconds": sum(p["wall_seconds"] for p in parts)}


def seed_parts(seed: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs a seed result was made of: M values (and the rows, for a run that added rows) and wall seconds
    each."""
    return seed.get("parts") or [{"remove": list(seed["settings"]["remove"]),
                                  "wall_seconds": float(seed.get("wall_seconds", 0.0))}]


def merge_runs(into: str | Path, other: str | Path) -> dict[str, Any]:
    """Add the seed results of the finished study in ``other`` (other M values, same settings otherwise) to the one
    in ``into``: a seed in both becomes one result (:func:`merge_seeds`), a seed in one only is kept as it is.
    Writes ``into``'s seed files and returns the summary (report not drawn)."""
    from ..common import write_json

    into, other = Path(into), Path(other)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (into, other))
    if not comparable(a["settings"], b["settings"], (*RUN_ONLY, *GROWABLE)):
        raise CombineError(f"{into} and {other} were run with different settings "
                           f"({differences(a['settings'], b['settings'])})")
    if a["held_out"]["tokens"] != b["held_out"]["tokens"] or abs(a["held_out"]["loss"] - b["held_out"]["loss"]) > 1e-9:
        raise CombineError(f"{into} and {other} score on different held-out text")
    ours = {sd["seed"]: sd for sd in a["seeds"]}
    theirs = {sd["seed"]: sd for sd in b["seeds"]}
    seeds = [merge_seeds(ours[s], theirs[s]) if s in ours and s in theirs else ours.get(s) or theirs[s]
             for s in sorted({*ours, *theirs})]
    for sd in seeds:
        write_json(into / f"seed-{sd['seed']}.json", sd)
    remove = sorted({m for sd in seeds for m in sd["settings"]["remove"]})
    skip = sorted({g for sd in seeds for g in sd["settings"]["skip"]})
    kd = sorted({m for sd in seeds for m in sd["settings"].get("kd", [])})
    return {**a, "settings": {**a["settings"], "remove": remove, "skip": skip, "kd": kd,
                              "seeds": [sd["seed"] for sd in seeds]},
            "seeds": seeds, "total_seconds": a["total_seconds"] + b["total_seconds"]}
