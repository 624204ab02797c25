"""``lmshrink heal``: distill a pruned model from the unpruned one (KD healing on its own)."""

from __future__ import annotations

import argparse

from ..pipeline.heal_model import HealConfig, heal_model
from ..report.prune import heal_summary
from . import Command
from .flags import add_settings_arguments, config_from_args


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a pruned model directory (the model/ of a prune run)")
    add_settings_arguments(p, HealConfig)


def _run(args: argparse.Namespace) -> int:
    result = heal_model(args.model_dir, config_from_args(args, HealConfig))
    for line in heal_summary(result.report):
        print(line)
    print(f"wrote {result.out}")
    return 0


COMMAND = Command("heal", "Heal a pruned model by distillation from the unpruned one.", _add_arguments, _run)
