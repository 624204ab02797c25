"""The settings of a prune run, as one typed dataclass, and the checks they get before anything is loaded."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

from ..core.errors import LmshrinkError, did_you_mean
from ..core.options import option, option_table, parse_option_strings
from .settings import RunSettings, SavedModelSettings, check_count, count_or_fraction, setting

#: the healing steps ``--heal`` names, applied in this order
HEAL_STEPS = ("linear", "kd")
@dataclass(frozen=True)
class LinearHealOptions:
    """The ``--heal-option`` settings of linear healing (the others are :class:`~lmshrink.heal.kd.KDConfig` fields)."""

    ridge: float = option(1e-3, "linear healing: ridge towards the identity map", minimum=0.0)
    aware: bool = option(True, "linear healing: compare candidates after fitting their maps")
    aware_samples: int = option(0, "linear healing: calibration samples each candidate's maps are fitted on for the "
                                   "comparison (0: all, and the chosen one keeps its maps; fewer: the chosen one is "
                                   "refitted on all)", minimum=0)
    aware_top: int = option(2, "linear healing: how many of the lowest unhealed candidates are compared after "
                               "healing (0: all)", minimum=0)


#: ``--heal-option`` keys of linear healing, with their help
LINEAR_HEAL_OPTIONS = {name: opt.help for name, opt in option_table(LinearHealOptions).items()}

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
class PruneConfig(RunSettings, SavedModelSettings):
    """What ``lmshrink prune`` flags and ``lmshrink.prune(...)`` keywords set: each field's help is its flag's
    (``lmshrink prune --help``); the shared ones come from :class:`~lmshrink.pipeline.settings.RunSettings`.

    With ``objective`` and ``method`` both None, the run is :data:`DEFAULT_PIPELINE` (see :meth:`resolved`).
    ``method`` replaces ``objective`` + ``solver``; when several candidates compete (``rerank`` or
    ``candidates``), the one with the lowest loss on the ``validation`` windows wins. A model passed in loaded
    stays where it is, in its dtype, unless ``device`` or ``dtype`` is named.

    Plugin options (``solver_options``, ``objective_options``, ``method_options``) may also be given as the
    command line's ``KEY=VALUE`` strings; the request stage parses them against the plugin that takes them.
    """

    command = "prune"

    remove: str | int = setting(6, "what to remove: a number of blocks (6), a share of the decoder's parameters "
                                   "(25%%), a number of parameters (30M), or per kind (moe=2,attention=50%%); a budget "
                                   "in parameters removes at least that much and less than one smallest unit more; "
                                   "default %(default)s", type=str)
    kinds: list[str] | None = setting(None, "comma-separated block kinds a total may remove from (others kept)")
    granularity: str = setting("layer", "layer (whole decoder layers) or sublayer (attention and MLP apart)")
    objective: str | None = setting(None, "objective (see `lmshrink plugins`); naming one runs it alone (--objective "
                                          "fisher: the paper's method). Default: the default pipeline (README, "
                                          "'Block removal')")
    objective_options: dict[str, Any] = setting(
        help="objective option, e.g. first_order=true (fisher: add the first-order term, which chooses better "
             "removals from M ≈ 6 on; see README)", flag="--objective-option", options=True, default_factory=dict)
    solver: str = setting("anneal", "solver (see `lmshrink plugins`); default %(default)s")
    solver_options: dict[str, Any] = setting(help="solver option", flag="--option", options=True,
                                             default_factory=dict)
    top_k: int = setting(10, "candidates kept from the solver (default %(default)s)")
    rerank: int = setting(0, "choose among the K lowest-energy candidates by measured loss on the validation "
                             "windows", metavar="K")
    candidates: list[str] | None = setting(
        None, "more candidate sources, chosen among by validation loss: objectives (solved by --solver), presets "
              "(fisher-fo) or removal methods (sleb, angular, surrogate), e.g. fisher-fo:10 sleb",
        nargs="+", metavar="SOURCE[:K]")
    validation: int = setting(32, "calibration windows, disjoint from the samples, that candidates are compared on "
                                  "(default %(default)s)")
    heal: str | list[str] | None = setting(None, "heal the pruned model: linear (least-squares maps folded into the "
                                                 "weights), kd (distillation from the unpruned model), linear,kd, or "
                                                 "none", metavar="STEPS")
    heal_options: dict[str, Any] = setting(help="healing option: ridge, aware (linear); steps, lr, temperature, method "
                                                "(lora|full), lora_rank, batch_size, top_k (kd)",
                                           flag="--heal-option", options=True, default_factory=dict)
    method: str | None = setting(None, "a removal method instead of objective + solver: sleb, blockpruner, evopress, "
                                       "angular, block-influence-iterative (the one-shot baselines are objectives: "
                                       "--objective block-influence or norm-ratio)")
    method_options: dict[str, Any] = setting(help="removal-method option", flag="--method-option", options=True,
                                             default_factory=dict)
    eval_tasks: str | list[str] | None = setting(None, "lm-eval tasks to run on the pruned model, e.g. "
                                                       "lmshrink_pydoc_cloze (offline) or hellaswag", nargs="+",
                                                 metavar="TASK")
    eval_limit: int | float | None = setting(None, "examples per lm-eval task (count, or fraction < 1)",
                                             type=count_or_fraction)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.heal_options, list):
            self.heal_options = parse_option_strings("Healing", self.heal_option_specs(), self.heal_options)
        if isinstance(self.kinds, str):
            self.kinds = [k.strip() for k in self.kinds.split(",") if k.strip()]
        if isinstance(self.candidates, str):
            self.candidates = [c for c in self.candidates.replace(",", " ").split() if c]
        if isinstance(self.heal, str):
            self.heal = heal_steps_of(self.heal)

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

    @property
    def num_candidates(self) -> int:
        """How many candidates the solver or method is asked for."""
        return max(self.top_k, self.rerank, 1)

    def check(self) -> None:
        """Refuse settings that cannot give a meaningful run (one sentence each)."""
        self.check_run()
        check_count("--top-k", self.top_k, 1)
        check_count("--rerank", self.rerank, 0, " (0: no re-ranking)")
        if self.chooses:
            check_count("--validation", self.validation, 2, " (a standard error needs two windows)")
        self.check_option_owners()
        self.check_heal()
        self.check_save_dtype()
        if self.eval_limit is not None and (not isinstance(self.eval_limit, numbers.Real) or self.eval_limit <= 0):
            raise LmshrinkError(f"--eval-limit must be a count or a fraction above 0, not {self.eval_limit!r}.")

    def check_option_owners(self) -> None:
        """Refuse solver or objective options beside a removal method, which replaces both."""
        if self.method is not None and (self.solver_options or self.objective_options):
            raise LmshrinkError("--option and --objective-option set the solver and the objective, which --method "
                                "replaces; give the method's options with --method-option.")

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
        """The typed ``--heal-option`` declarations: :class:`LinearHealOptions` and every KDConfig field."""
        from ..heal.kd import KDConfig

        return {**option_table(LinearHealOptions), **option_table(KDConfig)}

    def kd_config(self) -> Any:
        """The :class:`~lmshrink.heal.kd.KDConfig` of ``heal_options`` (seeded by ``seed`` unless given)."""
        kd, _ = self.split_heal_options()
        return kd_config(self.seed, kd)

    def heal_aware(self) -> bool:
        """Whether candidates are compared after linear healing."""
        return "linear" in self.heal_steps and self.chooses and bool(self.linear_heal_options()["aware"])

    def heal_aware_samples(self, available: int) -> int | None:
        """How many of the ``available`` calibration samples the heal-aware comparison fits each candidate's maps
        on: ``aware_samples``, or None (all, and the chosen candidate keeps its maps) for 0 or at least all."""
        fit = int(self.linear_heal_options()["aware_samples"])
        return fit if 0 < fit < available else None

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in report.json (``remove`` as the command line writes it)."""
        return {**super().to_dict(), "remove": str(self.remove)}

    def settings(self) -> dict[str, Any]:
        """The settings as recorded in report.json (:meth:`to_dict`)."""
        return self.to_dict()


def heal_steps_of(value: str) -> list[str]:
    """The healing steps of ``--heal``'s comma-separated ``value`` ("none" names none)."""
    return [h.strip() for h in value.split(",") if h.strip() and h.strip() != "none"]


def kd_config(seed: int, options: dict[str, Any]) -> Any:
    """The :class:`~lmshrink.heal.kd.KDConfig` of KD healing ``options``, seeded by ``seed`` unless given."""
    from ..heal.kd import KDConfig

    try:
        return KDConfig(**{"seed": seed, **options})
    except TypeError as exc:
        raise LmshrinkError(f"KD healing: {exc}.") from None


def kd_option_specs() -> dict[str, Any]:
    """The typed options of KD healing (``lmshrink heal --heal-option``): every KDConfig field."""
    return {k: v for k, v in PruneConfig.heal_option_specs().items() if k not in LINEAR_HEAL_OPTIONS}

