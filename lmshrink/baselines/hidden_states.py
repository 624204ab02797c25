"""The residual stream around each block, measured with forward hooks: what the hidden-state baselines score.

For block i with input h_i and output h_{i+1} (hidden states of shape (batch, tokens, d)), averaged over every
calibration token t:

- ``cosine[i]``     = mean_t cos(h_i[t], h_{i+1}[t])                       (Block Influence is 1 − this)
- ``norm_ratio[i]`` = mean_t ‖h_{i+1}[t] − h_i[t]‖ / mean_t ‖h_i[t]‖   (a ratio of means, so a token whose
  input is (near) zero, such as a padding embedding, cannot blow it up)
- ``angular[a, b]`` = mean_t arccos(cos(x_a[t], x_b[t])) / π for the boundary states x_0 = input of block 0 and
  x_{i+1} = output of block i, so ``angular[l, l + n]`` is Gromov et al.'s distance between the input of layer
  l and the input of layer l + n.

The hooks sit on the block modules the adapter names, so a block must map the residual stream to the residual
stream: whole decoder layers (granularity ``layer``) of Llama-shaped models and Nemotron-H blocks do. Blocks
listed in ``removed`` are gated to 0 through the adapter (their output equals their input).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..cache import cached_arrays, measurement_metadata
from ..core import BinaryQuadraticProblem, Gates, Objective, option
from ..core.errors import LmshrinkError
from ..devices import model_device
from ..evaluate.stopping import StopPass, run_until_stopped
from ..objectives.common import measurement_key, problem_metadata, require_finite

#: granularities whose blocks map the residual stream to the residual stream
RESIDUAL_GRANULARITIES = ("layer",)


def check_granularity(what: str, granularity: str) -> None:
    """Refuse granularities whose blocks are not whole residual blocks (a sub-layer branch sees normed input)."""
    if granularity not in RESIDUAL_GRANULARITIES:
        raise LmshrinkError(
            f"{what} compares the hidden states before and after whole layers, so it needs granularity 'layer', "
            f"not {granularity!r}; for sub-layer removal use the fisher or pairs objective or the sleb method."
        )


def _module(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (tuple, list)) else value


def residual_statistics(
    model: Any,
    adapter: Any,
    input_ids: Any,
    *,
    granularity: str = "layer",
    removed: Sequence[int] = (),
    batch_size: int = 8,
    angular: bool = True,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """``cosine`` (N,), ``norm_ratio`` (N,), and with ``angular`` the (N+1, N+1) matrix ``angular``.

    Averages are over every token of ``input_ids`` (a (samples, seq_len) LongTensor); ``tokens`` holds the count.
    """
    import torch

    check_granularity("This measurement", granularity)
    blocks = adapter.blocks(model, granularity)
    n = len(blocks)

    on = dict(dtype=torch.float64, device=model_device(model))  # float64 sums, next to the first hidden states
    cos_sum = torch.zeros(n, **on)
    delta_sum = torch.zeros(n, **on)
    norm_sum = torch.zeros(n, **on)
    ang_sum = torch.zeros(n + 1, n + 1, **on)
    tokens = 0
    captured: dict[int, tuple[Any, Any]] = {}
    inputs: dict[int, Any] = {}

    def pre_hook(index: int):
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            inputs[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def post_hook(index: int):
        def hook(module: Any, args: tuple, output: Any) -> None:
            captured[index] = (inputs.pop(index), _first(output))
            if len(captured) == n:  # every block has run: the final norm and the LM head are not needed
                raise StopPass

        return hook

    gate_ctx: Any = contextlib.nullcontext()
    if removed:
        values = torch.ones(n)
        values[list(removed)] = 0.0
        gate_ctx = adapter.gate(model, Gates(values), granularity)
    was_training = model.training
    model.eval()
    handles = []
    try:
        with gate_ctx, torch.no_grad():
            # registered after the gates: a forward hook sees the output the gate hooks before it returned
            for b in blocks:
                module = _module(model, b.name)
                handles.append(module.register_forward_pre_hook(pre_hook(b.index), with_kwargs=True))
                handles.append(module.register_forward_hook(post_hook(b.index)))
            starts = range(0, input_ids.shape[0], batch_size)
            for start in tqdm(starts, desc="hidden states", disable=not progress, leave=False):
                captured.clear()
                batch = input_ids[start : start + batch_size]
                run_until_stopped(model, input_ids=batch.to(cos_sum.device), use_cache=False)
                if len(captured) != n:
                    raise LmshrinkError(f"Only {len(captured)} of {n} blocks ran in the forward pass.")
                states = [captured[0][0]] + [captured[i][1] for i in range(n)]
                for i in range(n):
                    h_in, h_out = (t.to(cos_sum.device, torch.float64) for t in captured[i])
                    if h_in.shape != h_out.shape:
                        raise LmshrinkError(
                            f"Block {blocks[i].name} maps shape {tuple(h_in.shape)} to {tuple(h_out.shape)}: not a "
                            "residual block."
                        )
                    cos_sum[i] += torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1).sum()
                    delta_sum[i] += (h_out - h_in).norm(dim=-1).sum()
                    norm_sum[i] += h_in.norm(dim=-1).sum()
                tokens += batch.numel()
                if angular:
                    unit = torch.stack([s.to(ang_sum.device, torch.float64) for s in states])
                    unit = unit / unit.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                    for a in range(n + 1):
                        cos = torch.einsum("btd,kbtd->kbt", unit[a], unit[a + 1 :]).clamp(-1.0, 1.0)
                        ang_sum[a, a + 1 :] += (torch.arccos(cos) / torch.pi).sum(dim=(1, 2))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {
        "cosine": (cos_sum / tokens).cpu().numpy(),
        "norm_ratio": (delta_sum / norm_sum.clamp_min(1e-300)).cpu().numpy(),
        "tokens": np.array(tokens),
    }
    if angular:
        ang = (ang_sum / tokens).cpu().numpy()
        out["angular"] = ang + ang.T
    for name, what in (("cosine", "cosine"), ("norm_ratio", "norm ratio"), ("angular", "angular distance")):
        if name in out:
            require_finite(out[name], f"the {what} of the hidden states around each block", model, adapter,
                           input_ids, granularity)
    return out


def cached_residual_statistics(model: Any, adapter: Any, calibration: Any, *, granularity: str = "layer",
                               batch_size: int = 8, progress: bool = False) -> tuple[dict[str, np.ndarray], bool]:
    """:func:`residual_statistics` of the full model on ``calibration``, cached on disk. Returns (arrays, cached)."""
    check_granularity("This measurement", granularity)
    key = measurement_key(model, adapter, calibration, granularity, what="residual_statistics/2")
    return cached_arrays(
        "residual",
        key,
        lambda: residual_statistics(model, adapter, calibration.input_ids, granularity=granularity,
                                    batch_size=batch_size, progress=progress),
    )


@dataclass(frozen=True)
class ResidualScoreOptions:
    granularity: str = option("layer", "layer (the score compares hidden states around whole layers)")
    batch_size: int = option(8, "samples per forward pass")
    progress: bool = option(True, "show a progress bar")


class ResidualScoreObjective(Objective):
    """A one-shot baseline as a linear problem: minimise Σ_i s_i x_i, s_i a statistic of block i's residual stream.

    The minimiser removes the M lowest-scoring blocks (per kind, with per-kind counts), with any solver.
    Subclasses set ``name``, ``description``, ``score_name`` and :meth:`score`.
    """

    score_name = "score"
    options = ResidualScoreOptions

    def score(self, stats: dict[str, Any]) -> np.ndarray:
        """Block scores from :func:`residual_statistics`' output."""
        raise NotImplementedError

    def build_problem(self, model, adapter, calibration, *, granularity, batch_size, progress):
        check_granularity(f"Objective {self.name!r}", granularity)
        blocks = adapter.blocks(model, granularity)
        stats, cached = cached_residual_statistics(model, adapter, calibration, granularity=granularity,
                                                   batch_size=batch_size, progress=progress)
        score = self.score(stats)
        n = len(blocks)
        meta = problem_metadata(model, adapter, calibration, self.name, granularity, {}, blocks)
        meta.update({self.score_name: score.tolist(), **measurement_metadata(stats, cached),
                     "tokens": int(stats["tokens"])})
        return BinaryQuadraticProblem([b.name for b in blocks], score, np.zeros((n, n)), 0.0, [], meta)
