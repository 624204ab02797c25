"""The Objective contract: turn a model and calibration text into an optimization problem."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .options import Configurable, Option
from .problem import Problem

if TYPE_CHECKING:  # the core imports no torch
    from .adapter import ArchitectureAdapter


class Objective(Configurable, ABC):
    """Base class of every objective plugin.

    Subclasses set :attr:`name` and :attr:`options` (an options dataclass, see :mod:`lmshrink.core.options`) and
    implement :meth:`build_problem`; callers use :meth:`build`, which validates the options first.
    """

    plugin_kind: ClassVar[str] = "Objective"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Option]] = {}

    def build(self, model: Any, adapter: ArchitectureAdapter, calibration: Any, **options: Any) -> Problem:
        """Build the problem for ``model`` from ``calibration`` (a :class:`lmshrink.data.Calibration`)."""
        opts = self.validate(options)
        return self.build_problem(model, adapter, calibration, **opts)

    @abstractmethod
    def build_problem(self, model: Any, adapter: ArchitectureAdapter, calibration: Any, **options: Any) -> Problem:
        """Build the problem; ``options`` are validated and complete."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
