"""Scale benchmark: time per token and peak memory of each lmshrink stage on random-weight Llama models.

Models are built from their configs (``benchmarks.scale.configs``: SmolLM2-135M/360M and Llama-3.2-1B/3B
shapes, no download) and fed random token ids. Each stage runs in a fresh Python process
(``benchmarks.scale.stages``), so its peak resident set size is its own: interpreter, torch, the model and
whatever the stage allocates. Time per token is the stage's wall time over the tokens it processed.

    python -m benchmarks.scale                                     # 135m, 360m, 1b on the CPU
    python -m benchmarks.scale --sizes 135m --samples 2 --seq-len 64
    python -m benchmarks.scale --sizes 1b,3b --device cuda --dtype bfloat16 --samples 8,32
    python -m benchmarks.scale --render benchmarks/results/scale   # rewrite report.md and plots of a run

Writes ``results.json``, ``report.md`` (the table) and ``scale.png`` (plus ``tokens.png`` when several token
counts ran) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..common import Log, environment, pyplot, study_main, table, write_json
from . import stages

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("load", "gradients", "checkpointed", "pairs", "solve", "removal", "perplexity", "svd")
DEFAULT_DIR = "benchmarks/results/scale"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="135m,360m,1b", help="comma-separated: tiny, 135m, 360m, 1b, 3b")
    p.add_argument("--samples", default="4",
                   help="calibration samples per run; a comma-separated list runs every stage at each count")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sample (default 128)")
    p.add_argument("--batch-size", type=int, default=4, help="samples per forward/backward pass (default 4)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--pairs", type=int, default=2, help="pair removals measured in the pairs stage (default 2)")
    p.add_argument("--svd-layers", type=int, default=1, help="layers whitened in the svd stage (default 1; 0: all)")
    p.add_argument("--remove", type=int, default=0, help="blocks to remove in solve/removal (default N/4)")
    p.add_argument("--solver", default="anneal", help="solver of the solve stage (default anneal)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each stage (0: torch's default)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed to one stage process")
    p.add_argument("--in-process", action="store_true",
                   help="run the stages in this process (quick checks: RSS then includes what earlier stages left)")
    p.add_argument("--out", default=DEFAULT_DIR, help=f"output folder (default {DEFAULT_DIR})")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.samples = [int(s) for s in str(args.samples).split(",") if s.strip()]
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    from .configs import SIZES

    bad = [s for s in args.sizes if s not in SIZES]
    if bad:
        p.error(f"unknown size {bad[0]!r}; choose from {', '.join(SIZES)}")
    return args


def run_stage(spec: dict[str, Any], timeout: float | None = None) -> list[dict[str, Any]]:
    """Run one stage in a fresh Python process; its rows, or one row with the error."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "benchmarks.scale.stages", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"size": spec["size"], "stage": spec["stage"], "error": f"timed out after {timeout} s"}]
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("SCALE-ROWS "):
            return json.loads(line[len("SCALE-ROWS "):])
    tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    if proc.returncode < 0:
        tail = f"killed by signal {-proc.returncode} (out of memory?)"
    return [{"size": spec["size"], "stage": spec["stage"], "error": tail}]


def run(args: argparse.Namespace) -> dict[str, Any]:
    log = Log(args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}
    with tempfile.TemporaryDirectory(prefix="lmshrink-scale-") as work:
        for size in args.sizes:
            for samples in args.samples:
                for stage in args.stages:
                    spec = {"size": size, "stage": stage, "samples": samples, "seq_len": args.seq_len,
                            "batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
                            "pairs": args.pairs, "svd_layers": args.svd_layers, "remove": args.remove,
                            "solver": args.solver, "threads": args.threads, "work_dir": work}
                    got = stages.run(spec) if args.in_process else run_stage(spec, args.timeout)
                    for r in got:
                        r["samples"] = samples
                        log(_progress(r))
                    rows.extend(got)
                for name in ("problem.json", "solution.json"):
                    Path(work, name).unlink(missing_ok=True)
    data = {"settings": settings, "environment": environment("benchmarks.scale"), "rows": rows,
            "wall_s": log.elapsed}
    write_json(out / "results.json", data)
    (out / "report.md").write_text(render(data, out))
    log(f"wrote {out / 'report.md'}")
    return data


