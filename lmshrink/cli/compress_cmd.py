"""``lmshrink compress --ratio R [--mode joint|removal|svd]``: one parameter budget over branch removal and SVD ranks,
the choice made by an exact solver."""

from __future__ import annotations

import argparse

from ..pipeline.compress import CompressConfig, compress_model
from . import Command
from .flags import config_from_args, model_and_settings


def _run(args: argparse.Namespace) -> int:
    result = compress_model(args.model, config_from_args(args, CompressConfig))
    r = result.report
    p = r["params"]
    print(f"kept {p['kept']:,} of {p['dense']:,} decomposed decoder parameters ({p['kept_ratio']:.4f}); removed "
          f"{len(r['removed_branches'])} branches, factored {len(r['factored'])} matrices")
    if r["perplexity_before"]:
        print(f"perplexity {r['perplexity_before']['perplexity']:.3f} -> {r['perplexity_after']['perplexity']:.3f} "
              f"on {r['perplexity_after']['tokens']} held-out tokens")
    if result.out is not None:
        print(f"wrote {result.out} (reload with lmshrink.load_compressed('{result.out / 'model'}'))")
    return 0


COMMAND = Command("compress", "Compress to a parameter ratio by removing attention/MLP branches and factoring the "
                              "remaining matrices, chosen together under one budget.",
                  model_and_settings(CompressConfig), _run)
