"""The settings of a prune run, as one typed dataclass, and the checks they get before anything is loaded."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import LmshrinkError, did_you_mean
from ..core.options import Option
from ..devices import Placement, check_save_dtype, resolve_placement

#: the healing steps ``--heal`` names, applied in this order
HEAL_STEPS = ("linear", "kd")
#: ``--heal-option`` keys of linear healing (the others are :class:`~lmshrink.heal.kd.KDConfig` fields)
LINEAR_HEAL_OPTIONS = {"ridge": "linear healing: ridge towards the identity map",
                       "aware": "linear healing: compare candidates after fitting their maps",
                       "aware_samples": "linear healing: calibration samples each candidate's maps are fitted on "
                                        "for the comparison (0: all, and the chosen one keeps its maps; fewer: "
                                        "the chosen one is refitted on all)",
                       "aware_top": "linear healing: how many of the lowest unhealed candidates are compared "
                                    "after healing (0: all)"}

#: What ``lmshrink prune --remove M`` runs when no objective, removal method or candidate source is named: a
#: portfolio of fisher-fo's lowest states and three baselines, chosen on validation windows after linear healing
#: (docs, reference/results.md: healed, 0.69×, 0.58× and 0.55× the best baseline's held-out perplexity on SmolLM2 at
#: M = 6, 8, 10, calibration seeds 0, 1 and 2). Naming
#: ``--objective`` (or ``--method``) runs that alone, e.g. ``--objective fisher``, the paper's method.
DEFAULT_PIPELINE: dict[str, Any] = {
    "objective": "fisher",
    "objective_options": {"first_order": True},
    "candidates": ["block-influence", "norm-ratio", "angular"],
    "rerank": 3,
    "heal": ["linear"],
}


@dataclass
class PruneConfig:
    """What ``lmshrink prune`` flags and ``lmshrink.prune(...)`` keywords set.

    ``remove`` is a total (``6``) or per-kind counts (``"moe=2,attention=1"``); ``kinds`` limits a total to some
    block kinds. ``method`` (e.g. ``"sleb"``) replaces ``objective`` + ``solver`` by a removal method that
    chooses the blocks itself. ``top_k`` candidates are kept; ``rerank`` re-ranks the first K of them by measured
    calibration loss. ``eval_tasks`` are lm-eval tasks run on the pruned model (``eval_limit`` examples each).
    ``out`` must be empty or absent unless ``overwrite``, which replaces it whole.

    ``candidates`` names more sources for the candidate portfolio (``"SOURCE[:K]"``: an objective solved by
    ``solver``, a preset such as ``fisher-fo``, or a removal method); when several candidates compete (``rerank``
    or ``candidates``), the one with the lowest loss on ``validation`` calibration windows disjoint from the
    samples wins. ``heal`` lists healing steps (``"linear"``, ``"kd"``) applied to the pruned model, with
    ``heal_options`` (``ridge``, ``aware`` and the :class:`~lmshrink.heal.kd.KDConfig` fields).

    With ``objective`` and ``method`` both None, the run is :data:`DEFAULT_PIPELINE` (see :meth:`resolved`).

    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and ``dtype`` (``auto``: bfloat16 on a GPU, float32 on the
    CPU) place the model; ``device_map`` (``auto``) spreads one that does not fit one GPU over all of them.
    ``save_dtype`` is the precision of the saved model (``auto``: the source's). A model passed in loaded stays
    where it is, in its dtype, unless ``device`` or ``dtype`` is named.
    """

    remove: str | int = 6
    kinds: list[str] | None = None
    granularity: str = "layer"
    data: str | list[str] | None = None
    samples: int = 64
    seq_len: int = 128
    objective: str | None = None
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
    candidates: list[str] | None = None
    validation: int = 32
    heal: str | list[str] | None = None
    heal_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    save_dtype: str = "auto"

    def __post_init__(self) -> None:
        for name in ("objective_options", "solver_options", "method_options", "heal_options"):
            setattr(self, name, dict(getattr(self, name) or {}))
        if isinstance(self.candidates, str):
            self.candidates = [c for c in self.candidates.replace(",", " ").split() if c]
        if isinstance(self.heal, str):
            self.heal = [h.strip() for h in self.heal.split(",") if h.strip() and h.strip() != "none"]

    @property
    def is_default_pipeline(self) -> bool:
        """True when no objective, removal method or candidate source was named."""
        return self.objective is None and self.method is None and self.candidates is None

    def resolved(self) -> PruneConfig:
        """This config with the default pipeline filled in: with nothing named, all of it; with only candidate
        sources named, its objective as the main source. Settings given explicitly (``heal=[]``, ``rerank``) stay."""
        if self.objective is not None or self.method is not None:
            return self
        defaults = DEFAULT_PIPELINE
        main = dict(objective=defaults["objective"],
                    objective_options={**defaults["objective_options"], **self.objective_options})
        if self.candidates is not None:
            return dataclasses.replace(self, **main)
        # the baselines among the default sources compare hidden states of whole layers
        candidates = list(defaults["candidates"]) if self.granularity == "layer" else []
        return dataclasses.replace(self, **main, candidates=candidates,
                                   rerank=self.rerank or defaults["rerank"],
                                   heal=self.heal if self.heal is not None else
                                   list(defaults["heal"]) if self.granularity == "layer" else [])

    @property
    def chooses(self) -> bool:
        """Whether several candidates compete on the validation windows."""
        return self.rerank > 0 or bool(self.candidates)

    @property
    def heal_steps(self) -> list[str]:
        return list(self.heal or [])

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
        if self.chooses:
            _count("--validation", self.validation, 2, " (a standard error needs two windows)")
        self.check_heal()
        self.placement()
        check_save_dtype(self.save_dtype)
        if self.eval_limit is not None and (not isinstance(self.eval_limit, numbers.Real) or self.eval_limit <= 0):
            raise LmshrinkError(f"--eval-limit must be a count or a fraction above 0, not {self.eval_limit!r}.")

    def placement(self) -> Placement:
        """``device``, ``dtype`` and ``device_map`` checked, with "auto" resolved on this machine."""
        return resolve_placement(self.device, self.dtype, self.device_map)

    def check_heal(self) -> None:
        """Refuse unknown healing steps and options, and KD settings out of range."""
        for step in self.heal_steps:
            if step not in HEAL_STEPS:
                raise LmshrinkError(f"Unknown healing step {step!r} in --heal.{did_you_mean(step, HEAL_STEPS)} "
                                    f"Steps: {', '.join(HEAL_STEPS)} (comma-separated, or none).")
        kd_options, linear_options = self.split_heal_options()
        if "linear" not in self.heal_steps and linear_options:
            raise LmshrinkError(f"--heal-option {next(iter(linear_options))} belongs to linear healing, which --heal "
                                "does not name.")
        if "kd" not in self.heal_steps and kd_options:
            raise LmshrinkError(f"--heal-option {next(iter(kd_options))} belongs to KD healing, which --heal does "
                                "not name.")
        ridge = self.linear_heal_options()["ridge"]
        if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real) or not ridge >= 0:
            raise LmshrinkError(f"--heal-option ridge must be a non-negative number, not {ridge!r}.")
        if "kd" in self.heal_steps:
            self.kd_config()

    def split_heal_options(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``heal_options`` as (KD options, linear options); an unknown key is refused with the known ones."""
        from ..heal.kd import KDConfig

        kd_names = [f.name for f in dataclasses.fields(KDConfig)]
        kd, linear = {}, {}
        for key, value in self.heal_options.items():
            if key in LINEAR_HEAL_OPTIONS:
                linear[key] = value
            elif key in kd_names:
                kd[key] = value
            else:
                known = sorted([*LINEAR_HEAL_OPTIONS, *kd_names])
                raise LmshrinkError(f"Unknown --heal-option {key!r}.{did_you_mean(key, known)} Options: "
                                    f"{', '.join(known)}.")
        return kd, linear

    def linear_heal_options(self) -> dict[str, Any]:
        """Linear healing's options: those given in ``heal_options``, the others at their declared defaults."""
        specs = self.heal_option_specs()
        _, given = self.split_heal_options()
        return {**{name: specs[name].default for name in LINEAR_HEAL_OPTIONS}, **given}

    @staticmethod
    def heal_option_specs() -> dict[str, Any]:
        """The typed ``--heal-option`` declarations: linear healing's and every KDConfig field."""
        from ..heal.kd import KDConfig

        specs = {"ridge": Option(1e-3, LINEAR_HEAL_OPTIONS["ridge"], float, minimum=0.0),
                 "aware": Option(True, LINEAR_HEAL_OPTIONS["aware"], bool),
                 "aware_samples": Option(0, LINEAR_HEAL_OPTIONS["aware_samples"], int, minimum=0),
                 "aware_top": Option(2, LINEAR_HEAL_OPTIONS["aware_top"], int, minimum=0)}
        for f in dataclasses.fields(KDConfig):
            specs[f.name] = Option(f.default, f"KD healing: {f.name}", type(f.default))
        return specs

    def kd_config(self) -> Any:
        """The :class:`~lmshrink.heal.kd.KDConfig` of ``heal_options`` (seeded by ``seed`` unless given)."""
        from ..heal.kd import KDConfig

        kd, _ = self.split_heal_options()
        try:
            return KDConfig(**{"seed": self.seed, **kd})
        except TypeError as exc:
            raise LmshrinkError(f"KD healing: {exc}.") from None

    def heal_aware(self) -> bool:
        """Whether candidates are compared after linear healing."""
        return "linear" in self.heal_steps and self.chooses and bool(self.linear_heal_options()["aware"])

    def heal_aware_samples(self, available: int) -> int | None:
        """How many of the ``available`` calibration samples the heal-aware comparison fits each candidate's maps
        on: ``aware_samples``, or None (all, and the chosen candidate keeps its maps) for 0 or at least all."""
        fit = int(self.linear_heal_options()["aware_samples"])
        return fit if 0 < fit < available else None

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
