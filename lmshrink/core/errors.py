"""Exceptions shared across lmshrink, and the "did you mean" helper."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable


class LmshrinkError(Exception):
    """Base class of every error lmshrink raises on purpose."""


class UnknownNameError(LmshrinkError, KeyError):
    """A registry lookup or an option name that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(LmshrinkError, ImportError):
    """An optional backend is not installed."""


class MissingCredentialsError(LmshrinkError):
    """A remote backend (QPU, cloud hardware) has no credentials configured."""


class CredentialsRefusedError(MissingCredentialsError):
    """A remote backend refused the configured credentials, or could not be reached with them."""


class ProblemTooLargeError(LmshrinkError):
    """A solver refuses a problem it cannot finish in reasonable time or memory."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown ``kind`` called ``name``, listing the valid ones."""
    choices = sorted(choices)
    listed = ", ".join(choices) if choices else "(none installed)"
    return UnknownNameError(f"Unknown {kind} {name!r}.{did_you_mean(name, choices)} Valid {kind}s: {listed}.")


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise one clear sentence naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs the Python package {module.split('.')[0]!r}: pip install 'lmshrink[{extra}]'"
        ) from exc
