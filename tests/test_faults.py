"""A prune killed at any stage leaves nothing half-written, and the next run completes and cleans up.

The run is a subprocess holding at a named point (``LMSHRINK_TEST_HOLD=<point>:<file>``: it writes the file on
arrival and waits there), so the signal lands exactly at that stage however slow the machine is. The rerun is
the same command in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lmshrink
from lmshrink.cli import main
from lmshrink.staging import HOLD_ENV, TEMP_MARK

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(lmshrink.__file__).resolve().parents[1]
#: generous: the subprocess imports torch and transformers on a busy machine before it reaches the point
ARRIVAL_TIMEOUT_S = 600


def _args(model: Path, text: Path, out: Path) -> list[str]:
    return ["prune", "--model", str(model), "--data", str(text), "--remove", "2", "--samples", "4", "--seq-len",
            "16", "--eval-tokens", "64", "--objective", "fisher", "--solver", "exact", "--quiet", "--out", str(out)]


def _default_sigint() -> None:
    """In the child before exec: SIGINT handled and unblocked, whatever the test process inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _hold(argv: list[str], point: str, marker: Path, cache: Path) -> subprocess.Popen:
    """Start ``python -m lmshrink.cli argv`` and return once it waits at ``point``."""
    env = {**os.environ, "LMSHRINK_CACHE": str(cache), HOLD_ENV: f"{point}:{marker}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "lmshrink.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before reaching {point!r}: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run did not reach {point!r} in {ARRIVAL_TIMEOUT_S} s")
        time.sleep(0.1)
    return proc


def _temp_entries(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob(f"*{TEMP_MARK}*")]


def _assert_complete(out: Path) -> None:
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["errors"] == []
    assert report["perplexity_after"]["tokens"] > 0
    assert (out / "report.md").exists() and (out / "problem.json").exists()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "model" / name).exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
@pytest.mark.parametrize("point", ["measurement", "solve", "save"])
def test_killed_prune_leaves_nothing_and_the_rerun_completes(point, sig, tiny_model_dir, text_file, tmp_path,
                                                              monkeypatch):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    out = runs / "out"
    argv = _args(tiny_model_dir, text_file, out)
    proc = _hold(argv, point, tmp_path / "reached", cache)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)  # reads stderr as it comes: a full pipe cannot stall the child
    code, stderr = proc.returncode, err.decode()
    if sig == signal.SIGINT:
        assert code == 130 and "lmshrink: interrupted" in stderr and "Traceback" not in stderr
        assert _temp_entries(runs, cache) == []  # an interrupted run cleans up after itself
    else:
        assert code == -signal.SIGKILL
        if point != "solve":  # killed while writing: its temporary file or directory is left behind
            assert _temp_entries(runs, cache)
    assert not out.exists()

    monkeypatch.setenv("LMSHRINK_CACHE", str(cache))
    assert main(argv) == 0
    _assert_complete(out)
    assert _temp_entries(runs, cache) == []


def test_killed_gguf_conversion_leaves_no_orphan_in_the_cache(tmp_path, monkeypatch):
    """The de-quantized default model is cached through a temporary directory of the converting process; a
    conversion killed mid-save leaves it behind, and the next conversion removes it."""
    from lmshrink.models import LoadedModel, _store_conversion
    from tiny import tiny_llama, tiny_tokenizer

    target = tmp_path / "cache" / "models" / "converted"
    script = ("import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from tiny import tiny_llama, "
              "tiny_tokenizer; from lmshrink.models import LoadedModel, _store_conversion; "
              f"_store_conversion(LoadedModel(tiny_llama(2), tiny_tokenizer(), 'tiny'), Path({str(target)!r}))")
    env = {**os.environ, HOLD_ENV: f"convert:{tmp_path / 'reached'}"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while not (tmp_path / "reached").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=60)
    assert _temp_entries(target.parent) and not target.exists()

    _store_conversion(LoadedModel(tiny_llama(2), tiny_tokenizer(), "tiny"), target)
    assert _temp_entries(target.parent) == []
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in target.iterdir()}
