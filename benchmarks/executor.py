"""Where a study's independent runs execute: one after the other in this process (:class:`Serial`), or as tasks on
a Ray cluster (:class:`RayExecutor`), a local one or an existing one by address.

Both have the same three methods: ``share(value)`` makes a value (a problem) available to the runs once,
``submit(fn, *args)`` schedules ``fn(*args)`` and returns a handle whose ``result()`` gives its value, and
``close()``. A study submits every run, then reads the results in its own order, so its tables do not depend on
where or in which order the runs executed. ``fn`` must be a module-level function of picklable arguments.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: one thread per worker: each worker is given one CPU, and its solver's threads must not compete with the others
WORKER_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                  "NUMBA_NUM_THREADS": "1"}
#: the sentence printed when ``--ray`` is asked for without ray installed
RAY_MISSING = "--ray needs the ray extra: pip install 'lmshrink[ray]'"


class _Deferred:
    """A serial run: computed when its result is first asked for, then kept."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._call: tuple[Callable[..., Any], tuple[Any, ...]] | None = (fn, args)
        self._value: Any = None

    def result(self) -> Any:
        if self._call is not None:
            fn, args = self._call
            self._value = fn(*args)
            self._call = None
        return self._value


class Serial:
    """Runs in this process, one at a time, each when its result is asked for (so a run whose result is never
    read never runs)."""

    name = "serial"
    workers = 1

    def share(self, value: Any) -> Any:
        return value

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Deferred:
        return _Deferred(fn, args)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "serial, in this process"


class _RayResult:
    """A run submitted to Ray: ``result()`` waits for it."""

    def __init__(self, ref: Any) -> None:
        self._ref = ref

    def result(self) -> Any:
        import ray

        return ray.get(self._ref)


def import_ray() -> Any:
    """The ray module, or SystemExit with the one sentence that says how to install it."""
    try:
        import ray
    except ImportError:
        raise SystemExit(RAY_MISSING) from None
    return ray


class RayExecutor:
    """Runs as Ray tasks, one CPU each: on a local cluster of ``workers`` CPUs started here (``address`` None), or
    on the existing cluster at ``address`` (``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``).

    ``code`` lists the folders of the packages the runs import (here the benchmarks package): on a local cluster
    their parents go on the workers' ``PYTHONPATH``; on an existing cluster they are uploaded with the job
    (``py_modules``), and lmshrink itself must be installed on every node. A Ray already initialised in this
    process is used as it is (and left running)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int = 2, code: list[str | Path] = ()) -> None:
        ray = import_ray()
        import logging

        env = dict(WORKER_THREADS)
        runtime_env: dict[str, Any] = {"env_vars": env}
        if address is None:
            paths = [str(Path(c).resolve().parent) for c in code]
            env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, *_pythonpath()]))
            # Ray lowers its workers' priority (nice 15) by default: on a shared machine they would run slower than
            # the same runs in this process
            kwargs: dict[str, Any] = {"num_cpus": workers, "include_dashboard": False,
                                      "_system_config": {"worker_niceness": 0}}
        else:
            runtime_env.update(py_modules=[str(Path(c).resolve()) for c in code], excludes=["results", "__pycache__"])
            kwargs = {"address": address}
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=True, **kwargs)
        self.address = address
        self.workers = int(ray.cluster_resources().get("CPU", workers))
        self._remote: Any = None

    def share(self, value: Any) -> Any:
        import ray

        return ray.put(value)

    def submit(self, fn: Callable[..., Any], *args: Any) -> _RayResult:
        import ray

        if self._remote is None:
            self._remote = ray.remote(num_cpus=1, max_retries=0)(call_with_copies)
        return _RayResult(self._remote.remote(fn, *args))

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()

    def describe(self) -> str:
        where = "a local cluster" if self.address is None else f"the cluster at {self.address}"
        return f"ray, {self.workers} CPUs of {where}"


def call_with_copies(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn`` on its own copies of ``args``: what Ray hands a task can be read-only views of its object store
    (numpy arrays), which a run must neither see as different types (numba compiles again for read-only arrays)
    nor be unable to write."""
    return fn(*copy.deepcopy(args))


def _pythonpath() -> list[str]:
    """This process's PYTHONPATH entries, then the folder lmshrink was imported from (so that workers import the
    same source tree)."""
    env = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    import lmshrink

    return [*env, str(Path(lmshrink.__file__).resolve().parent.parent)]


def make_executor(ray: str | None, workers: int = 2, code: list[str | Path] = ()) -> Serial | RayExecutor:
    """:class:`Serial` when ``ray`` is None; else a :class:`RayExecutor` on a local cluster of ``workers`` CPUs
    (``ray`` = ``"local"``) or on the cluster at the address ``ray``."""
    if ray is None:
        return Serial()
    return RayExecutor(None if ray == "local" else ray, workers, code)
