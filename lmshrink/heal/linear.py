"""Training-free healing: a linear map per run of removed layers, fitted by least squares and folded into weights.

Removing the layers a, a+1, …, b−1 (a maximal run) makes layer b read the output of layer a−1 instead of its
input in the full model. Write the output of layer a−1 as h = y + m, with m the output of its last residual branch
(for a Llama layer the MLP: m = down_proj(·)) and y everything before. A map T applied to that branch gives
ĥ = y + m·T; it is fitted so that ĥ matches z, the input of layer b in the full model, on calibration tokens:

    T = argmin_T ‖m·T − (z − y)‖² + λ‖T − I‖²  =  (mᵀm + λI)⁻¹ (mᵀ(z − y) + λI)                        (1)

(rows of m, y, z are tokens; λ = ridge · tr(mᵀm)/d keeps T near the identity, i.e. near plain removal, where the
data say little). Since m = x·Wᵀ for the branch's output projection W, m·T = x·(TᵀW)ᵀ: replacing W by TᵀW folds
the map into the model, which stays a plain transformers model. A run at the start (a = 0) maps the embeddings:
E ← E·T, unless they are tied to the output head (then that run is left unhealed, and the report says why).

Runs are fitted in order on the pruned model, each after the earlier ones are folded in, so a map also corrects
what earlier runs left over; the targets z always come from the full model (ReplaceMe and LinearPatch fit such
maps; this is the least-squares form with a ridge towards the identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import LmshrinkError

#: attribute paths, inside one decoder layer, of the linear map that writes its last branch into the residual
#: stream (Llama-shaped MLP; Nemotron-H mixers)
OUTPUT_PROJECTIONS = ("mlp.down_proj", "mixer.down_proj", "mixer.out_proj", "mixer.o_proj")


class _Captured(Exception):
    """Raised by a hook once everything a pass was run for is recorded: the rest of the pass is skipped."""


@dataclass
class HealedRun:
    """One maximal run of removed layers ``[start, stop)`` (numbering of the full model) and what healing did."""

    start: int
    stop: int
    folded_into: str | None = None
    reason: str | None = None
    #: relative squared error ‖ĥ − z‖²/‖z‖² of the stream after the run: removed plainly (T = I) and healed
    error_removed: float | None = None
    error_healed: float | None = None
    #: the fitted map T of (1), float64 (d, d); None when the run was not healed
    map: Any = field(default=None, repr=False)

    @property
    def healed(self) -> bool:
        return self.folded_into is not None

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [self.start, self.stop - 1], "folded_into": self.folded_into, "reason": self.reason,
                "error_removed": self.error_removed, "error_healed": self.error_healed}


@dataclass
class LinearHealPlan:
    """What :meth:`LinearHeal.prepare` measured on the full model: the runs and their targets z."""

    runs: list[HealedRun]
    targets: dict[int, list[Any]] = field(repr=False)  # run index → per-batch z (float64 tensors)
    input_ids: Any = field(repr=False)
    tied_embeddings: bool = False


def removed_runs(removed: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` of consecutive indices: [1, 2, 5] → [(1, 3), (5, 6)]."""
    runs: list[tuple[int, int]] = []
    for i in sorted({int(i) for i in removed}):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _get(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def output_projection(layer: Any) -> tuple[str, Any] | None:
    """``(path, module)`` of the ``nn.Linear`` that writes the last branch of ``layer`` into the residual stream."""
    import torch.nn as nn

    for path in OUTPUT_PROJECTIONS:
        try:
            module = _get(layer, path)
        except AttributeError:
            continue
        if isinstance(module, nn.Linear):
            return path, module
    return None


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (tuple, list)) else value


