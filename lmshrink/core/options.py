"""Declared, validated keyword options for solvers, objectives and other plugins."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from .errors import LmshrinkError, did_you_mean


@dataclass(frozen=True)
class Option:
    """One keyword option: its default, the type a string from the command line is parsed to, and its help."""

    default: Any
    help: str = ""
    type: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None

    def parse(self, text: str) -> Any:
        """Convert a command-line string (``KEY=VALUE``) to the option's type."""
        kind = self.type or (type(self.default) if self.default is not None else str)
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise LmshrinkError(f"{text!r} is not a boolean (use true or false).")
        if text.strip().lower() == "none":
            return None
        return kind(text)


def check_name(owner: str, declared: Mapping[str, Option], name: str) -> Option:
    """The declared option ``name``, or an error with a suggestion and the valid names."""
    if name not in declared:
        valid = ", ".join(sorted(declared)) or "(none)"
        raise LmshrinkError(f"{owner} has no option {name!r}.{did_you_mean(name, declared)} Valid options: {valid}.")
    return declared[name]


def validate_options(owner: str, declared: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``given`` over the declared defaults; reject unknown names and values outside ``choices``."""
    out = {name: opt.default for name, opt in declared.items()}
    for name, value in given.items():
        opt = check_name(owner, declared, name)
        if opt.choices is not None and value not in opt.choices:
            raise LmshrinkError(f"{owner} option {name}={value!r} must be one of {list(opt.choices)}.")
        out[name] = value
    return out


def parse_option_strings(owner: str, declared: Mapping[str, Option], items: list[str]) -> dict[str, Any]:
    """Parse ``["KEY=VALUE", ...]`` from the command line into typed, validated options."""
    parsed: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise LmshrinkError(f"Option {item!r} must look like KEY=VALUE.")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        opt = check_name(owner, declared, key)
        try:
            parsed[key] = opt.parse(value)
        except (TypeError, ValueError) as exc:
            raise LmshrinkError(f"{owner} option {key}: cannot read {value!r}: {exc}") from exc
    validate_options(owner, declared, parsed)  # values outside ``choices``
    return parsed


def describe_options(declared: Mapping[str, Option]) -> list[str]:
    """Human-readable lines ``name=default  help`` for listings."""
    return [f"{name}={opt.default!r}  {opt.help}" for name, opt in declared.items()]
