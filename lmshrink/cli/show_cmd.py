"""``lmshrink show DIR``: the summary and plots of an experiment record or a sweep."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core import LmshrinkError
from ..experiments.record import load_record
from ..experiments.show import make_plots, summary_lines, sweep_plots
from ..experiments.sweep import sweep_summary, sweep_table
from . import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="DIR", help="a record folder (lmshrink solve --record) or a sweep folder")
    parser.add_argument("--no-plots", action="store_true", help="print the summary only")


def _run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if (path / "sweep.json").is_file():
        data = json.loads((path / "sweep.json").read_text())
        print(sweep_table(data))
        for line in sweep_summary(data):
            print(line)
        plots = [] if args.no_plots else sweep_plots(data, path / "plots")
    elif (path / "record.json").is_file():
        record = load_record(path)
        for line in summary_lines(record):
            print(line)
        plots = [] if args.no_plots else make_plots(record)
    else:
        raise LmshrinkError(f"{str(path)!r} is neither a record folder (record.json) nor a sweep folder "
                            "(sweep.json).")
    for plot in plots:
        print(f"plot: {plot}")
    return 0


COMMAND = Command("show", "Summarise an experiment record or sweep and draw its plots.", _add_arguments, _run)
