"""Declared, typed, validated keyword options for solvers, objectives and other plugins.

Options are declared once, in either of two forms that validate the same way:

* a frozen dataclass whose fields are made with :func:`option` (peft-style): the annotation is the type
  (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``tuple[float, float]``, ``list[int]``, ``Literal[...]`` for
  choices), the field default the default; :func:`option_table` reads it into the mapping below;
* a mapping ``{name: Option(default, help, type, choices)}``, the older form (still accepted everywhere).

The same checks run for Python calls (:func:`validate_options`) and for ``KEY=VALUE`` strings from the command line
(:func:`parse_option_strings`): an unknown name gets a suggestion and the valid names, a value of the wrong type,
outside the choices or below the minimum gets one sentence naming the option and what it accepts.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Literal

from .errors import LmshrinkError, did_you_mean

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class _Bad(ValueError):
    """A value the option does not accept (the message is filled in by the caller)."""


@dataclass(frozen=True)
class Option:
    """One keyword option: its default, help, type and the values it accepts.

    ``type`` is a class (``int``, ``float``, ``bool``, ``str``), a typing form (``tuple[float, float]``,
    ``list[int]``, ``Literal["a", "b"]``, ``X | None``) or, for command-line strings only, a parser
    ``str -> value``. Without it the type of the default is used. ``minimum`` bounds numbers from below.
    ``nullable`` says whether None is accepted (options read from a dataclass set it from their annotation; left
    unset, None is accepted, as it always was for mapping declarations).
    """

    default: Any
    help: str = ""
    type: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    nullable: bool | None = None

    # --- what the option accepts ---------------------------------------------------------------------------------
    def _kind(self) -> _Kind:
        spec = self.type
        if spec is None and self.default is not None and type(self.default) in (bool, int, float, str):
            spec = type(self.default)
        kind = _kind_of(spec)
        if self.choices is not None:
            kind = _Choices(tuple(self.choices), kind)
        if self.minimum is not None:
            kind = _AtLeast(self.minimum, kind)
        return kind

    def _accepts_none(self) -> bool:
        if self.nullable is not None:
            return self.nullable
        return self.choices is None or None in self.choices

    def allowed(self) -> tuple[Any, ...] | None:
        """The values the option is limited to (its choices or ``Literal`` values), if any."""
        kind = self._kind()
        while isinstance(kind, (_AtLeast, _Parser)) and kind.inner is not None:
            kind = kind.inner
        return kind.choices if isinstance(kind, _Choices) else None

    def describe(self) -> str:
        """What the option accepts, as a phrase: 'an integer ≥ 1', 'one of 'a', 'b'', '... or None'."""
        what = self._kind().describe()
        return what + (" or None" if self._accepts_none() and self.default is not None else "")

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's type; raises ValueError when the option does not accept it."""
        if value is None:
            if self._accepts_none():
                return None
            raise _Bad()
        return self._kind().check(value)

    def parse(self, text: str) -> Any:
        """Convert a command-line string (``KEY=VALUE``) to the option's type (``none`` is None)."""
        if text.strip().lower() == "none" and self._accepts_none():
            return None
        return self._kind().parse(text)


def option(default: Any, help: str = "", *, choices: tuple[Any, ...] | None = None, minimum: float | None = None,
           parse: Callable[[str], Any] | None = None) -> Any:
    """A field of an options dataclass: its default and help; the annotation gives the type.

    ``parse`` reads a command-line string where the type's own parsing does not fit.
    """
    meta = {"help": help, "choices": choices, "minimum": minimum, "parse": parse}
    return dataclasses.field(default=default, metadata={"lmshrink": meta})


