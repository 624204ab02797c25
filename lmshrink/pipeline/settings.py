"""The settings every model-compressing run shares, as small typed dataclasses that the run configs compose.

Each field is declared once with :func:`setting`: its default, its help text and, where the command line spells it
differently, its flag (``--no-eval`` for ``evaluate``, ``--quiet`` for ``progress``). The command-line flags of
``lmshrink prune``, ``svd``, ``compress`` and ``heal`` are generated from these fields (:mod:`lmshrink.cli.flags`),
so the help a flag prints, the config's field and its Python keyword are one declaration.

The composed configs (:class:`~lmshrink.pipeline.config.PruneConfig`, :class:`~lmshrink.pipeline.svd.SvdConfig`,
:class:`~lmshrink.pipeline.compress.CompressConfig`, :class:`~lmshrink.pipeline.heal_model.HealConfig`) are built
from a config and keyword settings the same way: :meth:`Settings.from_settings`.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import LmshrinkError, did_you_mean
from ..core.options import parse_option_strings
from ..devices import Placement, check_save_dtype, resolve_placement

S = TypeVar("S", bound="Settings")

#: the metavar of a plugin-options flag (``--option KEY=VALUE``)
OPTION_METAVAR = "KEY=VALUE"


def setting(default: Any = None, help: str = "", *, flag: str | None = "", choices: tuple[Any, ...] | None = None,
            metavar: str | None = None, nargs: str | None = None, type: Callable[[str], Any] | None = None,
            options: bool = False, required: bool = False,
            default_factory: Callable[[], Any] | None = None) -> Any:
    """A settings field with its command-line declaration in the field's metadata.

    ``help`` is the flag's help (``%(default)s`` reads the default); ``flag`` is the flag's spelling when it is not
    ``--field-name`` (None: no flag; a boolean that defaults to True is negated by its flag, e.g. ``--no-eval``);
    ``options`` marks a dict of plugin options given as repeatable ``KEY=VALUE`` strings, parsed against the
    plugin's declared options when the run is checked; ``type`` parses the string the command line gives.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "nargs": nargs, "type": type,
                "options": options, "required": required}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def like(owner: type, name: str, default: Any = dataclasses.MISSING, **changes: Any) -> Any:
    """The field ``name`` of the settings class ``owner`` again, with another ``default`` or metadata ``changes``
    (``help=...``), for a run whose default differs: the declaration is not written twice."""
    base = {f.name: f for f in dataclasses.fields(owner)}[name]
    metadata = {**base.metadata, **changes}
    if default is dataclasses.MISSING and base.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=base.default_factory, metadata=metadata)
    return dataclasses.field(default=base.default if default is dataclasses.MISSING else default, metadata=metadata)


def ordered_fields(settings: type) -> list[dataclasses.Field]:
    """The fields of the settings class ``settings`` as people read them: those it declares itself first, then
    those of its bases, in the order it lists them."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    ordered: dict[str, dataclasses.Field] = {}
    for owner in settings.__mro__:
        for name in vars(owner).get("__annotations__", {}):
            if name in fields:
                ordered.setdefault(name, fields[name])
    return list(ordered.values())


def flag_of(f: dataclasses.Field) -> str | None:
    """The command-line flag of settings field ``f`` (None when it has none)."""
    flag = f.metadata.get("flag", "")
    return f"--{f.name.replace('_', '-')}" if flag == "" else flag


def plugin_options(value: Any) -> dict[str, Any] | list[str]:
    """A plugin-options setting as given: a dict (from Python), or the command line's ``KEY=VALUE`` strings, kept
    to be parsed against the plugin's declared options when the run is checked."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        return [value]
    return list(value)


def with_typed_options(config: S, **owners: tuple[str, Mapping[str, Any]]) -> S:
    """``config`` with each plugin-options field named in ``owners`` that holds the command line's ``KEY=VALUE``
    strings parsed into typed values: ``field=(owner, declared options)``, e.g. ``solver_options=("Solver
    'anneal'", solver.options)``. Options given as a dict (from Python) are left to the plugin to validate."""
    changes = {name: parse_option_strings(owner, declared, getattr(config, name))
               for name, (owner, declared) in owners.items() if isinstance(getattr(config, name), list)}
    return dataclasses.replace(config, **changes) if changes else config


