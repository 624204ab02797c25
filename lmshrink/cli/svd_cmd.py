"""``lmshrink svd --ratio 0.8 [--solver fermigrad|milp|uniform] [--pivga]``: whitened-SVD compression with
per-matrix ranks chosen by a solver."""

from __future__ import annotations

import argparse

from ..pipeline.svd import SvdConfig, svd_compress
from . import Command
from .flags import config_from_args, model_and_settings


def _run(args: argparse.Namespace) -> int:
    result = svd_compress(args.model, config_from_args(args, SvdConfig))
    r = result.report
    p = r["params"]
    print(f"kept {p['kept_stored']:,} of {p['decomposed_dense']:,} decomposed parameters "
          f"({p['kept_ratio_stored']:.4f}; plain low-rank {p['kept_ratio_plain']:.4f}, PivGa {p['kept_ratio_pivga']:.4f}); "
          f"{len(p['dense_matrices'])} matrices kept dense")
    if r["perplexity_before"]:
        print(f"perplexity {r['perplexity_before']['perplexity']:.3f} -> {r['perplexity_after']['perplexity']:.3f} "
              f"on {r['perplexity_after']['tokens']} held-out tokens")
    print(f"wrote {result.out} (reload with lmshrink.load_compressed('{result.out / 'model'}'), or without lmshrink: "
          "AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True))")
    return 0


COMMAND = Command("svd", "Compress the linear layers by whitened SVD with per-matrix ranks chosen by a solver.",
                  model_and_settings(SvdConfig), _run)
