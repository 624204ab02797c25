"""Declared, typed, validated keyword options for solvers, objectives, removal methods and other plugins.

A plugin declares its options once, as a frozen dataclass whose fields are made with :func:`option` (peft-style):
the annotation is the type (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``tuple[float, float]``,
``list[int]``, ``Literal[...]`` for choices), the field default the default. :func:`option_table` reads it into a
mapping ``{name: Option(default, help, type, choices)}``; that mapping is also accepted as a declaration (the
older form, kept for plugins written against it).

Options are checked in one place, :func:`read_options`, whatever form they come in: a mapping from Python, an
options dataclass instance, or ``KEY=VALUE`` strings from the command line. An unknown name gets a suggestion and
the valid names; a value of the wrong type, outside the choices or below the minimum gets one sentence naming the
option and what it accepts. :class:`Configurable`, the base of every plugin contract, reads a plugin's declaration
when its class is created and offers :meth:`~Configurable.validate` and :meth:`~Configurable.parse_options`.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

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


#: options as they are given: a mapping (Python), ``KEY=VALUE`` strings (command line) or an instance of the
#: plugin's options dataclass
GivenOptions = Mapping[str, Any] | Iterable[str] | object | None


def read_options(owner: str, declared: Mapping[str, Option], given: GivenOptions) -> dict[str, Any]:
    """The options ``given``, each checked and converted to its declared type (defaults are not filled in).

    ``given`` is a mapping of Python values, an instance of an options dataclass, or a list of ``KEY=VALUE``
    strings (command line: ``KEY`` may use dashes, ``VALUE`` is parsed by the option's type, ``none`` is None).
    This is the one place options are checked; ``owner`` (e.g. ``"Solver 'anneal'"``) starts every message.
    """
    if given is None:
        return {}
    if isinstance(given, str):
        given = [given]
    if dataclasses.is_dataclass(given) and not isinstance(given, type):
        given = {f.name: getattr(given, f.name) for f in dataclasses.fields(given)}
    from_text = not isinstance(given, Mapping)
    pairs = [_split_item(item) for item in given] if from_text else list(given.items())
    out: dict[str, Any] = {}
    for name, value in pairs:
        opt = check_name(owner, declared, name)
        try:
            out[name] = opt.check(opt.parse(value) if from_text else value)
        except (TypeError, ValueError):
            raise _refuse(owner, name, opt, value) from None
    return out


def _split_item(item: str) -> tuple[str, str]:
    """``("key", "value")`` of a command-line ``KEY=VALUE`` (dashes in the key read as underscores)."""
    if not isinstance(item, str) or "=" not in item:
        raise LmshrinkError(f"Option {item!r} must look like KEY=VALUE.")
    key, value = item.split("=", 1)
    return key.strip().replace("-", "_"), value


def validate_options(owner: str, declared: Mapping[str, Option], given: GivenOptions) -> dict[str, Any]:
    """Every declared option: ``given`` (see :func:`read_options`) over the declared defaults."""
    return {**{name: opt.default for name, opt in declared.items()}, **read_options(owner, declared, given)}


def parse_option_strings(owner: str, declared: Mapping[str, Option], items: list[str]) -> dict[str, Any]:
    """Parse ``["KEY=VALUE", ...]`` from the command line into typed, validated options (see :func:`read_options`)."""
    return read_options(owner, declared, list(items))


class Configurable:
    """What every plugin contract (solver, objective, removal method) shares: declared options, checked in one place.

    A subclass sets :attr:`options` to an options dataclass (its fields made with :func:`option`); when the class
    is created the dataclass becomes :attr:`Options` and :attr:`options` its ``{name: Option}`` table. A mapping of
    :class:`Option` is accepted too (then :attr:`Options` is None).
    """

    #: what kind of plugin it is, as its messages name it ("Solver", "Objective", "Method")
    plugin_kind: ClassVar[str] = "Plugin"
    name: ClassVar[str] = ""
    #: the declared options: an options dataclass, read into this ``{name: Option}`` mapping
    options: ClassVar[Mapping[str, Option]] = {}
    #: the options dataclass, when the plugin declares one
    Options: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("options")
        if declared is not None and not isinstance(declared, property):
            cls.Options = declared if isinstance(declared, type) else None
            cls.options = option_table(declared)

    @property
    def option_owner(self) -> str:
        """How messages about its options name the plugin, e.g. ``Solver 'anneal'``."""
        return f"{self.plugin_kind} {self.name!r}"

    def validate(self, options: GivenOptions) -> dict[str, Any]:
        """Every option: ``options`` (a mapping, an :attr:`Options` instance or ``KEY=VALUE`` strings) over the
        defaults, each checked (one sentence naming a bad one and what it accepts)."""
        return validate_options(self.option_owner, self.options, options)

    def parse_options(self, items: Iterable[str]) -> dict[str, Any]:
        """Only the options of ``KEY=VALUE`` strings (command line), typed and checked."""
        return read_options(self.option_owner, self.options, list(items))


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


class _Number(_Kind):
    """Integers (``integral``; a float with an integer value, as in 1e6 sweeps, is taken) or real numbers."""

    def __init__(self, integral: bool) -> None:
        self.integral = integral

    def check(self, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Bad()
        if not self.integral:
            return float(value)
        if isinstance(value, numbers.Integral) or isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Bad()

    def parse(self, text: str) -> int | float:
        return int(text.strip()) if self.integral else float(text.strip())

    def describe(self) -> str:
        return "an integer" if self.integral else "a number"


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


_SIMPLE: dict[Any, Callable[[], _Kind]] = {bool: _Bool, int: lambda: _Number(True), float: lambda: _Number(False),
                                           str: _Str}


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