def check_count(flag: str, value: Any, least: int, why: str = "") -> None:
    """Refuse ``value`` of the setting written ``flag`` unless it is a whole number of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LmshrinkError(f"{flag} must be a whole number, not {value!r}.")
    if value < least:
        raise LmshrinkError(f"{flag} must be at least {least}{why}, not {value}.")


def count_or_fraction(text: str) -> int | float:
    """A command-line count (``100``) or fraction below 1 (``0.1``)."""
    value = float(text)
    return int(value) if value >= 1 else value


@dataclasses.dataclass
class Settings:
    """The base of every settings class: built from a config and keywords, recorded as plain values."""

    #: the run these settings are for, as error messages name it
    command = "this run"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.metadata.get("options"):
                setattr(self, f.name, plugin_options(getattr(self, f.name)))

    @classmethod
    def from_settings(cls: type[S], config: S | None = None, **settings: Any) -> S:
        """``config`` with ``settings`` replaced (a default config without one); an unknown name is refused with
        the closest known one."""
        names = [f.name for f in ordered_fields(cls)]
        for key in settings:
            if key not in names:
                raise LmshrinkError(f"{cls.command} has no setting {key!r}.{did_you_mean(key, names)} Settings: "
                                    f"{', '.join(names)}.")
        if config is not None and not isinstance(config, cls):
            raise LmshrinkError(f"{cls.command} takes a {cls.__name__}, not a {type(config).__name__}.")
        return dataclasses.replace(config, **settings) if config is not None else cls(**settings)

    def check_choices(self) -> None:
        """Refuse a value outside the choices its field declares."""
        for f in dataclasses.fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value not in choices:
                raise LmshrinkError(f"{f.name} must be one of {', '.join(map(str, choices))}, not {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (paths as strings), as report.json records them."""
        values = dataclasses.asdict(self)
        return {f.name: (str(v) if isinstance(v := values[f.name], Path) else v) for f in ordered_fields(type(self))}


@dataclasses.dataclass
class DataSettings(Settings):
    """The calibration text and how much of it a run reads."""

    data: str | list[str] | None = setting(None, "calibration and evaluation text: named text, local .txt/.jsonl "
                                                 "files or an HF dataset (default: mix, CPython's pydoc topics and "
                                                 "English prose, when Debian's fortunes package is installed; else "
                                                 "pydoc)", nargs="+")
    samples: int = setting(64, "calibration samples (default %(default)s)")
    seq_len: int = setting(128, "tokens per calibration sample (default %(default)s)")
    seed: int = setting(0, "random seed of the calibration sampling and the solvers (default %(default)s)")

    def calibration_text(self) -> str | list[str]:
        """``data``, or the default calibration text when none is named (:func:`lmshrink.data.default_calibration`);
        the held-out split of either default is pydoc's."""
        if self.data is not None:
            return self.data
        from ..data import default_calibration

        return default_calibration()

    def check_data(self) -> None:
        """Refuse a calibration no run can use."""
        check_count("--samples", self.samples, 1)
        check_count("--seq-len", self.seq_len, 2, " (a sample needs a token to predict from and one to predict)")
        check_count("--seed", self.seed, 0)


@dataclasses.dataclass
class PlacementSettings(Settings):
    """Where the model runs and in which precision; checked by :func:`lmshrink.devices.resolve_placement`."""

    device: str = setting("auto", "auto (a GPU when torch has one), cpu, cuda or cuda:N")
    dtype: str = setting("auto", "precision the model runs in: auto (bfloat16 on a GPU, float32 on the CPU), "
                                 "bfloat16, float16 or float32; measurements accumulate in float64 either way")
    device_map: str | None = setting(None, "spread a model too large for one GPU over all of them (accelerate's "
                                           "device map; needs CUDA)", metavar="auto")

    def placement(self) -> Placement:
        """``device``, ``dtype`` and ``device_map`` checked, with "auto" resolved on this machine."""
        return resolve_placement(self.device, self.dtype, self.device_map)


@dataclasses.dataclass
class OutputSettings(Settings):
    """Where a run writes, in one piece."""

    out: str | Path | None = setting(None, "output directory, absent or empty (default ./lmshrink-out/<timestamp>); "
                                           "written in one piece when the run ends")
    overwrite: bool = setting(False, "replace a non-empty --out (an earlier run's) whole")


@dataclasses.dataclass
class SaveSettings(Settings):
    """Whether a run saves the compressed model (from Python only: the command line always saves)."""

    save: bool = setting(True, "save the compressed model", flag=None)


