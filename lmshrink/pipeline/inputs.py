"""The first steps every flow shares: load the model, find its adapter, cut the calibration samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..report import Timings
from ..report import log as _log


@dataclass
class Inputs:
    """A loaded model with its adapter, and the text and calibration samples a flow measures on."""

    loaded: Any  # lmshrink.models.LoadedModel
    adapter: Any
    texts: Any  # lmshrink.data.Texts
    calibration: Any  # lmshrink.data.Calibration

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer


def load_inputs(model: Any, *, data: Any, samples: int, seq_len: int, seed: int, timings: Timings,
                progress: bool) -> Inputs:
    """``model`` (a name/path, None for the embedded default, or a ``LoadedModel``) in eval mode with its adapter,
    and ``samples`` × ``seq_len`` calibration tokens from ``data``; timed as "load model" and "data"."""
    from ..data import load_texts, make_calibration
    from ..models import LoadedModel, load_model
    from ..plugins import find_adapter

    with timings("load model"):
        what = f" {model}" if isinstance(model, str) else " (embedded default)" if model is None else ""
        _log(progress, "loading model" + what)
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        loaded.model.eval()
        adapter = find_adapter(loaded.model)
    with timings("data"):
        texts = load_texts(data)
        calibration = make_calibration(loaded.tokenizer, texts, samples, seq_len, seed)
    return Inputs(loaded, adapter, texts, calibration)
