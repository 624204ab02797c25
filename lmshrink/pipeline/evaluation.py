"""Evaluation stages of a prune run: held-out perplexity before removal (a non-finite value stops the run: the
input model is broken), and after removal perplexity and lm-eval tasks, whose failures are recorded next to a
model that is already saved."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cache import ENTRY, SECONDS, cache_key, cached_arrays
from ..core.errors import LmshrinkError
from ..evaluate.lm_eval import run_lm_eval
from ..objectives.common import model_identity, nonfinite_origin
from ..report import Timings
from ..report import log as _log


@dataclass
class Evaluation:
    """What the evaluation of the pruned model gave, and the steps that failed (``{"stage", "error"}``)."""

    perplexity: dict[str, float] | None = None
    lm_eval: dict[str, Any] | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    #: False when the evaluation was interrupted
    finished: bool = True


def held_out_ids(tokenizer: Any, texts: Any, max_tokens: int) -> Any:
    """The held-out evaluation tokens; refused when there are fewer than two (no perplexity possible)."""
    from ..data import evaluation_ids

    ids = evaluation_ids(tokenizer, texts, max_tokens)
    if len(ids) < 2:
        raise LmshrinkError(f"The held-out part of the text ({texts.source}) has {len(ids)} token(s), too few for "
                            "a perplexity; give more text with --data, or skip perplexity with --no-eval.")
    return ids


@dataclass
class OtherTexts:
    """Held-out texts of other domains than the calibration's (``--eval-data``), scored at each stage of a run.

    :meth:`read` reads the texts (before the model loads, so a bad name is refused early), :meth:`tokenize` takes
    the first ``max_tokens`` of each held-out part, and :meth:`measure` records the model's perplexity on each at a
    stage ("before", "unhealed", "after"): ``scores[text][stage]`` is a perplexity record (perplexity, nll,
    tokens), what a report's ``other_texts`` holds.
    """

    texts: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @classmethod
    def read(cls, names: list[str] | None) -> OtherTexts:
        """The texts ``names`` (named texts or local files; see :func:`lmshrink.data.load_texts`)."""
        from ..data import load_texts

        return cls({name: load_texts(name) for name in dict.fromkeys(names or [])})

    def tokenize(self, tokenizer: Any, max_tokens: int) -> OtherTexts:
        """Each text's held-out tokens; a text with fewer than two is refused."""
        self.ids = {name: held_out_ids(tokenizer, texts, max_tokens) for name, texts in self.texts.items()}
        return self

    def measure(self, model: Any, stage: str, *, window: int, timings: Timings, progress: bool) -> None:
        """Record ``model``'s perplexity on every text at ``stage`` (the stage "before" is cached like
        :func:`perplexity_before`'s)."""
        from ..evaluate.perplexity import perplexity

        for name, ids in self.ids.items():
            with timings(f"perplexity {stage} ({name})"):
                if stage == "before":
                    got = _cached_perplexity(model, ids, window, progress, f"perplexity before ({name})")
                else:
                    got = perplexity(model, ids, window=window, progress=progress, desc=f"perplexity {stage} "
                                                                                         f"({name})")
            self.scores.setdefault(name, {})[stage] = got


def _cached_perplexity(model: Any, ids: Any, window: int, progress: bool, desc: str) -> dict[str, float]:
    """Held-out perplexity of ``model`` on ``ids``, cached on the weights, the tokens, the window and the device."""
    from ..evaluate.perplexity import perplexity

    def measure() -> dict[str, np.ndarray]:
        got = perplexity(model, ids, window=window, progress=progress, desc=desc)
        return {k: np.asarray(v, dtype=np.float64) for k, v in got.items()}

    tokens = hashlib.sha256(np.ascontiguousarray(ids.cpu().numpy()).tobytes()).hexdigest()
    device = next(model.parameters()).device.type
    key = cache_key(model_identity(model), tokens, window, device, "perplexity")
    arrays, _ = cached_arrays("perplexity", key, measure)
    result = {k: float(v) for k, v in arrays.items() if k not in (SECONDS, ENTRY)}
    if "tokens" in result:
        result["tokens"] = int(result["tokens"])
    return result


def perplexity_before(model: Any, ids: Any, *, window: int, progress: bool, adapter: Any,
                      granularity: str) -> dict[str, float]:
    """Held-out perplexity of the unpruned model (cached: it depends only on the weights and the tokens); a
    non-finite one is refused, saying where it starts."""
    result = _cached_perplexity(model, ids, window, progress, "perplexity before")
    if not math.isfinite(result["nll"]):
        where = nonfinite_origin(model, adapter, ids[None, :window], granularity)
        raise LmshrinkError(f"The model produced non-finite values while measuring the perplexity before removal, "
                            f"{where}.")
    return result


def evaluate_pruned(model: Any, tokenizer: Any, ids: Any, *, window: int, eval_tasks: list[str] | None,
                    eval_limit: Any, seed: int, timings: Timings, progress: bool) -> Evaluation:
    """Perplexity (when ``ids`` is given) and lm-eval ``eval_tasks`` of the pruned model; failures recorded."""
    from ..evaluate.perplexity import perplexity

    result = Evaluation()
    if ids is not None:
        with timings("perplexity after"):
            ppl = perplexity(model, ids, window=window, progress=progress, desc="perplexity after")
        if math.isfinite(ppl["nll"]):
            result.perplexity = ppl
        else:
            result.errors.append({"stage": "perplexity after",
                                  "error": "the pruned model produced non-finite values (perplexity "
                                           f"{ppl['perplexity']})"})
    if eval_tasks:
        with timings("lm-eval"):
            _log(progress, f"lm-eval on the pruned model: {', '.join(eval_tasks)}")
            try:
                result.lm_eval = run_lm_eval(model, tokenizer, eval_tasks, limit=eval_limit, seed=seed)
            except Exception as exc:  # noqa: BLE001 - any failure is recorded; the saved model stays
                result.errors.append({"stage": "lm-eval", "error": str(exc) if isinstance(exc, LmshrinkError)
                                      else f"{type(exc).__name__}: {exc}"})
    return result
