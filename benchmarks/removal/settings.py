"""The settings of a removal-study run: counts of blocks M (:class:`Settings`) or budgets in parameters
(:class:`BudgetSettings`), with the full and the quick (CI-sized) defaults of each."""

from __future__ import annotations

from dataclasses import dataclass, field

FULL = {"remove": "4,6,8,10,12", "seeds": "0,1,2", "samples": 64, "seq_len": 128, "search_samples": 16,
        "validation": 32, "eval_tokens": 8192, "eval_window": 512, "top_k": 10, "kd": "6", "kd_steps": 60}
QUICK = {"remove": "2,4", "seeds": "0,1", "samples": 8, "seq_len": 64, "search_samples": 4, "validation": 4,
         "eval_tokens": 1024, "eval_window": 128, "top_k": 3, "kd": "", "kd_steps": 4}


@dataclass
class Settings:
    """Everything that defines a run (written into the report)."""

    model: str | None = None
    data: str | None = None
    out: str = "benchmarks/results/removal"
    remove: list[int] = field(default_factory=lambda: [4, 6, 8, 10, 12])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    samples: int = 64
    seq_len: int = 128
    search_samples: int = 16
    validation: int = 32
    eval_tokens: int = 8192
    eval_window: int = 512
    top_k: int = 10
    validate_top: int = 5
    batch: int = 4
    ridge: float = 1e-3
    skip: list[str] = field(default_factory=list)
    kd: list[int] = field(default_factory=lambda: [6])
    kd_steps: int = 60
    kd_batch: int = 4
    quick: bool = False
    #: choose the pipeline rows (``pipelines``) or the default's (``default``) of finished seeds again with the
    #: current code, other rows kept; "" for none
    refresh: str = ""


#: the budget mode's own defaults (the calibration and held-out settings are :data:`FULL`'s / :data:`QUICK`'s)
BUDGET_FULL = {"budget": "25%,37.5%", "search_tokens": 1_048_576}
BUDGET_QUICK = {"budget": "25%", "search_tokens": 65_536}
#: the rows of the budget mode, in the report's order
BUDGET_ROWS = ("block-influence", "block-influence-iterative", "angular", "sleb", "blockpruner", "evopress",
               "surrogate-race", "default")
#: where budget runs go unless ``--out`` says otherwise, apart from the runs of counts M
BUDGET_OUT = "benchmarks/results/removal-budget"


@dataclass
class BudgetSettings(Settings):
    """A run of the budget mode (``--budget``): every row removes a share (or number) of the decoder's parameters
    and is scored on two held-out texts. Of the base settings it uses the model, the calibration (``data``,
    ``samples``, ``seq_len``, ``validation`` for the default's choice), the held-out windows, ``seeds``, ``skip``,
    ``ridge`` and ``batch``; the M-study's own settings (``remove``, ``kd``, ...) stay empty."""

    out: str = BUDGET_OUT
    remove: list[int] = field(default_factory=list)
    kd: list[int] = field(default_factory=list)
    #: budgets as ``--budget`` gives them, e.g. ["25%", "37.5%"]
    budget: list[str] = field(default_factory=lambda: ["25%", "37.5%"])
    #: units of the rows that can take either: layer or sublayer
    granularity: str = "sublayer"
    #: the second held-out text (a named text, a path or a dataset), of a domain no calibration uses
    heldout_data: str = "literature"
    #: tokens every search (sleb, blockpruner, evopress) may spend measuring candidates
    search_tokens: int = 1_048_576
