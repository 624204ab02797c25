"""The table of a problem library (the shipped set, or a folder built by ``lmshrink problems build``).

Per instance: variables N, constraints, the proven optimal or best known energy with the solver and seconds that
found it, and over its lowest states (20 in the reference set) the Spearman correlation of the energy with the
measured calibration loss and with the held-out perplexity. Writes ``report.md`` and ``library.csv`` to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..common import spearman, table, write_csv


def library_rows(folder: str | None) -> list[dict[str, Any]]:
    """One row per instance of the library in ``folder`` (None: the shipped set)."""
    from lmshrink.library import load_library

    rows = []
    for inst in load_library(folder):
        energies = [s["energy"] for s in inst.lowest]
        losses = inst.losses()
        ppl = None if losses is None else [s["perplexity"] for s in inst.lowest]
        rows.append({**inst.summary(),
                     "spearman_loss": None if losses is None else spearman(energies, losses),
                     "spearman_perplexity": None if ppl is None else spearman(energies, ppl)})
    return rows


def library_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    return table(["instance", "N", "constraints", "energy", "status (solver, s)", "states", "ρ(E, loss)",
                  "ρ(E, ppl)"],
                 [[r["instance"], r["variables"], r["constraints"], r["energy"],
                   f"{'proven' if r['proven'] else 'best known'} ({r['solver']}, {r['time_s']:.3g} s)", r["lowest"],
                   _rho(r, "spearman_loss"), _rho(r, "spearman_perplexity")] for r in rows])


def _rho(row: dict[str, Any], key: str) -> Any:
    """The correlation, or why there is none: measurements pending, or nothing measured (random weights)."""
    return "pending" if row["pending"] else "n/a" if row[key] is None else row[key]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.library", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="folder", default=None, help="library folder (default: the shipped set)")
    p.add_argument("--out", default="benchmarks/results/library", help="output folder")
    a = p.parse_args(argv)
    rows = library_rows(a.folder)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "library.csv", rows)
    text = library_table(rows)
    (out / "report.md").write_text("# Problem library\n\n" + text + "\n")
    print(text)
    return 0
