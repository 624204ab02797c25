"""Time break-even of factored layers: the largest rank at which y = L·(R·x) is faster than the dense y = W·x.

The parameter break-even of an m × n matrix is r(m + n) < mn (r < mn/(m + n); PivGa: r < min(m, n)): below it the
factors store fewer numbers. Fewer numbers need not mean less time: two small products pay two calls, and a
matrix-vector product on the CPU can be bound by call overhead rather than by the weights it reads. So the rank
below which factoring is *faster* is measured, once per device, dtype, thread count, token count and shape, by
timing the dense product against the factored pair at a bisection of ranks (interleaved, medians), and cached in
``<lmshrink cache>/break_even/times.json`` (:func:`lmshrink.cache.cache_dir`; ``LMSHRINK_CACHE=off`` turns the
cache off). A JSON file named by ``LMSHRINK_BREAK_EVEN`` (``{"MxN": rank}``), or ``overrides`` given in code,
replaces measurements for the shapes it names.

:func:`lmshrink.compress.apply.apply_plan` takes a :class:`TimeBreakEven` as ``break_even=``: a matrix whose rank
is above its shape's time break-even stays dense. It is off by default (timings differ between machines and runs;
tests and reproducible runs do not depend on them).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..cache import cache_dir
from ..core.errors import LmshrinkError

#: the environment variable naming a JSON file of break-even ranks ({"MxN": rank}) that replace measurements
OVERRIDE_ENV = "LMSHRINK_BREAK_EVEN"


def device_label(device: torch.device | str) -> str:
    """What a timing depends on: the accelerator's name, or the CPU's and the torch thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}:threads={torch.get_num_threads()}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, device: torch.device, reps: int) -> float:
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def measure_break_even(m: int, n: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       tokens: int = 1, reps: int = 21) -> int:
    """The largest rank r in 0..min(m, n) at which the factored product (m × r)·((r × n)·x) over ``tokens`` input
    vectors takes less time than the dense (m × n)·x, found by bisection (time grows with r); 0 when even rank 1
    is slower."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, n, generator=g).to(device, dtype)
    W = torch.randn(m, n, generator=g).to(device, dtype)
    top = min(m, n)
    L_full = torch.randn(m, top, generator=g).to(device, dtype)
    R_full = torch.randn(top, n, generator=g).to(device, dtype)

    def faster(r: int) -> bool:
        # the left factor laid out column by column, as the factored layers keep it
        L, R = L_full[:, :r].t().contiguous().t(), R_full[:r].contiguous()
        dense = lambda: F.linear(x, W)  # noqa: E731
        factored = lambda: F.linear(F.linear(x, R), L)  # noqa: E731
        dense(), factored()  # warm-up
        d, f = [], []
        for k in range(3):  # interleaved rounds, medians of medians
            pair = (dense, factored) if k % 2 == 0 else (factored, dense)
            for fn in pair:
                (d if fn is dense else f).append(_median_seconds(fn, device, reps))
        return statistics.median(f) < statistics.median(d)

    return largest_rank(top, faster)


def largest_rank(top: int, faster) -> int:
    """The largest r in 0..top with ``faster(r)`` true, by bisection: ``faster`` is assumed true up to some rank and
    false above it (time grows with the rank); r = 0 (nothing to compute) counts as faster."""
    low, high = 0, top  # invariant: faster(low), and faster(r) is false for every r > high
    while low < high:
        mid = (low + high + 1) // 2
        if faster(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _key(m: int, n: int, label: str, dtype: torch.dtype, tokens: int) -> str:
    return f"{label}|{str(dtype).replace('torch.', '')}|tokens={tokens}|{m}x{n}"


def _read_overrides(path: str | Path) -> dict[tuple[int, int], int]:
    try:
        raw = json.loads(Path(path).read_text())
        return {(int(k.split("x")[0]), int(k.split("x")[1])): int(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError, IndexError) as exc:
        raise LmshrinkError(f"{path} (named by {OVERRIDE_ENV}) is not a JSON object of 'MxN': rank ({exc}).") from None


@dataclass
class TimeBreakEven:
    """Time break-even ranks on one device and dtype for ``tokens`` input vectors per call (1: decoding).

    :meth:`max_rank` measures a shape the first time it is asked (then reads the cache); ``overrides`` (shape →
    rank, plus those of the ``LMSHRINK_BREAK_EVEN`` file) are used as given.
    """

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    tokens: int = 1
    overrides: Mapping[tuple[int, int], int] = field(default_factory=dict)
    cache_file: Path | None = None
    measured: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise LmshrinkError(f"The time break-even needs at least 1 token per call, not {self.tokens}.")
        env = os.environ.get(OVERRIDE_ENV)
        self.overrides = {**(_read_overrides(env) if env else {}), **dict(self.overrides)}
        if self.cache_file is None:
            folder = cache_dir()
            self.cache_file = folder / "break_even" / "times.json" if folder is not None else None

    def max_rank(self, m: int, n: int) -> int:
        """The largest rank of an m × n matrix whose factored forward is faster than the dense one."""
        if (m, n) in self.overrides:
            return int(self.overrides[(m, n)])
        key = _key(m, n, device_label(self.device), self.dtype, self.tokens)
        if key not in self.measured:
            stored = self._read_cache()
            if key not in stored:
                stored[key] = measure_break_even(m, n, device=self.device, dtype=self.dtype, tokens=self.tokens)
                self._write_cache(key, stored[key])
            self.measured[key] = int(stored[key])
        return self.measured[key]

    def keeps_dense(self, m: int, n: int, rank: int) -> bool:
        """Whether factoring an m × n matrix at ``rank`` would not make its forward faster."""
        return rank > self.max_rank(m, n)

    def _read_cache(self) -> dict[str, int]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text())
            return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError, TypeError):
            return {}  # an unreadable cache is measured again and rewritten

    def _write_cache(self, key: str, rank: int) -> None:
        if self.cache_file is None:
            return
        data = {**self._read_cache(), key: int(rank)}
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.cache_file)


__all__ = ["OVERRIDE_ENV", "TimeBreakEven", "device_label", "largest_rank", "measure_break_even"]
