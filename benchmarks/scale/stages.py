"""One stage of the scale benchmark, run in a fresh process so that its peak memory is its own.

``python -m benchmarks.scale.stages SPEC_JSON`` builds the model of ``spec["size"]`` (except for ``solve``, which
works on a saved problem with no model), runs ``spec["stage"]`` through lmshrink's own code and prints one JSON
line: a list of rows, each with the stage's wall time, the tokens it processed, the process's resident set size
when the stage began and its peak during the stage (the kernel's peak mark VmHWM, reset when the stage begins;
where it cannot be reset, ``ru_maxrss``, the peak since the process started), and on a GPU the CUDA peak
allocated during the stage. RSS counts the interpreter, torch and the model as well as what the stage allocates.

Stages: ``load`` (build the model from its config with random weights), ``gradients`` (a plain forward pass on
the calibration tokens, then the gate-gradient pass of the ``fisher`` objective on the same tokens; two rows, each
with its own peak), ``checkpointed`` (the same with gradient checkpointing),
``pairs`` (the measured-loss primitive of the ``pairs`` objective: the base loss and a few pair removals),
``solve`` (the Fisher problem of the ``gradients`` stage, solved for M removals), ``removal`` (the adapter
removes the solved blocks), ``perplexity`` (lmshrink's perplexity on the tokens) and ``svd`` (Gram collection,
whitening and the whitened SVD of the first ``svd_layers`` layers' matrices).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

GIB = 1024**3


def _status_gib(field: str) -> float | None:
    """A ``Vm*`` line of /proc/self/status in GiB (None off Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return None


def rss_gib() -> float | None:
    """Resident set size of this process now, in GiB."""
    return _status_gib("VmRSS")


def reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS mark (VmHWM) of this process to its current RSS; False where that is not
    possible (then the peak is the process's since it started)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_gib() -> float:
    """Peak resident set size in GiB: since the last :func:`reset_peak_rss` (VmHWM), or else since the process
    started (``ru_maxrss``, KiB on Linux, bytes on macOS)."""
    hwm = _status_gib("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / GIB


class Meter:
    """Wall time, peak RSS and CUDA peak of one measured piece of work."""

    def __init__(self, device: str) -> None:
        self.device = device

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def start(self) -> None:
        self._sync()
        self.rss_start = rss_gib()
        self.reset = reset_peak_rss()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        self._sync()
        out: dict[str, Any] = {"wall_s": time.perf_counter() - self.t0, "peak_rss_gib": peak_rss_gib(),
                               "rss_start_gib": self.rss_start, "peak_since": "stage" if self.reset else "process"}
        if self.device.startswith("cuda"):
            import torch

            out["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / GIB
        return out


def calibration_ids(spec: dict[str, Any], vocab_size: int) -> Any:
    """Random token ids (samples × seq_len), the same for every stage of a run."""
    import torch

    g = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    ids = torch.randint(0, vocab_size, (spec["samples"], spec["seq_len"]), generator=g)
    return ids.to(spec["device"])


def _row(spec: dict[str, Any], stage: str, measured: dict[str, Any], tokens: int | None, **facts: Any) -> dict[str, Any]:
    row = {"size": spec["size"], "stage": stage, "tokens": tokens, **measured}
    row["s_per_token"] = measured["wall_s"] / tokens if tokens else None
    row.update(facts)
    return row


def _blocks_to_remove(spec: dict[str, Any], n: int) -> list[int]:
    """The solved removal when the ``solve`` stage wrote one, else ``remove`` evenly spaced blocks."""
    path = Path(spec["work_dir"]) / "solution.json"
    if path.exists():
        return json.loads(path.read_text())["removed"]
    m = spec["remove"] or max(1, n // 4)
    return [round(i * n / m) for i in range(m)]


# --- stages on a built model ---------------------------------------------------------------------------------------
def gradients(spec: dict[str, Any], model: Any, adapter: Any, ids: Any, meter: Meter,
              checkpointing: bool = False) -> list[dict[str, Any]]:
    """A plain forward pass, then the gate-gradient pass on the same tokens (problem saved for ``solve``)."""
    import numpy as np
    import torch

    from lmshrink.core import BinaryQuadraticProblem
    from lmshrink.evaluate.loss import per_sample_loss
    from lmshrink.objectives.fisher import fisher_terms, gate_gradients

    bs, tokens = spec["batch_size"], ids.numel()
    with torch.no_grad():
        per_sample_loss(model, ids[:bs])  # warm-up on one batch: the forward pass is timed warm (the gradient cold)
    meter.start()
    with torch.no_grad():
        for s in range(0, ids.shape[0], bs):
            per_sample_loss(model, ids[s : s + bs])
    fwd = meter.stop()
    meter.start()
    A, losses = gate_gradients(model, adapter, ids, "layer", bs, progress=False, checkpointing=checkpointing)
    grad = meter.stop()
    label = "gate gradients (checkpointed)" if checkpointing else "gate gradients"
    rows = [_row(spec, "forward (checkpointed run)" if checkpointing else "forward", fwd, tokens),
            _row(spec, label, grad, tokens, ratio_to_forward=grad["wall_s"] / fwd["wall_s"],
                 finite=bool(np.isfinite(A).all() and np.isfinite(losses).all()))]
    if not checkpointing:
        blocks = adapter.blocks(model)
        linear, quadratic, _ = fisher_terms(A)
        problem = BinaryQuadraticProblem([b.name for b in blocks], linear, quadratic, 0.0, [],
                                         {"objective": "fisher", "samples": int(A.shape[0])})
        problem.save(Path(spec["work_dir"]) / "problem.json")
    return rows


def pairs(spec: dict[str, Any], model: Any, adapter: Any, ids: Any, meter: Meter) -> list[dict[str, Any]]:
    """The base loss and ``spec["pairs"]`` pair removals, each a gated loss measurement on every token (what the
    ``pairs`` objective measures N(N+1)/2 + 1 times)."""
    import itertools

    from lmshrink.evaluate.loss import calibration_loss

    n = len(adapter.blocks(model))
    chosen = list(itertools.islice(itertools.combinations(range(n), 2), 0, None, max(1, n // 2)))[: spec["pairs"]]
    meter.start()
    calibration_loss(model, ids, adapter=adapter, batch_size=spec["batch_size"])
    for pair in chosen:
        calibration_loss(model, ids, adapter=adapter, removed=pair, batch_size=spec["batch_size"])
    m = meter.stop()
    measurements = 1 + len(chosen)
    per = m["wall_s"] / measurements
    full = 1 + n + n * (n - 1) // 2
    return [_row(spec, "pairs", m, ids.numel() * measurements, measurements=measurements,
                 s_per_measurement=per, full_objective_measurements=full, full_objective_s_estimate=per * full)]


def removal(spec: dict[str, Any], model: Any, adapter: Any, ids: Any, meter: Meter) -> list[dict[str, Any]]:
    """The adapter removes the solved (or evenly spaced) blocks in place."""
    n = len(adapter.blocks(model))
    drop = _blocks_to_remove(spec, n)
    meter.start()
    adapter.remove(model, drop)
    m = meter.stop()
    return [_row(spec, "removal", m, None, removed=drop, blocks_left=len(adapter.blocks(model)))]


def perplexity(spec: dict[str, Any], model: Any, adapter: Any, ids: Any, meter: Meter) -> list[dict[str, Any]]:
    """lmshrink's held-out perplexity on the tokens, windows of ``seq_len``."""
    from lmshrink.evaluate.perplexity import perplexity as ppl

    meter.start()
    out = ppl(model, ids.reshape(-1), window=spec["seq_len"], batch_size=spec["batch_size"], progress=False)
    m = meter.stop()
    return [_row(spec, "perplexity", m, ids.numel(), perplexity=out["perplexity"])]


def svd(spec: dict[str, Any], model: Any, adapter: Any, ids: Any, meter: Meter) -> list[dict[str, Any]]:
    """Whitening statistics and whitened SVD of the matrices of the first ``svd_layers`` decoder layers (0: all),
    one layer at a time as ``svd_factors`` does: Grams of a layer (the layer run on the hidden states of the one
    before), whitening and SVD, Grams freed. The whole-model time is estimated from the layers done."""
    from lmshrink.compress.factoring import factorize
    from lmshrink.compress.gram import grams_by_layer

    path = adapter.layers_path(model)
    n_layers = len(adapter.blocks(model))
    k = min(spec["svd_layers"], n_layers) or n_layers
    prefixes = tuple(f"{path}.{i}." for i in range(k))
    linears = {name: mod for name, mod in adapter.linear_layers(model).items() if name.startswith(prefixes)}
    gram_s = factor_s = 0.0
    gram_bytes = factor_bytes = 0
    kept = []
    meter.start()
    t = time.perf_counter()
    for members, stats in grams_by_layer(model, adapter, linears, ids, batch_size=spec["batch_size"], progress=False):
        gram_bytes = max(gram_bytes, sum(g.numel() * g.element_size() for g in stats.grams))
        gram_s += time.perf_counter() - t
        t = time.perf_counter()
        part = factorize(members, stats, progress=False)
        del stats
        kept.append(part)
        factor_bytes += sum(f.left.numel() * f.left.element_size() + f.right.numel() * f.right.element_size()
                            for f in part.factors.values())
        factor_s += time.perf_counter() - t
        t = time.perf_counter()
    m = meter.stop()
    return [_row(spec, "svd whitening", m, ids.numel(), whitened_layers=k, matrices=len(linears), gram_s=gram_s,
                 factorize_s=factor_s, gram_gib_per_layer=gram_bytes / GIB, factors_gib_per_layer=factor_bytes / k / GIB,
                 all_layers_s_estimate=m["wall_s"] * n_layers / k, model_layers=n_layers)]


MODEL_STAGES = {"gradients": gradients, "pairs": pairs, "removal": removal, "perplexity": perplexity, "svd": svd}


def solve(spec: dict[str, Any], meter: Meter) -> list[dict[str, Any]]:
    """The Fisher problem of the ``gradients`` stage, M removals, solved by ``spec["solver"]`` (no model)."""
    from lmshrink.core import Constraint
    from lmshrink.core.problem import load_problem
    from lmshrink.core.removal import with_constraints
    from lmshrink.plugins import get_solver

    work = Path(spec["work_dir"])
    problem = load_problem(work / "problem.json")
    n = problem.num_variables
    m_remove = spec["remove"] or max(1, n // 4)
    problem = with_constraints(problem, [Constraint(tuple(range(n)), m_remove)])
    solver = get_solver(spec["solver"], problem)
    meter.start()
    solver.solve(problem, num_solutions=1, seed=0)  # the first call compiles the solver's kernels, if any
    first = meter.stop()["wall_s"]
    meter.start()
    result = solver.solve(problem, num_solutions=1, seed=0)
    m = meter.stop()
    best = result.best
    removed = list(best.indices)
    (work / "solution.json").write_text(json.dumps({"removed": removed, "energy": float(best.energy)}))
    return [_row(spec, "solve", m, None, solver=solver.name, variables=n, remove=m_remove, removed=removed,
                 first_call_s=first)]


def run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``spec["stage"]`` and return its rows (each with the model's size facts)."""
    import torch
    import transformers.models.llama.modeling_llama  # noqa: F401 - imported before the load is timed

    from lmshrink.plugins import find_adapter

    from .configs import build_model, parameter_count

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    meter = Meter(spec["device"])
    if spec["stage"] == "solve":
        return solve(spec, meter)
    meter.start()
    model = build_model(spec["size"], dtype=spec["dtype"], device=spec["device"])
    load = meter.stop()
    facts = {"params": parameter_count(model), "layers": model.config.num_hidden_layers, "model_rss_gib": rss_gib()}
    if spec["stage"] == "load":
        return [dict(_row(spec, "load", load, None), **facts)]
    adapter = find_adapter(model)
    ids = calibration_ids(spec, model.config.vocab_size)
    stage = spec["stage"]
    if stage == "checkpointed":
        rows = gradients(spec, model, adapter, ids, meter, checkpointing=True)
    else:
        rows = MODEL_STAGES[stage](spec, model, adapter, ids, meter)
    return [dict(r, **facts) for r in rows]


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    rows = run(spec)
    print("SCALE-ROWS " + json.dumps(rows, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
