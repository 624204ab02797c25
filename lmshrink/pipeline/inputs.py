"""The first steps every flow shares: read the text, load the model, find its adapter, check that its weights
are finite, cut the calibration samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import LmshrinkError
from ..devices import Placement, place_model
from ..plugins import find_adapter
from ..report import Timings
from ..report import log as _log


@dataclass
class Inputs:
    """A loaded model with its adapter, and the text and calibration samples a flow measures on."""

    loaded: Any  # lmshrink.models.LoadedModel
    adapter: Any
    texts: Any  # lmshrink.data.TextSplit
    calibration: Any  # lmshrink.data.Calibration

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer


def load_inputs(model: Any, *, data: Any, samples: int, seq_len: int, seed: int, timings: Timings,
                progress: bool, validation: int = 0, placement: Any = None) -> Inputs:
    """``model`` (a name/path, None for the embedded default, or a ``LoadedModel``) in eval mode with its adapter,
    and ``samples`` × ``seq_len`` calibration tokens from ``data`` (with ``validation`` more windows, disjoint from
    them, in ``calibration.validation``); timed as "load model" and "data".

    The text is read first, so a bad ``data`` is refused before the model loads; a model whose weights hold
    NaN or infinity is refused before anything is measured on it.

    ``placement`` (a :class:`~lmshrink.devices.Placement`) is where the model runs and in which dtype: a name is
    loaded so (float32 on the CPU without one), a ``LoadedModel`` moved and cast (left as it is without one).
    """
    from ..data import load_texts, make_calibration
    from ..models import LoadedModel, load_model

    with timings("data"):
        texts = load_texts(data)
    with timings("load model"):
        what = f" {model}" if isinstance(model, str) else " (embedded default)" if model is None else ""
        _log(progress, "loading model" + what)
        if isinstance(model, LoadedModel):
            loaded = model
            if placement is not None:
                place_model(loaded.model, placement)
        else:
            p = placement if placement is not None else Placement()
            loaded = load_model(model, dtype=p.dtype, device=p.device, device_map=p.device_map)
        loaded.model.eval()
        adapter = find_adapter(loaded.model)
        check_finite_weights(loaded.model, adapter)
    with timings("data"):
        calibration = make_calibration(loaded.tokenizer, texts, samples, seq_len, seed, validation=validation)
    return Inputs(loaded, adapter, texts, calibration)


def check_finite_weights(model: Any, adapter: Any) -> None:
    """Refuse a model whose weights hold NaN or infinity, naming the first such tensor and its block."""
    from ..models import nonfinite_weights

    bad = nonfinite_weights(model)
    if not bad:
        return
    name, count = bad[0]
    blocks = [b for b in adapter.blocks(model) if name.startswith(b.name + ".")]
    where = f" (block {blocks[0].index}, {blocks[0].name})" if blocks else ""
    more = f", and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
    raise LmshrinkError(f"The model would produce non-finite values: its weights hold {count} NaN or infinite "
                        f"value(s) in {name}{where}{more}.")