def option_table(options: Any) -> dict[str, Option]:
    """The ``{name: Option}`` mapping of an options dataclass (or a mapping, returned as a dict)."""
    if isinstance(options, Mapping):
        return dict(options)
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"options must be a mapping of Option or a dataclass, not {options!r}")
    hints = typing.get_type_hints(options)
    table = {}
    for f in dataclasses.fields(options):
        meta = f.metadata.get("lmshrink", {})
        default = f.default if f.default is not dataclasses.MISSING else None
        hint = hints.get(f.name, Any)
        spec: Any = _ParsedBy(hint, meta["parse"]) if meta.get("parse") else hint
        table[f.name] = Option(default, meta.get("help", ""), spec, meta.get("choices"), meta.get("minimum"),
                               nullable=_optional(hint))
    return table


def check_name(owner: str, declared: Mapping[str, Option], name: str) -> Option:
    """The declared option ``name``, or an error with a suggestion and the valid names."""
    if name not in declared:
        valid = ", ".join(sorted(declared)) or "(none)"
        raise LmshrinkError(f"{owner} has no option {name!r}.{did_you_mean(name, declared)} Valid options: {valid}.")
    return declared[name]


def _refuse(owner: str, name: str, opt: Option, value: Any) -> LmshrinkError:
    hint = ""
    allowed = opt.allowed()
    if isinstance(value, str) and allowed:
        close = did_you_mean(value, [str(c) for c in allowed]).strip().rstrip("?")
        hint = f" ({close[0].lower()}{close[1:]}?)" if close else ""
    return LmshrinkError(f"{owner} option {name} must be {opt.describe()}, not {value!r}{hint}.")


