"""Forward forms of one factored matrix, timed against each other: which layout makes a factored layer pay.

    python -m benchmarks.inference.forward                 # SmolLM2-135M shapes, CPU float32, one thread
    python -m benchmarks.inference.forward --tokens 1,512 --threads 1 --dtype bfloat16

For each shape (m × n at rank r) and token count: the dense product, the plain pair L·(R·x) with L stored row by row
and column by column, and four PivGa forms of the same rank: *gathered* (y[P̄] = C·y[P], cat, then index_select
into place), the same with C stored column by column, *scatter* (index_copy of y[P] and y[P̄] into an output
buffer) and *gather-free* (E·(B′x) with the m × r left factor laid out once, column by column). A matrix-vector
product with a factor stored column by column streams long rows of its transpose instead of computing dot
products of only r numbers. Forms are timed round-robin (medians); printed as microseconds and as a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

#: (m, n, r): SmolLM2-135M's matrices at ranks near those SVD at ratio 0.6 gives them
SHAPES = [(576, 576, 200), (192, 576, 100), (1536, 576, 250), (576, 1536, 250)]


def forms(m: int, n: int, r: int, tokens: int, dtype: torch.dtype) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, tokens, n, generator=g).to(dtype)
    W = torch.randn(m, n, generator=g).to(dtype)
    L, R = torch.randn(m, r, generator=g).to(dtype), torch.randn(r, n, generator=g).to(dtype)
    C = torch.randn(m - r, r, generator=g).to(dtype)
    by_columns = lambda t: t.t().contiguous().t()  # noqa: E731  (the layout the layers keep their left factors in)
    Lc, Cc = by_columns(L), by_columns(C)
    perm = torch.randperm(m, generator=g)
    inverse = torch.argsort(perm)
    P, Pbar = perm[:r], perm[r:]
    E = by_columns(torch.cat([torch.eye(r, dtype=dtype), C]).index_select(0, inverse))

    def gathered():
        z = F.linear(x, R)
        return torch.cat([z, F.linear(z, C)], -1).index_select(-1, inverse)

    def gathered_by_columns():
        z = F.linear(x, R)
        return torch.cat([z, F.linear(z, Cc)], -1).index_select(-1, inverse)

    def scatter():
        z = F.linear(x, R)
        y = x.new_empty(*x.shape[:-1], m)
        y.index_copy_(-1, P, z)
        return y.index_copy_(-1, Pbar, F.linear(z, C))

    return {"dense": lambda: F.linear(x, W), "plain": lambda: F.linear(F.linear(x, R), L),
            "plain, L by columns": lambda: F.linear(F.linear(x, R), Lc),
            "pivga gathered": gathered, "pivga gathered, C by columns": gathered_by_columns, "pivga scatter": scatter,
            "pivga gather-free": lambda: F.linear(F.linear(x, R), E)}


@torch.inference_mode()
def time_forms(fns: dict[str, object], rounds: int, calls: int) -> dict[str, float]:
    """Median microseconds per call of each form, the forms taken in turn ``rounds`` times (``calls`` each)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.inference.forward", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", default="1,512", help="input vectors per call (default 1,512)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--rounds", type=int, default=15, help="round-robin rounds (default 15)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    lines = ["| m × n, rank | tokens | dense | plain | plain, L by columns | pivga gathered | pivga gathered, C by "
             "columns | pivga scatter | pivga gather-free |", "|---|---|---|---|---|---|---|---|---|"]
    for m, n, r in SHAPES:
        for tokens in (int(t) for t in args.tokens.split(",")):
            us = time_forms(forms(m, n, r, tokens, dtype), args.rounds, 20 if tokens == 1 else 1)
            lines.append(f"| {m} × {n}, {r} | {tokens} | " + " | ".join(f"{v:.4g}" for v in us.values()) + " |")
            print(lines[-1], flush=True)
    print(f"\nmicroseconds per call, medians; {args.dtype}, {args.threads} thread(s)\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