def _progress(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['size']} {r['stage']}: ERROR {r['error']}"
    per = f", {r['s_per_token'] * 1e3:.3g} ms/token" if r.get("s_per_token") else ""
    return f"{r['size']} {r['stage']}: {r['wall_s']:.2f} s{per}, peak RSS {r['peak_rss_gib']:.2f} GiB"


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size and token count: the gate-gradient pass over the plain forward pass on the same tokens."""
    out = []
    for r in rows:
        if r.get("stage", "").startswith("gate gradients") and r.get("ratio_to_forward") is not None:
            out.append({"size": r["size"], "params": r.get("params"), "tokens": r["tokens"], "stage": r["stage"],
                        "ratio": r["ratio_to_forward"]})
    return out


def render(data: dict[str, Any], out: Path | None = None) -> str:
    """report.md of a run (and its plots when ``out`` is given)."""
    rows = data["rows"]
    s = data["settings"]
    env = data.get("environment", {})
    cuda = any(r.get("cuda_peak_gib") is not None for r in rows)
    head = ["size", "params (M)", "stage", "tokens", "wall s", "ms/token", "peak RSS GiB", "RSS at start GiB"]
    head += ["CUDA peak GiB"] if cuda else []
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["size"], None, r["stage"], None, None, None, f"error: {r['error']}", None]
                        + ([None] if cuda else []))
            continue
        params = r.get("params")
        per = r.get("s_per_token")
        cells = [r["size"], params / 1e6 if params else None, r["stage"], r.get("tokens"), r["wall_s"],
                 per * 1e3 if per else None, r["peak_rss_gib"], r.get("rss_start_gib")]
        body.append(cells + ([r.get("cuda_peak_gib")] if cuda else []))
    lines = [
        "# Scale benchmark",
        "",
        f"`{env.get('command', 'python -m benchmarks.scale')}` — device {s['device']}, {s['dtype']}, "
        f"{s['seq_len']} tokens per sample, batch {s['batch_size']}, {env.get('cpus', '?')} CPUs, "
        f"torch threads {env.get('torch_threads', '?')}, load average at the end {env.get('load_average', '?')}, "
        f"{data.get('wall_s', 0):.0f} s in all.",
        "",
        "Random-weight Llama models built from their configs; random token ids. Each stage ran in a fresh process "
        "that first built the model: *peak RSS* is that process's peak resident set size during the stage "
        "(interpreter, torch, the model and what the stage allocates; the kernel's peak mark, reset when the stage "
        "began), *RSS at start* its resident size when the stage began. The forward and gate-gradient rows come "
        "from one process, each with its own peak. ms/token = wall time / tokens processed (pairs: every "
        "measurement's tokens).",
        *(["", "**Peak RSS since each process started (the peak mark could not be reset here).**"]
          if any(r.get("peak_since") == "process" for r in rows) else []),
        *(["", "**Run in one process (`--in-process`): the RSS figures include what earlier stages left in it.**"]
          if s.get("in_process") else []),
        "",
        table(head, body, digits=3),
        "",
        "## Gate-gradient pass / forward pass (same tokens, same process)",
        "",
    ]
    lines += [f"- {r['size']} ({(r['params'] or 0) / 1e6:.0f} M parameters), {r['tokens']} tokens, {r['stage']}: "
              f"**{r['ratio']:.2f}×**" for r in ratios(rows)] or ["- not measured"]
    extra = _estimates(rows)
    if extra:
        lines += ["", "## Whole-model estimates", "", *extra]
    if out is not None:
        plots = plot(rows, Path(out))
        lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    lines += ["", "Settings:", "", "```json", json.dumps(s, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def _estimates(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if r.get("stage") == "pairs" and "error" not in r:
            out.append(f"- {r['size']}, pairs: {r['s_per_measurement']:.3g} s per loss measurement on "
                       f"{r['tokens'] // r['measurements']} tokens; the whole objective takes "
                       f"{r['full_objective_measurements']} measurements ≈ {r['full_objective_s_estimate']:.3g} s "
                       f"as whole passes (the mid-stack reuse of `pairs` makes it about a third of that).")
        if r.get("stage") == "solve" and "error" not in r:
            out.append(f"- {r['size']}, solve: {r['solver']} on N = {r['variables']}, M = {r['remove']}: "
                       f"{r['wall_s']:.3g} s (the first call, compiling the solver's kernels: {r['first_call_s']:.3g} s); "
                       f"removed {r['removed']}.")
        if r.get("stage") == "svd whitening" and "error" not in r:
            out.append(f"- {r['size']}, svd: {r['whitened_layers']} of {r['model_layers']} layers whitened; Grams "
                       f"{r['gram_gib_per_layer']:.3g} GiB (float64, one layer's held at a time) and factors "
                       f"{r['factors_gib_per_layer']:.3g} GiB per layer (float32, all kept); all layers ≈ "
                       f"{r['all_layers_s_estimate']:.3g} s and a peak of about model + {r['model_layers']} × factors "
                       f"+ one layer's Grams.")
    return out


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """scale.png: ms/token and peak RSS against parameters, one line per stage; tokens.png when several token
    counts ran."""
    try:
        plt = pyplot()
    except ImportError:
        return []
    good = [r for r in rows if "error" not in r and r.get("params")]
    if not good:
        return []
    made = []
    tokens = sorted({r["samples"] for r in good})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    largest = max(tokens)
    for k, stage in enumerate(dict.fromkeys(r["stage"] for r in good)):
        pts = sorted(((r["params"], r) for r in good if r["stage"] == stage and r["samples"] == largest),
                     key=lambda p: p[0])
        x = [p / 1e6 for p, _ in pts]
        style = {"color": f"C{k % 10}", "marker": "o", "label": stage}
        if any(r.get("s_per_token") for _, r in pts):
            axes[0].plot(x, [(r["s_per_token"] or float("nan")) * 1e3 for _, r in pts], **style)
        axes[1].plot(x, [r["peak_rss_gib"] for _, r in pts], **style)
    for ax, ylabel in zip(axes, ("ms per token", "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"per stage, {largest} samples per run")
    fig.tight_layout()
    made.append(out / "scale.png")
    fig.savefig(made[-1], dpi=110)
    plt.close(fig)
    if len(tokens) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for size in dict.fromkeys(r["size"] for r in good):
            for stage in ("forward", "gate gradients"):
                pts = sorted(((r["tokens"], r) for r in good if r["size"] == size and r["stage"] == stage),
                             key=lambda p: p[0])
                if not pts:
                    continue
                x = [t for t, _ in pts]
                axes[0].plot(x, [r["wall_s"] for _, r in pts], "o-", label=f"{size} {stage}")
                axes[1].plot(x, [r["peak_rss_gib"] for _, r in pts], "o-", label=f"{size} {stage}")
        for ax, ylabel in zip(axes, ("wall s", "peak RSS (GiB)")):
            ax.set_xscale("log")
            ax.set_xlabel("tokens")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        made.append(out / "tokens.png")
        fig.savefig(made[-1], dpi=110)
        plt.close(fig)
    return made


def rerender(folder: str) -> str:
    """Rewrite report.md and the plots of a finished run."""
    out = Path(folder)
    data = json.loads((out / "results.json").read_text())
    path = out / "report.md"
    path.write_text(render(data, out))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    return study_main(argv, run=run, parse_args=parse_args, rerender=rerender, default_dir=DEFAULT_DIR)