def validate_options(owner: str, declared: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``given`` over the declared defaults, each checked and converted to its option's type."""
    out = {name: opt.default for name, opt in declared.items()}
    for name, value in given.items():
        opt = check_name(owner, declared, name)
        try:
            out[name] = opt.check(value)
        except (TypeError, ValueError):
            raise _refuse(owner, name, opt, value) from None
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
            parsed[key] = opt.check(opt.parse(value))
        except (TypeError, ValueError):
            raise _refuse(owner, key, opt, value) from None
    return parsed


def describe_options(declared: Mapping[str, Option]) -> list[str]:
    """Human-readable lines ``name=default  help`` for listings."""
    return [f"{name}={opt.default!r}  {opt.help}" for name, opt in declared.items()]


# --- kinds of values -----------------------------------------------------------------------------------------------
class _Kind:
    """How values of one type are checked (Python calls), parsed (command line) and described."""

    def check(self, value: Any) -> Any:
        return value

    def parse(self, text: str) -> Any:
        return self.check(text)

    def describe(self) -> str:
        return "any value"


class _Any(_Kind):
    def parse(self, text: str) -> Any:
        return text


class _Bool(_Kind):
    def check(self, value: Any) -> bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
        raise _Bad()

    def parse(self, text: str) -> bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise _Bad()

    def describe(self) -> str:
        return "true or false"


class _Int(_Kind):
    def check(self, value: Any) -> int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():  # 1e6 sweeps
            return int(value)
        raise _Bad()

    def parse(self, text: str) -> int:
        return int(text.strip())

    def describe(self) -> str:
        return "an integer"


class _Float(_Kind):
    def check(self, value: Any) -> float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise _Bad()

    def parse(self, text: str) -> float:
        return float(text.strip())

    def describe(self) -> str:
        return "a number"


class _Str(_Kind):
    def check(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        raise _Bad()

    def parse(self, text: str) -> str:
        return text

    def describe(self) -> str:
        return "a string"


class _Sequence(_Kind):
    """``tuple[X, Y]``, ``tuple[X, ...]`` or ``list[X]``; on the command line, comma-separated values."""

    def __init__(self, items: list[_Kind], length: int | None, make: type) -> None:
        self.items, self.length, self.make = items, length, make

    def check(self, value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) and not hasattr(value, "tolist"):
            raise _Bad()
        values = list(value.tolist() if hasattr(value, "tolist") else value)
        if self.length is not None and len(values) != self.length:
            raise _Bad()
        kinds = self.items if self.length is not None else self.items * len(values)
        return self.make(k.check(v) for k, v in zip(kinds, values))

    def parse(self, text: str) -> Any:
        parts = [p for p in text.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",")
                 if p.strip()]
        kinds = self.items if self.length is not None else self.items * len(parts)
        if len(parts) != len(kinds):
            raise _Bad()
        return self.check([k.parse(p) for k, p in zip(kinds, parts)])

    def describe(self) -> str:
        if self.length is not None:
            names = {"an integer": "integers", "a number": "numbers", "a string": "strings"}
            what = self.items[0].describe()
            same = all(k.describe() == what for k in self.items)
            return f"{self.length} {names.get(what, 'values')} (a,b)" if same else "a tuple"
        return f"a list of {self.items[0].describe().split(' ', 1)[-1]}s (a,b,...)"


class _Choices(_Kind):
    def __init__(self, choices: tuple[Any, ...], inner: _Kind) -> None:
        self.choices, self.inner = choices, inner

    def check(self, value: Any) -> Any:
        if value in self.choices:
            return value
        raise _Bad()

    def parse(self, text: str) -> Any:
        for c in self.choices:
            if str(c) == text.strip():
                return c
        raise _Bad()

    def describe(self) -> str:
        return f"one of {list(self.choices)}"


class _AtLeast(_Kind):
    def __init__(self, minimum: float, inner: _Kind) -> None:
        self.minimum, self.inner = minimum, inner

    def check(self, value: Any) -> Any:
        value = self.inner.check(value)
        if value < self.minimum:
            raise _Bad()
        return value

    def parse(self, text: str) -> Any:
        return self.check(self.inner.parse(text))

    def describe(self) -> str:
        m = self.minimum
        return f"{self.inner.describe()} ≥ {int(m) if float(m).is_integer() else m}"


class _Parser(_Kind):
    """A parser callable for command-line strings; Python values are taken as they are."""

    def __init__(self, parse: Callable[[str], Any], inner: _Kind | None = None) -> None:
        self.parser, self.inner = parse, inner

    def check(self, value: Any) -> Any:
        return self.inner.check(value) if self.inner is not None else value

    def parse(self, text: str) -> Any:
        return self.parser(text)

    def describe(self) -> str:
        return self.inner.describe() if self.inner is not None else "a value its parser reads"


@dataclass(frozen=True)
class _ParsedBy:
    """A type annotation together with a custom command-line parser (see :func:`option`)."""

    hint: Any
    parse: Callable[[str], Any]


_SIMPLE: dict[Any, type[_Kind]] = {bool: _Bool, int: _Int, float: _Float, str: _Str}


def _optional(spec: Any) -> bool:
    """Whether a typing form admits None (``X | None``, ``Optional[X]``)."""
    if isinstance(spec, _ParsedBy):
        spec = spec.hint
    return _is_union(spec) and type(None) in typing.get_args(spec)


def _is_union(spec: Any) -> bool:
    return typing.get_origin(spec) is typing.Union or isinstance(spec, types.UnionType)


def _kind_of(spec: Any) -> _Kind:
    if isinstance(spec, _ParsedBy):
        return _Parser(spec.parse, _kind_of(spec.hint))
    if spec is None or spec is Any:
        return _Any()
    if spec in _SIMPLE:
        return _SIMPLE[spec]()
    if _is_union(spec):
        args = [a for a in typing.get_args(spec) if a is not type(None)]
        return _kind_of(args[0]) if len(args) == 1 else _Any()
    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin is Literal:
        return _Choices(tuple(args), _Any())
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return _Sequence([_kind_of(args[0])], None, tuple)
        return _Sequence([_kind_of(a) for a in args], len(args), tuple)
    if origin is list:
        return _Sequence([_kind_of(args[0]) if args else _Any()], None, list)
    if callable(spec):
        return _Parser(spec)
    return _Any()
