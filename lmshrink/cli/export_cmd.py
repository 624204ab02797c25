"""``lmshrink export MODEL_DIR --format gguf [--type auto|f32|f16|bf16|q8_0] --out FILE``: a pruned model in the
file format llama.cpp runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import LmshrinkError
from ..pipeline.outputs import gguf_source_of_run
from . import Command

FORMATS = ("gguf",)


def add_gguf_type_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--type`` and ``--fallback-type`` (``--gguf-type``, ``--gguf-fallback-type`` with ``prefix="gguf-"``)."""
    p.add_argument(f"--{prefix}type", default="auto", help="GGUF tensor type of the matrices: auto (each tensor in "
                   "the source's type where the gguf library writes it, else the fallback type), f32, f16, bf16 or "
                   "q8_0; norms stay f32")
    p.add_argument(f"--{prefix}fallback-type", default="f16",
                   help="type of a matrix whose source type cannot be written (auto only): f16 (default), bf16, "
                        "q8_0 or f32")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a transformers model directory (e.g. the model/ of a "
                   "prune run whose removed units are whole layers)")
    p.add_argument("--format", default="gguf", choices=FORMATS, help="output format (gguf: llama.cpp)")
    add_gguf_type_arguments(p)
    p.add_argument("--source-gguf", default=None, metavar="FILE", help="the GGUF file the model was pruned from: its "
                   "tokenizer is copied verbatim and its tensor types are the sources of --type auto (default: the "
                   "run's source when MODEL_DIR is the model/ of a prune run that loaded a GGUF file, as its "
                   "report.json says; else the tokenizer of MODEL_DIR, tensor types from the saved dtype)")
    p.add_argument("--out", default=None, metavar="FILE", help="the GGUF file to write (default MODEL_DIR.gguf, "
                   "beside the directory)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _run(args: argparse.Namespace) -> int:
    from ..compress.gguf_export import check_model_dir, check_type, export_gguf_dir

    check_type(args.type, args.fallback_type)
    model_dir = Path(args.model_dir)
    out = Path(args.out) if args.out else model_dir.parent / f"{model_dir.resolve().name}.gguf"
    if out.exists() and not args.overwrite:
        raise LmshrinkError(f"{out} exists; pass --overwrite to replace it.")
    check_model_dir(model_dir)
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    run_source, layer_map = gguf_source_of_run(model_dir)
    source = args.source_gguf or run_source
    if source is not None and not args.quiet:
        print(f"tokenizer and source tensor types from {source}")
    path = export_gguf_dir(model_dir, out, type=args.type, fallback=args.fallback_type, source_gguf=source,
                           layer_map=layer_map, progress=not args.quiet)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


COMMAND = Command("export", "Write a model in another format: GGUF for llama.cpp.", _add_arguments, _run)
