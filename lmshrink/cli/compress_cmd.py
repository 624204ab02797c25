"""``lmshrink compress --ratio R [--mode joint|removal|svd]``: one parameter budget over branch removal and SVD ranks,
the choice made by an exact solver."""

from __future__ import annotations

import argparse

from ..pipeline.compress import CompressConfig, compress_model
from ..report.compress import compress_summary
from . import Command
from .flags import config_from_args, model_and_settings


def _run(args: argparse.Namespace) -> int:
    result = compress_model(args.model, config_from_args(args, CompressConfig))
    for line in compress_summary(result.report):
        print(line)
    if result.out is not None:
        print(f"wrote {result.out} (reload with lmshrink.load_compressed('{result.out / 'model'}'))")
    return 0


COMMAND = Command("compress", "Compress to a parameter ratio by removing attention/MLP branches and factoring the "
                              "remaining matrices, chosen together under one budget.",
                  model_and_settings(CompressConfig), _run)
