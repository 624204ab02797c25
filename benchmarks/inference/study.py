"""Inference benchmark: prefill throughput, decode latency, memory and size on disk of compressed models.

For the dense model and each compressed variant (block removal, sub-layer removal, SVD at two ratios, plain low rank
and PivGa; see ``variants``), on every device and dtype asked for:

* prefill: tokens per second of one forward pass over ``--prefill`` tokens, batch 1 and 8;
* decode: milliseconds per step (one token per sequence) with the KV cache after a ``--prompt``-token prompt,
  ``--decode`` steps, batch 1 and 8;
* memory: bytes of weights in memory (and the peak allocated on CUDA); size on disk of the saved weights.

Every variant is timed interleaved with the dense model in one process (dense, variant, variant, dense, ...;
medians over ``--reps``), a fresh process for each variant (``--in-process``: all in this one), and reported as
speed-ups (dense time / variant time) beside its share of the dense model's multiply-adds (decoder matrices and LM
head; 1/share is the speed-up the arithmetic alone predicts).

    python -m benchmarks.inference                                # embedded default, CPU float32 + bfloat16
    python -m benchmarks.inference --dtypes float32 --threads 1   # the table of docs/guide/inference.md
    python -m benchmarks.inference --quick --out /tmp/inf         # a tiny random model, seconds (CI)
    python -m benchmarks.inference --render benchmarks/results/inference

Writes ``results.json`` and ``report.md`` under ``--out``; the built variants are kept in ``OUT/variants`` so a
rerun only times.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path
from typing import Any

from ..common import Log, environment, study_main, table, write_json
from . import measure
from .variants import (Variant, build_settings, default_variants, disk_bytes, ensure_built, save_dense,
                       stored_dtype)

DEFAULT_DIR = "benchmarks/results/inference"
#: the issue's target: a variant's decode speed-up reaches this fraction of the speed-up its multiply-adds predict
TARGET = 0.85


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model name/path (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--quick", action="store_true", help="a tiny random model from a config and few tokens (CI)")
    p.add_argument("--variants", default="", help="comma-separated subset of the variant names (default all)")
    p.add_argument("--devices", default="", help="comma-separated: cpu, cuda (default: cpu, and cuda when available)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1; 0: torch's default)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--prefill", type=int, default=512, help="tokens per sequence of the prefill (default 512)")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens before decoding (default 128)")
    p.add_argument("--decode", type=int, default=64, help="decoding steps timed (default 64)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of each model per measurement (default 3)")
    p.add_argument("--samples", type=int, default=16, help="calibration samples of the variant builds (default 16)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per calibration sample (default 128)")
    p.add_argument("--svd-solver", default="fermigrad", help="rank allocation of the SVD variants (default fermigrad)")
    p.add_argument("--out", default=DEFAULT_DIR, help=f"output folder (default {DEFAULT_DIR})")
    p.add_argument("--build-only", action="store_true", help="build (or find) the variants, time nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--in-process", action="store_true",
                   help="time every variant in this process (default: each in a fresh one, but for --quick)")
    args = p.parse_args(argv)
    args.isolate = not (args.in_process or args.quick)
    if args.quick:
        for name, value in (("prefill", 32), ("prompt", 16), ("decode", 4), ("reps", 2), ("samples", 4),
                            ("seq_len", 32), ("svd_solver", "uniform")):
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    args.variants = [s.strip() for s in args.variants.split(",") if s.strip()]
    args.dtypes = [s.strip() for s in args.dtypes.split(",") if s.strip()]
    args.batches = [int(s) for s in args.batches.split(",") if s.strip()]
    args.devices = [s.strip() for s in args.devices.split(",") if s.strip()]
    bad = [d for d in args.dtypes if d not in ("float32", "bfloat16", "float16")]
    if bad:
        p.error(f"unknown dtype {bad[0]!r}")
    if min(args.prefill, args.prompt, args.decode, args.reps, *args.batches) < 1:
        p.error("token counts, batch sizes and --reps must be positive")
    return args


# --- the model and its variants ----------------------------------------------------------------------------------
def quick_source(out: Path) -> tuple[str, list[str]]:
    """A tiny random Llama (5 layers) with a byte-level BPE tokenizer, saved under ``out``; and a text file."""
    from pydoc_data.topics import topics

    folder, text = out / "quick-model", out / "quick-text.txt"
    if not (folder / "config.json").is_file():
        import torch
        from tokenizers import ByteLevelBPETokenizer
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        words = "\n\n".join(topics[k] for k in sorted(topics)[:40])
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator([words], vocab_size=320, min_frequency=2, special_tokens=["<eos>"],
                                show_progress=False)
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<eos>", pad_token="<eos>")
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=5,
                                             num_attention_heads=4, num_key_value_heads=2, vocab_size=320,
                                             max_position_embeddings=512, eos_token_id=0, pad_token_id=0,
                                             bos_token_id=0, tie_word_embeddings=True))
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        text.write_text(words)
    return str(folder), [str(text)]


def build_all(args: argparse.Namespace, out: Path, log: Log) -> tuple[Any, list[tuple[Variant, Path]], Path]:
    """The dense model (loaded once, float32 on the CPU), each variant's saved folder, and the variants' root."""
    from lmshrink.models import load_model

    source, data = quick_source(out) if args.quick else (args.model, None)
    dense = load_model(source)
    layers = dense.model.config.num_hidden_layers
    chosen = [v for v in default_variants(layers, args.quick) if not args.variants or v.name in args.variants]
    missing = sorted(set(args.variants) - {v.name for v in chosen})
    if missing:
        raise SystemExit(f"unknown variant {missing[0]!r} (known: "
                         f"{', '.join(v.name for v in default_variants(layers, args.quick))})")
    root = out / "variants"
    built = []
    for v in chosen:
        settings = build_settings(v, args.samples, args.seq_len, data, args.svd_solver, args.quick)
        built.append((v, ensure_built(v, root, source, settings, log)))
    return dense, built, root


# --- timing ------------------------------------------------------------------------------------------------------
def interleaved(dense: Any, variant: Any, run: Any, reps: int, warm_up: bool = True) -> tuple[float, float]:
    """Medians of ``run(model)`` over ``reps`` repetitions of each, in the order D V V D D V ..., after one untimed
    warm-up of each with ``warm_up``."""
    if warm_up:
        run(dense), run(variant)
    times: dict[int, list[float]] = {0: [], 1: []}
    models = (dense, variant)
    for k in range(reps):
        for which in ((0, 1) if k % 2 == 0 else (1, 0)):
            times[which].append(run(models[which]))
    return statistics.median(times[0]), statistics.median(times[1])


def time_variant(dense: Any, model: Any, args: argparse.Namespace, device: Any, vocab: int) -> dict[str, Any]:
    """Prefill and decode of ``model`` against ``dense`` at every batch size: medians and speed-ups."""
    import torch

    g = torch.Generator().manual_seed(0)
    row: dict[str, Any] = {}
    for k, b in enumerate(args.batches):  # the first batch size warms both models up for the larger ones
        ids = torch.randint(1, vocab, (b, args.prefill), generator=g).to(device)
        prompt = torch.randint(1, vocab, (b, args.prompt), generator=g).to(device)
        d, v = interleaved(dense, model, lambda m: measure.prefill_seconds(m, ids), args.reps, k == 0)
        row[f"prefill_b{b}"] = {"dense_tok_s": b * args.prefill / d, "tok_s": b * args.prefill / v, "speedup": d / v}
        with measure.PeakMemory(device) as peak:
            d, v = interleaved(dense, model, lambda m: measure.decode_seconds(m, prompt, args.decode), args.reps,
                               k == 0)
        row[f"decode_b{b}"] = {"dense_ms": 1e3 * d, "ms": 1e3 * v, "speedup": d / v}
        if peak.peak is not None:
            row[f"decode_b{b}"]["peak_bytes_both"] = peak.peak
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    log = Log(args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    dense_loaded, built, root = build_all(args, out, log)
    if args.build_only:
        return {"variants": {v.name: str(folder) for v, folder in built}}
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    dense_macs = measure.matrix_macs(dense_loaded.model)
    rows: list[dict[str, Any]] = []
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}
    data = {"settings": settings, "environment": environment("benchmarks.inference"), "rows": rows,
            "model": dense_loaded.name}
    source = quick_source(out)[0] if args.quick else args.model
    for device_name in devices:
        for dtype_name in args.dtypes:
            for variant, folder in built:
                job = (args, source, device_name, dtype_name, variant, folder, root, dense_macs)
                # in this process, the dense model loaded once serves every variant
                row = _in_fresh_process(measure_variant, job) if args.isolate else measure_variant(*job, dense_loaded)
                rows.append(row)
                log(_progress(row))
                data["wall_s"] = log.elapsed
                write_json(out / "results.json", data)  # after every variant: an interrupted run keeps its rows
                (out / "report.md").write_text(render(data))
    log(f"wrote {out / 'report.md'}")
    return data


def measure_variant(args: argparse.Namespace, source: Any, device_name: str, dtype_name: str, variant: Variant,
                    folder: Path, root: Path, dense_macs: dict[str, int], dense_loaded: Any = None) -> dict[str, Any]:
    """One row: ``variant`` (saved at ``folder``) timed interleaved with the dense model ``source`` on one device in
    one dtype, with its multiply-adds, memory and size on disk; ``dense_loaded``: that model already loaded (it is
    copied, not changed)."""
    import torch

    from lmshrink.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(device_name), getattr(torch, dtype_name)
    dense_loaded = dense_loaded or load_model(source)
    dense = copy.deepcopy(dense_loaded.model).to(device=device, dtype=dtype).eval()
    model = load_model(str(folder)).model.to(device=device, dtype=dtype).eval()
    macs = measure.matrix_macs(model)
    row = {"variant": variant.name, "what": variant.describe(), "device": _device_label(device),
           "dtype": dtype_name, "threads": torch.get_num_threads() if device.type == "cpu" else None,
           "clock": measure.clock_for(device),
           "params": sum(p.numel() for p in model.parameters()),
           "dense_params": sum(p.numel() for p in dense.parameters()),
           "macs": macs, "dense_macs": dense_macs,
           "mac_share": measure.mac_shares(macs, dense_macs, args.prefill),
           "disk_bytes": disk_bytes(folder), "disk_dtype": stored_dtype(folder),
           "dense_disk_bytes": disk_bytes(save_dense(dense_loaded.model, dense_loaded.tokenizer, root,
                                                     stored_dtype(folder)))}
    row.update(time_variant(dense, model, args, device, int(dense.config.vocab_size)))
    row["weight_bytes"] = measure.weight_bytes(model)  # after running: with what forwards lay out
    row["dense_weight_bytes"] = measure.weight_bytes(dense)
    return row


def _in_fresh_process(fn: Any, job: tuple[Any, ...]) -> Any:
    """``fn(*job)`` in a new Python process: each variant starts from the same memory state as the first (in one
    long process, the models loaded before shift later variants' timings by up to a sixth)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *job).result()


def _device_label(device: Any) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def _progress(r: dict[str, Any]) -> str:
    speedups = ", ".join(f"{kind} b{key.rsplit('_b', 1)[1]} {value['speedup']:.2f}x"
                         for kind in ("decode", "prefill") for key, value in r.items() if key.startswith(f"{kind}_b"))
    return f"{r['variant']} {r['dtype']} {r['device']}: MAC share {r['mac_share']['decode']:.2f}, {speedups}"


# --- report ------------------------------------------------------------------------------------------------------
def target_speedup(share: float) -> float:
    """The decode speed-up the target asks of a variant with MAC share ``share``: ``TARGET`` of 1/share."""
    return TARGET / share


def render(data: dict[str, Any]) -> str:
    """report.md: one table per device and dtype, ratios to the dense model measured side by side."""
    s, env = data["settings"], data["environment"]
    batches = s["batches"]
    lines = ["# Inference benchmark", "",
             f"Model: {data.get('model')}. Every variant timed interleaved with the dense model in one process "
             + ("of its own " if s.get("isolate") else "")
             + f"(medians of {s['reps']} repetitions each); speed-up = dense time / variant time. Prefill: "
             f"{s['prefill']} tokens per sequence; decode: {s['decode']} steps with the KV cache after a "
             f"{s['prompt']}-token prompt. MAC share: the variant's multiply-adds per decoded token (decoder "
             f"matrices and LM head) over the dense model's; 1/share is the speed-up the arithmetic predicts, and "
             f"the target is {TARGET:.0%} of it. Load average at the start: {env.get('load_average')}.", ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in data["rows"]:
        groups.setdefault((r["device"], r["dtype"]), []).append(r)
    for (device, dtype), rows in groups.items():
        threads = rows[0].get("threads")
        lines += [f"## {device}, {dtype}" + (f", {threads} thread{'s' * (threads != 1)}" if threads else ""), ""]
        if rows[0].get("clock") == "cpu time":
            lines += ["Timed by the process's CPU time (one thread: the latency without the time other jobs held the "
                      "core).", ""]
        first = rows[0]
        dense_cells = []
        for b in batches:
            dense_cells.append(f"prefill b{b} {first[f'prefill_b{b}']['dense_tok_s']:.4g} tok/s")
        for b in batches:
            dense_cells.append(f"decode b{b} {first[f'decode_b{b}']['dense_ms']:.4g} ms/step")
        lines += [f"Dense model (medians over its runs beside the first variant): {', '.join(dense_cells)}; "
                  f"{first['dense_weight_bytes'] / 2**20:.1f} MiB of weights in memory, "
                  f"{first['dense_disk_bytes'] / 2**20:.1f} MiB on disk (saved in {first.get('disk_dtype', 'float32')}, "
                  f"as the variants are).", ""]
        headers = ["variant", "params", "MAC share", "predicted"]
        headers += [f"prefill b{b}" for b in batches] + [f"decode b{b}" for b in batches]
        headers += ["decode target", "met", "memory", "disk"]
        body = []
        for r in rows:
            share = r["mac_share"]["decode"]
            cells = [f"{r['variant']} ({r['what']})", f"{r['params'] / r['dense_params']:.3f}", f"{share:.3f}",
                     f"{1 / share:.2f}×"]
            cells += [f"{r[f'prefill_b{b}']['speedup']:.2f}×" for b in batches]
            cells += [f"{r[f'decode_b{b}']['speedup']:.2f}×" for b in batches]
            decode1 = r[f"decode_b{batches[0]}"]["speedup"]
            cells += [f"{target_speedup(share):.2f}×",
                      "yes" if decode1 >= target_speedup(share) and r[f"prefill_b{batches[0]}"]["speedup"] >= 1
                      else "no",
                      f"{r['weight_bytes'] / r['dense_weight_bytes']:.3f}", f"{r['disk_bytes'] / r['dense_disk_bytes']:.3f}"]
            body.append(cells)
        lines += [table(headers, body), ""]
    lines += ["params, memory, disk: ratios to the dense model (weights in memory; the saved weight file). "
              f"'met': decode at batch {batches[0]} reaches the target and prefill at batch {batches[0]} is no "
              "slower than dense.", "", f"Command: `{env.get('command')}`; {env.get('cpus')} CPUs, "
              f"{env.get('platform')}.", ""]
    return "\n".join(lines)


def rerender(folder: str) -> str:
    import json

    path = Path(folder)
    data = json.loads((path / "results.json").read_text())
    (path / "report.md").write_text(render(data))
    return str(path / "report.md")


def main(argv: list[str] | None = None) -> int:
    return study_main(argv, run=run, parse_args=parse_args, rerender=rerender, default_dir=DEFAULT_DIR)


__all__ = ["main", "parse_args", "render", "run"]
