"""The settings of a prune run, as one typed dataclass, and the checks they get before anything is loaded."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import LmshrinkError, did_you_mean


@dataclass
class PruneConfig:
    """What ``lmshrink prune`` flags and ``lmshrink.prune(...)`` keywords set.

    ``remove`` is a total (``6``) or per-kind counts (``"moe=2,attention=1"``); ``kinds`` limits a total to some
    block kinds. ``method`` (e.g. ``"sleb"``) replaces ``objective`` + ``solver`` by a removal method that
    chooses the blocks itself. ``top_k`` candidates are kept; ``rerank`` re-ranks the first K of them by measured
    calibration loss. ``eval_tasks`` are lm-eval tasks run on the pruned model (``eval_limit`` examples each).
    ``out`` must be empty or absent unless ``overwrite``, which replaces it whole.
    """

    remove: str | int = 6
    kinds: list[str] | None = None
    granularity: str = "layer"
    data: str | list[str] | None = None
    samples: int = 64
    seq_len: int = 128
    objective: str = "fisher"
    objective_options: dict[str, Any] = field(default_factory=dict)
    solver: str = "anneal"
    solver_options: dict[str, Any] = field(default_factory=dict)
    top_k: int = 10
    rerank: int = 0
    seed: int = 0
    out: str | Path | None = None
    overwrite: bool = False
    eval_tokens: int = 16384
    eval_window: int = 512
    evaluate: bool = True
    save: bool = True
    progress: bool = True
    method: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    eval_tasks: str | list[str] | None = None
    eval_limit: int | float | None = None

    def __post_init__(self) -> None:
        for name in ("objective_options", "solver_options", "method_options"):
            setattr(self, name, dict(getattr(self, name) or {}))

    @classmethod
    def from_settings(cls, config: PruneConfig | None = None, **settings: Any) -> PruneConfig:
        """``config`` with ``settings`` replaced (a fresh default config without one); unknown names refused."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in settings:
            if key not in names:
                raise LmshrinkError(f"prune has no setting {key!r}.{did_you_mean(key, names)} Settings: "
                                    f"{', '.join(names)}.")
        return dataclasses.replace(config, **settings) if config is not None else cls(**settings)

    @property
    def num_candidates(self) -> int:
        """How many candidates the solver or method is asked for."""
        return max(self.top_k, self.rerank, 1)

    def check(self) -> None:
        """Refuse settings that cannot give a meaningful run (one sentence each)."""
        _count("--samples", self.samples, 1)
        _count("--seq-len", self.seq_len, 2, " (a sample needs a token to predict from and one to predict)")
        _count("--top-k", self.top_k, 1)
        _count("--rerank", self.rerank, 0, " (0: no re-ranking)")
        _count("--seed", self.seed, 0)
        if self.evaluate:
            _count("--eval-tokens", self.eval_tokens, 2, " (perplexity needs a token to predict from and one to "
                   "predict; --no-eval skips it)")
            _count("--eval-window", self.eval_window, 2)
        if self.eval_limit is not None and (not isinstance(self.eval_limit, numbers.Real) or self.eval_limit <= 0):
            raise LmshrinkError(f"--eval-limit must be a count or a fraction above 0, not {self.eval_limit!r}.")

    def settings(self) -> dict[str, Any]:
        """The settings as recorded in report.json."""
        out = dataclasses.asdict(self)
        out["remove"] = str(self.remove)
        out["out"] = None if self.out is None else str(self.out)
        return out


def _count(flag: str, value: Any, least: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LmshrinkError(f"{flag} must be a whole number, not {value!r}.")
    if value < least:
        raise LmshrinkError(f"{flag} must be at least {least}{why}, not {value}.")
