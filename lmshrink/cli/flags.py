"""Command-line flags generated from settings dataclasses (:mod:`lmshrink.pipeline.settings`).

Every field with a flag becomes one argparse argument whose help, choices and default are the field's; the parsed
values come back as the same field names, so a command builds its config with ``config_from_args(args, Config)``
and renames nothing on the way in.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from ..pipeline.settings import OPTION_METAVAR, ModelSource, flag_of, ordered_fields

C = TypeVar("C")


def flag_fields(settings: type) -> list[dataclasses.Field]:
    """The fields of ``settings`` that have a flag, in the order ``--help`` lists them."""
    return [f for f in ordered_fields(settings) if flag_of(f) is not None]


def add_settings_arguments(parser: argparse.ArgumentParser, settings: type) -> None:
    """One argument per flagged field of the dataclass ``settings``."""
    for f in flag_fields(settings):
        parser.add_argument(flag_of(f), dest=f.name, **_argument(f))


def _argument(f: dataclasses.Field) -> dict[str, Any]:
    """``add_argument``'s keywords for field ``f``: a boolean is a switch (negating one that defaults to True), a
    plugin-options dict a repeatable ``KEY=VALUE``, anything else a value of the field's type."""
    meta = f.metadata
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    kwargs: dict[str, Any] = {"help": meta.get("help") or None}
    if meta.get("options"):
        return {**kwargs, "action": "append", "default": [], "metavar": meta.get("metavar") or OPTION_METAVAR}
    if isinstance(default, bool):
        return {**kwargs, "action": "store_false" if default else "store_true", "default": default}
    kind = meta.get("type") or (type(default) if isinstance(default, (int, float)) else str)
    if kind is str and default is not None and not isinstance(default, list):
        default = str(default)  # as the command line would give it
    kwargs.update(default=default, type=kind)
    for key in ("choices", "metavar", "nargs"):
        if meta.get(key) is not None:
            kwargs[key] = meta[key]
    if meta.get("required"):
        kwargs["required"] = True
        del kwargs["default"]
    return kwargs


def settings_from_args(args: argparse.Namespace, settings: type) -> dict[str, Any]:
    """The values the command line gave the flagged fields of ``settings``, by field name."""
    return {f.name: getattr(args, f.name) for f in flag_fields(settings)}


def config_from_args(args: argparse.Namespace, config: type[C]) -> C:
    """The config class ``config`` built from the command line's values of its flags."""
    return config(**settings_from_args(args, config))


def model_and_settings(settings: type) -> Callable[[argparse.ArgumentParser], None]:
    """The ``add_arguments`` of a command that runs on ``--model`` with the flags of the config class
    ``settings``."""
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_settings_arguments(parser, ModelSource)
        add_settings_arguments(parser, settings)

    return add_arguments

