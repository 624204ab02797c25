"""Installing an example plugin for real in a test (no test collected here): pip builds it from a copy, offline,
into a folder the test puts on sys.path."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def pip_install(source: Path, target: Path) -> None:
    """``pip install --no-deps`` the package at ``source`` into ``target`` (offline: no index, no build isolation),
    building from a copy so that the source tree gets no build/ or egg-info folders."""
    copy = target.parent / f"{source.name}-src"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(target), str(copy)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=target.parent)
    if done.returncode != 0:
        pytest.fail(f"pip could not install {source.name}:\n{done.stdout}\n{done.stderr}")


def forget_modules(package: str) -> None:
    """Drop ``package`` and its submodules from sys.modules, so the next import reads the fresh install."""
    for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
