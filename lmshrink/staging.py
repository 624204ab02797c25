"""Files and directories that are either complete or absent.

Everything lmshrink writes that takes time (an output directory, a cache entry, a converted model) is written
under a temporary name next to its target and renamed into place, which is atomic on one file system. The
temporary name carries the writer's machine and process id, ``.<name>.lmshrink-tmp-<host>.<pid>-<token>``
(``<host>`` a short hash of the host name): a process that was killed (``kill -9``) cannot clean up after
itself, so the next run on the same machine that writes into the same folder removes every temporary entry
whose process is no longer running (:func:`remove_orphans`). Entries of other machines (a shared file system)
are left alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .core.errors import LmshrinkError

#: what marks a temporary name; followed by ``<host>.<pid>-<token>``
TEMP_MARK = ".lmshrink-tmp-"
_TEMP_NAME = re.compile(re.escape(TEMP_MARK) + r"([0-9a-f]{6})\.(\d+)-[0-9a-f]{8}")
#: test hook: ``<point>:<file>`` makes :func:`checkpoint` announce reaching ``<point>`` in ``<file>`` and wait
HOLD_ENV = "LMSHRINK_TEST_HOLD"


def host_tag() -> str:
    """A short hash of this machine's host name, part of every temporary name."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temp_path(target: str | Path, suffix: str = "") -> Path:
    """A fresh temporary path next to ``target``, named after it, this machine and this process."""
    target = Path(target)
    return target.with_name(f".{target.name}{TEMP_MARK}{host_tag()}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_orphans(folder: str | Path) -> list[Path]:
    """Remove the temporary files and directories in ``folder`` whose writing process is gone; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, host = [], host_tag()
    for entry in folder.iterdir():
        match = _TEMP_NAME.search(entry.name)
        if match is None or match.group(1) != host or pid_alive(int(match.group(2))):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old or the new file."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) back for a few renames, so they are not cut in half; delivered afterwards."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


#: what an earlier run left in an output directory: ``overwrite`` replaces only a directory holding one of these
RUN_OUTPUTS = ("report.json", "problem.json", "model")


def check_output_dir(target: str | Path, overwrite: bool) -> None:
    """Refuse an output directory that already holds files, unless ``overwrite`` (it is then replaced whole).

    ``overwrite`` replaces only an earlier run's output (a directory holding report.json, problem.json or model/),
    never the working directory or one above it.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise LmshrinkError(f"--out {target} is a file, not a directory.")
    names = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if not names:
        return
    if not overwrite:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise LmshrinkError(f"--out {target} already holds files ({shown}); pass --overwrite to replace it, or "
                            "choose another directory.")
    cwd = Path.cwd().resolve()
    if target.resolve() == cwd or target.resolve() in cwd.parents or not set(names) & set(RUN_OUTPUTS):
        raise LmshrinkError(f"--overwrite replaces only an earlier run's output directory (with report.json, "
                            f"problem.json or model/), and {target} is not one; remove it yourself if it should go.")


class StagedDir:
    """A directory built under a temporary name next to ``target`` and renamed to ``target`` by :meth:`commit`.

    ``with StagedDir(out) as stage: write into stage.path ...; stage.commit()``. Leaving the block without a
    commit (an error, Ctrl-C) removes the temporary directory, so ``target`` is either complete or untouched.
    With ``overwrite`` an existing ``target`` is replaced whole at the commit; without it, a non-empty one is
    refused.
    """

    def __init__(self, target: str | Path, *, overwrite: bool = False) -> None:
        self.target = Path(target)
        self.overwrite = overwrite
        self.path = temp_path(self.target)
        self.committed = False

    def __enter__(self) -> StagedDir:
        check_output_dir(self.target, self.overwrite)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(self.target.parent)
        self.path.mkdir()
        return self

    def commit(self) -> Path:
        """Rename the finished directory to ``target`` (replacing it with ``overwrite``); returns ``target``."""
        check_output_dir(self.target, self.overwrite)
        with deferred_interrupts():
            old = None
            if self.target.exists():  # empty, or replaced whole with overwrite
                old = temp_path(self.target)
                os.replace(self.target, old)
            os.replace(self.path, self.target)
            self.committed = True
        if old is not None:
            _remove(old)
        return self.target

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            _remove(self.path)


def checkpoint(point: str) -> None:
    """A named point in a long run where tests interrupt it (``LMSHRINK_TEST_HOLD=<point>:<file>``).

    Does nothing unless that variable names ``point``; then writes ``<file>`` and waits (up to 10 minutes) for
    the test to send a signal, so a kill lands exactly there however slow the machine is.
    """
    hold = os.environ.get(HOLD_ENV)
    if not hold or hold.partition(":")[0] != point:
        return
    Path(hold.partition(":")[2]).write_text(str(os.getpid()))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.05)
