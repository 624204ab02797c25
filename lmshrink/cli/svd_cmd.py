"""``lmshrink svd --ratio 0.8 [--solver fermigrad|milp|uniform] [--pivga]``: whitened-SVD compression with
per-matrix ranks chosen by a solver."""

from __future__ import annotations

import argparse

from ..pipeline.svd import SvdConfig, svd_compress
from ..report.svd import svd_summary
from . import Command
from .flags import config_from_args, model_and_settings


def _run(args: argparse.Namespace) -> int:
    result = svd_compress(args.model, config_from_args(args, SvdConfig))
    for line in svd_summary(result.report):
        print(line)
    print(f"wrote {result.out} (reload with lmshrink.load_compressed('{result.out / 'model'}'), or without lmshrink: "
          "AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True))")
    return 0


COMMAND = Command("svd", "Compress the linear layers by whitened SVD with per-matrix ranks chosen by a solver.",
                  model_and_settings(SvdConfig), _run)