class LinearHeal:
    """Fit and fold the maps (1). Call :meth:`prepare` on the full model, remove the blocks, then :meth:`apply`."""

    name = "linear"

    def __init__(self, ridge: float = 1e-3, batch_size: int = 8, progress: bool = False) -> None:
        if not ridge >= 0:
            raise LmshrinkError(f"The ridge of linear healing must be a non-negative number, not {ridge!r}.")
        self.ridge, self.batch_size, self.progress = float(ridge), max(int(batch_size), 1), progress

    def prepare(self, model: Any, adapter: Any, removed: Sequence[int], input_ids: Any,
                granularity: str = "layer") -> LinearHealPlan:
        """Record, on the full ``model``, the stream each run of ``removed`` layers must be mapped to."""
        import torch

        layers = self._layers(model, adapter, granularity)
        runs = [HealedRun(a, b) for a, b in removed_runs(removed)]
        if any(b > len(layers) for _, b in removed_runs(removed)):
            raise LmshrinkError(f"A removed layer index is out of range for {len(layers)} layers.")
        tied = _tied_embeddings(model)
        targets: dict[int, list[Any]] = {k: [] for k in range(len(runs))}
        last = max(r.stop for r in runs) - 1 if runs else -1
        handles = []
        store: dict[int, Any] = {}

        def keep_output(k: int, stop_after: bool):
            def hook(module: Any, args: tuple, output: Any) -> None:
                store[k] = _first(output).detach().double()
                if stop_after:
                    raise _Captured

            return hook

        for k, run in enumerate(runs):
            handles.append(layers[run.stop - 1].register_forward_hook(keep_output(k, run.stop - 1 == last)))
        try:
            with torch.no_grad():
                for batch in self._batches(input_ids):
                    store.clear()
                    _run(model, batch)
                    for k in range(len(runs)):
                        targets[k].append(store[k])
        finally:
            for h in handles:
                h.remove()
        return LinearHealPlan(runs, targets, input_ids, tied)

    def apply(self, plan: LinearHealPlan, pruned: Any, adapter: Any) -> list[HealedRun]:
        """Fit each run's map on ``pruned`` (the model with the blocks removed) and fold it into its weights."""
        import torch

        layers = self._layers(pruned, adapter, "layer")
        removed_before = 0
        for k, run in enumerate(plan.runs):
            kept = run.start - 1 - removed_before  # index, in the pruned model, of the layer before the run
            removed_before += run.stop - run.start
            if kept < 0:
                if plan.tied_embeddings:
                    run.reason = ("the run starts at the embeddings, which are tied to the output head: a map folded "
                                  "into them would change the head too")
                    continue
                target_module, path = pruned.get_input_embeddings(), "embeddings"
                pairs = self._capture(pruned, target_module, None, plan, k)
            else:
                found = output_projection(layers[kept])
                if found is None:
                    run.reason = (f"layer {run.start - 1}, before the run, has no single linear output projection "
                                  f"({', '.join(OUTPUT_PROJECTIONS)}) to fold a map into")
                    continue
                sub, target_module = found
                parent, attr = adapter.layer_list(pruned)
                path = _layer_path(pruned, parent, attr, kept) + "." + sub
                pairs = self._capture(pruned, target_module, layers[kept], plan, k)
            T, before, after = self._fit(pairs)
            with torch.no_grad():
                W = target_module.weight
                if kept < 0:  # embedding (vocab, d): rows are the stream, E ← E·T
                    W.copy_((W.double() @ T).to(W.dtype))
                else:  # nn.Linear (d, inner): m = x·Wᵀ, m·T = x·(TᵀW)ᵀ
                    W.copy_((T.T @ W.double()).to(W.dtype))
            run.folded_into, run.error_removed, run.error_healed, run.map = path, before, after, T
        return plan.runs

    # --- pieces -----------------------------------------------------------------------------------------------
    def _layers(self, model: Any, adapter: Any, granularity: str) -> Any:
        if granularity != "layer":
            raise LmshrinkError(f"Linear healing maps whole removed layers; granularity {granularity!r} is not "
                                "supported (use --granularity layer, or --heal kd).")
        found = adapter.layer_list(model)
        if found is None:
            raise LmshrinkError(f"Adapter {adapter.name!r} does not expose its decoder layer list (layer_list), "
                                "which linear healing needs.")
        parent, attr = found
        return getattr(parent, attr)

    def _batches(self, input_ids: Any) -> list[Any]:
        n = input_ids.shape[0]
        return [input_ids[s : s + self.batch_size] for s in range(0, n, self.batch_size)]

    def _capture(self, pruned: Any, branch: Any, layer: Any | None, plan: LinearHealPlan, k: int) -> list[tuple]:
        """Per batch ``(m, y, z)``: the branch output m, the rest y of the layer output, and the target z."""
        import torch

        got: dict[str, Any] = {}

        def on_branch(module: Any, args: tuple, output: Any) -> None:
            got["m"] = _first(output).detach().double()
            if layer is None:
                raise _Captured

        def on_layer(module: Any, args: tuple, output: Any) -> None:
            got["h"] = _first(output).detach().double()
            raise _Captured

        handles = [branch.register_forward_hook(on_branch)]
        if layer is not None:
            handles.append(layer.register_forward_hook(on_layer))
        out = []
        try:
            with torch.no_grad():
                for batch, z in zip(self._batches(plan.input_ids), plan.targets[k]):
                    got.clear()
                    _run(pruned, batch)
                    m = got["m"]
                    y = got["h"] - m if layer is not None else torch.zeros_like(m)
                    out.append((m, y, z))
        finally:
            for h in handles:
                h.remove()
        return out

    def _fit(self, pairs: list[tuple]) -> tuple[Any, float, float]:
        """Solve (1); returns T (float64, d × d) and the relative errors without and with it."""
        import torch

        d = pairs[0][0].shape[-1]
        G = torch.zeros(d, d, dtype=torch.float64)
        C = torch.zeros(d, d, dtype=torch.float64)
        for m, y, z in pairs:
            m2, r2 = m.reshape(-1, d), (z - y).reshape(-1, d)
            G += m2.T @ m2
            C += m2.T @ r2
        eye = torch.eye(d, dtype=torch.float64)
        lam = self.ridge * float(torch.trace(G)) / d
        T = torch.linalg.solve(G + lam * eye, C + lam * eye)
        err0 = err1 = norm = 0.0
        for m, y, z in pairs:
            err0 += float(((y + m - z) ** 2).sum())
            err1 += float(((y + m @ T - z) ** 2).sum())
            norm += float((z**2).sum())
        return T, err0 / norm, err1 / norm


def _run(model: Any, input_ids: Any) -> None:
    try:
        model(input_ids=input_ids, use_cache=False)
    except _Captured:
        pass


def _layer_path(model: Any, parent: Any, attr: str, index: int) -> str:
    for name, module in model.named_modules():
        if module is parent:
            return f"{name}.{attr}.{index}" if name else f"{attr}.{index}"
    return f"{attr}.{index}"


def _tied_embeddings(model: Any) -> bool:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return out is not None and inp is not None and out.weight is inp.weight