@dataclasses.dataclass
class SavedModelSettings(Settings):
    """The precision of the saved model."""

    save_dtype: str = setting("auto", "precision of the saved model: auto (the source's: bfloat16 for a GGUF "
                                      "source, a model directory's config dtype), bfloat16, float16 or float32")

    def check_save_dtype(self) -> None:
        """Refuse an unknown ``save_dtype``."""
        check_save_dtype(self.save_dtype)


@dataclasses.dataclass
class PerplexitySettings(Settings):
    """How held-out perplexity is measured."""

    eval_tokens: int = setting(16384, "held-out tokens for perplexity (default %(default)s)")
    eval_window: int = setting(512, "tokens per perplexity window (default %(default)s)")
    eval_data: list[str] = setting(help="more held-out texts to score the model on at every stage, beside the "
                                        "calibration text's held-out part: named texts or local files, e.g. "
                                        "literature (a domain no named calibration text reads)",
                                   nargs="+", metavar="TEXT", default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.eval_data, str):  # one text named from Python
            self.eval_data = [self.eval_data]

    def check_perplexity(self, skip: str = "") -> None:
        """Refuse a held-out text or window too short for a perplexity (``skip``: how to do without one)."""
        check_count("--eval-tokens", self.eval_tokens, 2, f" (perplexity needs a token to predict from and one to "
                    f"predict{skip})")
        check_count("--eval-window", self.eval_window, 2)
        if not all(isinstance(t, str) and t for t in self.eval_data or []):
            raise LmshrinkError(f"--eval-data takes names of texts or paths, not {self.eval_data!r}.")


@dataclasses.dataclass
class EvaluationSettings(PerplexitySettings):
    """Held-out perplexity before and after, or none."""

    evaluate: bool = setting(True, "skip perplexity", flag="--no-eval")

    def check_evaluation(self) -> None:
        """Refuse an evaluation no run can make (none without ``evaluate``)."""
        if self.evaluate:
            self.check_perplexity("; --no-eval skips it")
        elif self.eval_data:
            raise LmshrinkError("--eval-data scores held-out texts, which --no-eval skips: give one or the other.")


@dataclasses.dataclass
class ProgressSettings(Settings):
    """Whether a run reports its progress."""

    progress: bool = setting(True, "no progress output", flag="--quiet")


@dataclasses.dataclass
class RunSettings(DataSettings, EvaluationSettings, OutputSettings, SaveSettings, ProgressSettings,
                  PlacementSettings):
    """What every run that loads, measures and saves a model shares: calibration data, placement, output,
    evaluation and progress."""

    def check_run(self) -> None:
        """Refuse shared settings no run can use: a choice not declared, calibration, evaluation, placement."""
        self.check_choices()
        self.check_data()
        self.check_evaluation()
        self.placement()


@dataclasses.dataclass
class FactoringSettings(Settings):
    """What the runs that factor matrices (svd, compress) share: the budget, the stored form and the solver."""

    ratio: float = setting(0.8, "fraction of the parameters of the decomposed matrices (q,k,v,o,gate,up,down "
                                "weights of the decoder layers; not embeddings, norms or the LM head) to keep; "
                                "default %(default)s")
    pivga: bool = setting(False, "store gauge-fixed factors: r(m+n)−r² numbers instead of r(m+n)")
    solver_options: dict[str, Any] = setting(help="solver option (repeatable)", flag="--option", options=True,
                                             default_factory=dict)
    time_limit: float | None = setting(None, "seconds for the solver", type=float)
    verify: bool = setting(True, "reload the saved model and record the largest logit difference", flag=None)

    def check_factoring(self) -> None:
        """Refuse a ratio outside (0, 1] and a time limit that is not positive."""
        if not 0 < self.ratio <= 1:
            raise LmshrinkError(f"ratio must be in (0, 1], not {self.ratio}.")
        if self.time_limit is not None and not self.time_limit > 0:
            raise LmshrinkError(f"time_limit must be positive, not {self.time_limit}.")


@dataclasses.dataclass
class ModelSource(Settings):
    """The model a run starts from; passed to the run functions as their first argument, not in a config."""

    model: str | None = setting(None, "HF model directory, hub id or .gguf file (default: embedded "
                                      "SmolLM2-135M-Instruct)")


__all__ = ["DataSettings", "EvaluationSettings", "FactoringSettings", "ModelSource", "OutputSettings",
           "PerplexitySettings", "PlacementSettings", "ProgressSettings", "RunSettings", "SaveSettings",
           "SavedModelSettings", "Settings", "check_count", "count_or_fraction", "flag_of", "like", "ordered_fields", "setting",
           "with_typed_options"]
