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

Maps are fitted on the full model with the removed layers gated off (identical to the pruned model), in order,
each with the earlier maps applied, so a map also corrects what earlier runs left over; the targets z always come
from the full model. The same maps can be applied as forward hooks (:func:`applied`) to measure a healed removal
without copying the model, and folded into the weights once the layers are really gone (:meth:`LinearHeal.fold`).
ReplaceMe and LinearPatch fit such maps; this is the least-squares form with a ridge towards the identity.

**Sub-layer runs** (granularity ``sublayer``, Llama-shaped layers). The units are then the branches of the layers in
forward order, u = attn₀, mlp₀, attn₁, mlp₁, … (:func:`lmshrink.adapters.sublayer.sublayer_blocks`), and the
residual stream is written at the points between them: branch u reads h_u and writes

    h_{u+1} = h_u + f_u(h_u),                                                                              (2)

where h_{u+1} is the layer's mid-point (the input of ``post_attention_layernorm``) after an attention branch and the
layer's output after an MLP branch. Removing a maximal run of branches a, a+1, …, b−1 (block order) makes branch b
read h_a instead of h_b. Write h_a = y + m with

    y = h_{a−1} (the residual input of branch a−1),     m = f_{a−1}(h_{a−1}) = x·Wᵀ,                       (3)

W the output projection of branch a−1 (``o_proj`` for attention, ``down_proj`` for the MLP) and x its input, and
fit T by (1) with z = h_b of the full model. The fold is the same as for layers, W ← TᵀW, now in whichever branch
precedes the run, so a run may start or stop mid-layer: attention removed and the MLP kept maps the previous MLP
(or the previous attention, when that MLP is gone too); an MLP removed maps the same layer's attention. A run at
unit 0 maps the embeddings as above. Branches already deleted from the model (placeholders) are not units and add
nothing to the stream, so a run passes over them. In the pruned model the branch a−1 sits in the layer that held
it, renumbered when earlier layers lost both branches and were removed whole (:attr:`HealedRun.pruned_layer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..core import Gates
from ..core.errors import LmshrinkError
from ..evaluate.loss import model_inputs
from ..evaluate.midstack import maps_applied, start_at
from ..evaluate.stopping import StopPass, run_until_stopped

#: attribute paths, inside one decoder layer, of the linear map that writes its last branch into the residual
#: stream (Llama-shaped MLP; Nemotron-H mixers)
OUTPUT_PROJECTIONS = ("mlp.down_proj", "mixer.down_proj", "mixer.out_proj", "mixer.o_proj")
#: at granularity ``sublayer``: per branch kind, the names, inside the branch, of the linear map that writes it into
#: the residual stream (Llama-shaped attention and MLP)
BRANCH_PROJECTIONS: dict[str, tuple[str, ...]] = {"attention": ("o_proj",), "mlp": ("down_proj",)}
EMBEDDINGS = "embeddings"


@dataclass
class HealedRun:
    """One maximal run of removed units ``[start, stop)`` (block indices of the full model: layers, or sub-layer
    branches when ``granularity`` is ``sublayer``) and its map."""

    start: int
    stop: int
    #: where the map goes: "<path in the layer>" of the layer before the run (e.g. "mlp.down_proj"; at sub-layer
    #: granularity the branch before the run, "self_attn.o_proj" or "mlp.down_proj"), or "embeddings"
    target: str | None = None
    reason: str | None = None
    #: relative squared error ‖ĥ − z‖²/‖z‖² of the stream after the run: removed plainly (T = I) and healed
    error_removed: float | None = None
    error_healed: float | None = None
    #: the fitted map T of (1), float64 (d, d); None when the run is not healed
    map: Any = field(default=None, repr=False)
    #: the module path the map was folded into, once folded
    folded_into: str | None = None
    #: ``layer`` (whole decoder layers) or ``sublayer`` (attention and MLP branches)
    granularity: str = "layer"
    #: sub-layer runs: the decoder layer (full numbering) holding the branch the map multiplies, and its index in
    #: the pruned model (layers that lost both branches are removed whole, renumbering the ones after)
    layer: int | None = None
    pruned_layer: int | None = None
    #: sub-layer runs: the module paths of the removed branches, and the first and last layer they sit in
    units: list[str] = field(default_factory=list)
    span: tuple[int, int] | None = None

    @property
    def healed(self) -> bool:
        return self.map is not None

    @property
    def branch_layer(self) -> int | None:
        """The decoder layer (full numbering) whose branch the map multiplies; None for the embeddings (or no
        target)."""
        if self.target is None or self.target == EMBEDDINGS:
            return None
        return self.layer if self.layer is not None else self.start - 1

    def hook(self, model: Any, adapter: Any) -> Any:
        """Register, on the full ``model``, the forward hook that multiplies the branch's output by the map; the
        hook's handle (a healed run only)."""
        T = torch.as_tensor(self.map)

        def multiply(module: Any, args: tuple, output: Any) -> Any:
            return output @ T.to(output.device, output.dtype)

        return _branch(model, adapter, self).register_forward_hook(multiply)

    def to_dict(self) -> dict[str, Any]:
        out = {"layers": list(self.span) if self.span is not None else [self.start, self.stop - 1],
               "target": self.target, "folded_into": self.folded_into, "reason": self.reason,
               "error_removed": self.error_removed, "error_healed": self.error_healed}
        if self.granularity != "layer":
            out.update(granularity=self.granularity, blocks=[self.start, self.stop - 1], units=list(self.units))
        return out


def _target_embeddings(run: HealedRun, tied: bool) -> None:
    """Point a run that starts at the model's first unit at the embeddings, or say why not (tied to the head)."""
    if tied:
        run.reason = ("the run starts at the embeddings, which are tied to the output head: a map folded into them "
                      "would change the head too")
    else:
        run.target = EMBEDDINGS


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


def decoder_layers(model: Any, adapter: Any, granularity: str = "layer") -> Any:
    """The decoder layer list linear healing works on; one sentence where it cannot."""
    if granularity not in ("layer", "sublayer"):
        raise LmshrinkError(f"Linear healing maps removed layers or sub-layers; granularity {granularity!r} is not "
                            "supported (use --granularity layer or sublayer, or --heal kd).")
    if granularity == "sublayer" and "sublayer" not in getattr(adapter, "granularities", ()):
        raise LmshrinkError(f"Adapter {adapter.name!r} has no sub-layer granularity to heal.")
    found = adapter.layer_list(model)
    if found is None:
        raise LmshrinkError(f"Adapter {adapter.name!r} does not expose its decoder layer list (layer_list), "
                            "which linear healing needs.")
    parent, attr = found
    return getattr(parent, attr)


def _branch(model: Any, adapter: Any, run: HealedRun) -> Any:
    """The module whose output the map of ``run`` multiplies, in the full model's numbering."""
    if run.target == EMBEDDINGS:
        return model.get_input_embeddings()
    return _get(decoder_layers(model, adapter)[run.branch_layer], run.target)


#: within the context, the healed runs' maps multiply their branches' outputs (full model numbering)
applied = maps_applied


class LinearHeal:
    """Fit the maps (1) on the full model (:meth:`fit`), then fold them into the pruned model (:meth:`fold`)."""

    name = "linear"

    def __init__(self, ridge: float = 1e-3, batch_size: int = 8) -> None:
        if not isinstance(ridge, (int, float)) or not ridge >= 0:
            raise LmshrinkError(f"The ridge of linear healing must be a non-negative number, not {ridge!r}.")
        self.ridge, self.batch_size = float(ridge), max(int(batch_size), 1)

    def fit(self, model: Any, adapter: Any, removed: Sequence[int], input_ids: Any, granularity: str = "layer",
            *, streams: Any = None) -> list[HealedRun]:
        """One :class:`HealedRun` per maximal run of ``removed`` units (layers, or attention and MLP branches at
        granularity ``sublayer``), with its map where it can be folded.

        ``streams``, a :class:`~lmshrink.evaluate.midstack.LayerInputs` of the full model on these ``input_ids``,
        saves the passes that do not depend on ``removed``: the targets z are read from it, and the captures run
        mid-stack, from the layer before the first run on, each run's resuming at the previous run's layer (and,
        at granularity ``layer``, leaving the removed layers out), so fitting many removal sets on the same samples
        costs about one partial pass each instead of a pass per run. Same maps, up to float rounding, in its
        batches.
        """
        if streams is not None and tuple(streams.input_ids.shape) != tuple(input_ids.shape):
            raise ValueError(f"streams were computed on windows of shape {tuple(streams.input_ids.shape)}, not "
                             f"{tuple(input_ids.shape)}")
        layers = decoder_layers(model, adapter, granularity)
        if granularity == "sublayer":
            return self._fit_sublayer(model, adapter, layers, removed, input_ids, streams)
        runs = [HealedRun(a, b) for a, b in removed_runs(removed)]
        if runs and runs[-1].stop > len(layers):
            raise LmshrinkError(f"A removed layer index is out of range for {len(layers)} layers.")
        tied = _tied_embeddings(model)
        for run in runs:
            if run.start == 0:
                _target_embeddings(run, tied)
            else:
                found = output_projection(layers[run.start - 1])
                if found is None:
                    run.reason = (f"layer {run.start - 1}, before the run, has no single linear output projection "
                                  f"({', '.join(OUTPUT_PROJECTIONS)}) to fold a map into")
                else:
                    run.target = found[0]
        # mid-stack from the kept streams, unless a map on the embeddings changes every layer's input
        midstack = streams is not None and not (runs and runs[0].start == 0)
        if midstack:
            targets = [[z.double() for z in streams.at(run.stop)] for run in runs]
        else:
            targets = self._targets(model, layers, runs, input_ids)
        n = len(adapter.blocks(model, granularity))
        gates = Gates(self._gate_values(n, removed))
        # mid-stack passes leave the gated-off layers out: they pass their input through exactly
        resume = _Resume(runs[0].start - 1, streams.at(runs[0].start - 1), skip=removed) if midstack and runs else None
        with adapter.gate(model, gates, granularity):
            for k, run in enumerate(runs):
                if run.target is None:
                    continue
                with applied(model, adapter, runs[:k]):
                    samples = self._capture(model, adapter, layers, run, input_ids, resume=resume)
                run.map, run.error_removed, run.error_healed = self._solve(samples, targets[k])
        return runs

    def fold(self, runs: Sequence[HealedRun], pruned: Any, adapter: Any) -> list[HealedRun]:
        """Fold the maps into ``pruned``, the model with the runs' layers removed (numbering shifts)."""
        layers = decoder_layers(pruned, adapter)
        removed_before = 0
        for run in runs:
            kept = run.start - 1 - removed_before  # index, in the pruned model, of the layer before the run
            removed_before += run.stop - run.start
            if run.pruned_layer is not None:  # a sub-layer run: the layer holding the branch before it
                kept = run.pruned_layer
            if not run.healed:
                continue
            T = torch.as_tensor(run.map, dtype=torch.float64)
            with torch.no_grad():
                if run.target == EMBEDDINGS:  # embedding (vocab, d): rows are the stream, E ← E·T
                    W = pruned.get_input_embeddings().weight
                    W.copy_((W.double() @ T.to(W.device)).to(W.dtype))
                    run.folded_into = EMBEDDINGS
                else:  # nn.Linear (d, inner): m = x·Wᵀ, m·T = x·(TᵀW)ᵀ
                    W = _get(layers[kept], run.target).weight
                    W.copy_((T.T.to(W.device) @ W.double()).to(W.dtype))
                    parent, attr = adapter.layer_list(pruned)
                    run.folded_into = f"{_layer_path(pruned, parent, attr, kept)}.{run.target}"
        return list(runs)

    # --- sub-layer runs (2), (3) ------------------------------------------------------------------------------
    def _fit_sublayer(self, model: Any, adapter: Any, layers: Any, removed: Sequence[int], input_ids: Any,
                      streams: Any) -> list[HealedRun]:
        """:meth:`fit` at granularity ``sublayer``: one map per maximal run of removed branches, on the branch
        before it."""
        blocks = adapter.blocks(model, "sublayer")
        runs = [HealedRun(a, b, granularity="sublayer") for a, b in removed_runs(removed)]
        if runs and runs[-1].stop > len(blocks):
            raise LmshrinkError(f"A removed sub-layer index is out of range for {len(blocks)} sub-layer blocks.")
        gone = {int(i) for i in removed}
        by_layer: dict[int, list[int]] = {}
        for block in blocks:
            by_layer.setdefault(block.layer, []).append(block.index)
        whole = [layer for layer, units in by_layer.items() if all(u in gone for u in units)]
        tied = _tied_embeddings(model)
        for run in runs:
            run.units = [blocks[i].name for i in range(run.start, run.stop)]
            run.span = (blocks[run.start].layer, blocks[run.stop - 1].layer)
            if run.start == 0:
                _target_embeddings(run, tied)
                continue
            source = blocks[run.start - 1]
            found = _branch_projection(model, layers, source)
            if found is None:
                names = ", ".join(BRANCH_PROJECTIONS.get(source.kind, ()))
                run.reason = (f"{source.name}, before the run, has no linear output projection ({names or 'none for'} "
                              f"{source.kind}) to fold a map into")
                continue
            run.target = found
            run.layer = source.layer
            run.pruned_layer = source.layer - sum(1 for w in whole if w < source.layer)
        midstack = streams is not None and not (runs and runs[0].start == 0)
        targets = self._sublayer_targets(model, adapter, layers, blocks, runs, input_ids, streams if midstack else None)
        gates = Gates(self._gate_values(len(blocks), removed))
        resume = None
        if midstack and runs:
            first = blocks[runs[0].start - 1].layer
            resume = _Resume(first, streams.at(first))
        with adapter.gate(model, gates, "sublayer"):
            for k, run in enumerate(runs):
                if run.target is None:
                    continue
                source = None if run.target == EMBEDDINGS else blocks[run.start - 1]
                with applied(model, adapter, runs[:k]):
                    samples = self._capture_branch(model, adapter, layers, run, source, input_ids, resume=resume)
                run.map, run.error_removed, run.error_healed = self._solve(samples, targets[k])
        return runs

    def _sublayer_targets(self, model: Any, adapter: Any, layers: Any, blocks: Any, runs: list[HealedRun],
                          input_ids: Any, streams: Any) -> list[list[Any]]:
        """Per run and batch, z = h_b of (2): the stream after the run's last branch in the full model."""
        targets: list[list[Any]] = [[] for _ in runs]
        wanted = [k for k, r in enumerate(runs) if r.target is not None]
        if not wanted:
            return targets
        ends = {k: blocks[runs[k].stop - 1] for k in wanted}
        if streams is not None:
            for k in wanted:
                end = ends[k]
                if end.kind != "attention":  # after an MLP: the layer's output, the next layer's kept input
                    targets[k] = [z.double() for z in streams.at(end.layer + 1)]
                    continue
                store: dict[int, Any] = {}
                handle = _point_hook(layers, end, store, 0, stop=True)
                try:
                    with torch.no_grad():
                        for hidden in streams.at(end.layer):
                            store.clear()
                            _run_from(model, adapter, end.layer, hidden)
                            targets[k].append(store[0])
                finally:
                    handle.remove()
            return targets
        last = max(wanted, key=lambda k: (ends[k].layer, ends[k].kind != "attention"))
        store = {}
        handles = [_point_hook(layers, ends[k], store, k, stop=k == last) for k in wanted]
        return self._gather(model, input_ids, handles, store, wanted, targets)

    def _capture_branch(self, model: Any, adapter: Any, layers: Any, run: HealedRun, source: Any,
                        input_ids: Any = None, *, resume: _Resume | None = None) -> list[tuple]:
        """Per batch ``(m, y)`` of (3) for the branch ``source`` before the run (the embeddings when None): m the
        output of its output projection, y its residual input (the layer's input before an attention branch, the
        layer's mid-point before an MLP). With ``resume``, the passes start mid-stack where it says (and it moves on
        to the source's layer)."""
        got: dict[str, Any] = {}
        handles = []

        def on_branch(module: Any, args: tuple, output: Any) -> None:
            got["m"] = _first(output).detach().double()
            raise StopPass  # y was read before the branch ran

        def on_input(module: Any, args: tuple, kwargs: dict) -> None:
            got["y"] = (args[0] if args else kwargs["hidden_states"]).detach().double()

        handles.append(_branch(model, adapter, run).register_forward_hook(on_branch))
        if source is not None:
            layer = layers[source.layer]
            where = layer if source.kind == "attention" else layer.post_attention_layernorm
            handles.append(where.register_forward_pre_hook(on_input, with_kwargs=True))
        out = []
        try:
            if resume is not None:
                handles.append(resume.watch(layers, source.layer))
            with torch.no_grad():
                for run_pass in self._passes(model, adapter, input_ids, resume):
                    got.clear()
                    run_pass()
                    m = got["m"]
                    out.append((m, got["y"] if source is not None else torch.zeros_like(m)))
        finally:
            for h in handles:
                h.remove()
        if resume is not None:
            resume.advance(source.layer)
        return out

    # --- pieces -----------------------------------------------------------------------------------------------
    @staticmethod
    def _gate_values(n: int, removed: Sequence[int]) -> Any:
        values = torch.ones(n)
        values[list(removed)] = 0.0
        return values

    def _batches(self, input_ids: Any) -> list[Any]:
        n = input_ids.shape[0]
        return [input_ids[s : s + self.batch_size] for s in range(0, n, self.batch_size)]

    def _targets(self, model: Any, layers: Any, runs: list[HealedRun], input_ids: Any) -> list[list[Any]]:
        """Per run and batch, z: the output of the run's last layer in the full model (the next layer's input)."""
        wanted = [k for k, r in enumerate(runs) if r.target is not None]
        targets: list[list[Any]] = [[] for _ in runs]
        if not wanted:
            return targets
        last = max(runs[k].stop for k in wanted) - 1
        store: dict[int, Any] = {}
        handles = []

        def keep(k: int, stop_after: bool):
            def hook(module: Any, args: tuple, output: Any) -> None:
                store[k] = _first(output).detach().double()
                if stop_after:
                    raise StopPass

            return hook

        for k in wanted:
            handles.append(layers[runs[k].stop - 1].register_forward_hook(keep(k, runs[k].stop - 1 == last)))
        return self._gather(model, input_ids, handles, store, wanted, targets)

    def _gather(self, model: Any, input_ids: Any, handles: list[Any], store: dict[int, Any], wanted: list[int],
                targets: list[list[Any]]) -> list[list[Any]]:
        """Run the calibration batches through ``model`` with the ``handles``' hooks filling ``store[k]``, append
        each batch's ``store[k]`` to ``targets[k]`` for every wanted k, and remove the hooks."""
        try:
            with torch.no_grad():
                for batch in self._batches(input_ids):
                    store.clear()
                    _run(model, batch)
                    for k in wanted:
                        targets[k].append(store[k])
        finally:
            for h in handles:
                h.remove()
        return targets

    def _capture(self, model: Any, adapter: Any, layers: Any, run: HealedRun, input_ids: Any = None, *,
                 resume: _Resume | None = None) -> list[tuple]:
        """Per batch ``(m, y)``: the branch output m and the rest y of the output of layer ``run.start − 1``; with
        ``resume``, the passes start mid-stack where it says (and it moves on to layer ``run.start − 1``)."""
        got: dict[str, Any] = {}
        branch = _branch(model, adapter, run)
        layer = None if run.target == EMBEDDINGS else layers[run.start - 1]

        def on_branch(module: Any, args: tuple, output: Any) -> None:
            got["m"] = _first(output).detach().double()
            if layer is None:
                raise StopPass

        def on_layer(module: Any, args: tuple, output: Any) -> None:
            got["h"] = _first(output).detach().double()
            raise StopPass

        handles = [branch.register_forward_hook(on_branch)]
        if layer is not None:
            handles.append(layer.register_forward_hook(on_layer))
        out = []
        try:
            if resume is not None:
                handles.append(resume.watch(layers, run.start - 1))
            with torch.no_grad():
                for run_pass in self._passes(model, adapter, input_ids, resume):
                    got.clear()
                    run_pass()
                    m = got["m"]
                    out.append((m, got["h"] - m if layer is not None else torch.zeros_like(m)))
        finally:
            for h in handles:
                h.remove()
        if resume is not None:
            resume.advance(run.start - 1)
        return out

    def _passes(self, model: Any, adapter: Any, input_ids: Any, resume: _Resume | None) -> list[Any]:
        """The capture passes, one per batch: whole passes over ``input_ids``, or mid-stack from ``resume``."""
        if resume is None:
            return [lambda batch=batch: _run(model, batch) for batch in self._batches(input_ids)]
        return [lambda hidden=hidden: _run_from(model, adapter, resume.layer, hidden, resume.skip)
                for hidden in resume.hidden]

    def _solve(self, samples: list[tuple], targets: list[Any]) -> tuple[Any, float, float]:
        """Solve (1); returns T (float64, d × d) and the relative errors without and with it."""
        d = samples[0][0].shape[-1]
        on = dict(dtype=torch.float64, device=samples[0][0].device)  # next to the captured hidden states
        G = torch.zeros(d, d, **on)
        C = torch.zeros(d, d, **on)
        for (m, y), z in zip(samples, targets):
            m2, r2 = m.reshape(-1, d), (z - y).reshape(-1, d)
            G += m2.T @ m2
            C += m2.T @ r2
        eye = torch.eye(d, **on)
        lam = self.ridge * float(torch.trace(G)) / d
        T = torch.linalg.solve(G + lam * eye, C + lam * eye)
        err0 = err1 = norm = 0.0
        for (m, y), z in zip(samples, targets):
            err0 += float(((y + m - z) ** 2).sum())
            err1 += float(((y + m @ T - z) ** 2).sum())
            norm += float((z**2).sum())
        return T.cpu(), err0 / norm, err1 / norm


class _Resume:
    """Where the mid-stack capture passes of the next run start: per batch, the input of decoder layer ``layer`` with
    the gates and every map fitted so far in place before it (first the full model's kept input of the first run's
    layer). Each capture also keeps the input of the layer holding its branch (:meth:`watch`), which no later map
    changes, and the next run starts there (:meth:`advance`): fitting R runs costs about one partial pass over the
    layers they span, plus a layer per run, instead of R passes from the first run's layer."""

    def __init__(self, layer: int, hidden: list[Any], skip: Sequence[int] = ()) -> None:
        self.layer, self.hidden = layer, list(hidden)
        #: decoder layers the passes leave out (whole layers gated off)
        self.skip = frozenset(int(i) for i in skip)
        self._kept: list[Any] = []

    def watch(self, layers: Any, index: int) -> Any:
        """A pre-hook keeping the input of ``layers[index]`` on each pass."""
        self._kept = []

        def keep(module: Any, args: tuple, kwargs: dict) -> None:
            self._kept.append((args[0] if args else kwargs["hidden_states"]).detach())

        return layers[index].register_forward_pre_hook(keep, with_kwargs=True)

    def advance(self, index: int) -> None:
        """The next run's passes start at layer ``index`` from the inputs :meth:`watch` kept."""
        if len(self._kept) != len(self.hidden):
            raise RuntimeError("a capture pass did not reach the layer it was to resume from")
        self.layer, self.hidden, self._kept = index, self._kept, []


def _branch_projection(model: Any, layers: Any, block: Any) -> str | None:
    """The path, inside its decoder layer, of the ``nn.Linear`` that writes sub-layer ``block`` into the residual
    stream (e.g. "self_attn.o_proj"), or None."""
    attr = block.name.rsplit(".", 1)[1]
    branch = getattr(layers[block.layer], attr, None)
    for name in BRANCH_PROJECTIONS.get(block.kind, ()):
        if isinstance(getattr(branch, name, None), nn.Linear):
            return f"{attr}.{name}"
    return None


def _point_hook(layers: Any, block: Any, store: dict, key: Any, *, stop: bool) -> Any:
    """A hook keeping (float64, in ``store[key]``) the residual stream right after sub-layer ``block``: the input of
    ``post_attention_layernorm`` after an attention branch, the layer's output after an MLP; it ends the pass when
    ``stop``."""
    layer = layers[block.layer]
    if block.kind == "attention":
        def pre(module: Any, args: tuple, kwargs: dict) -> None:
            store[key] = (args[0] if args else kwargs["hidden_states"]).detach().double()
            if stop:
                raise StopPass

        return layer.post_attention_layernorm.register_forward_pre_hook(pre, with_kwargs=True)

    def post(module: Any, args: tuple, output: Any) -> None:
        store[key] = _first(output).detach().double()
        if stop:
            raise StopPass

    return layer.register_forward_hook(post)


def _run(model: Any, input_ids: Any) -> None:
    run_until_stopped(model, input_ids=model_inputs(model, input_ids), use_cache=False)


def _run_from(model: Any, adapter: Any, layer: int, hidden: Any, skip: Sequence[int] = ()) -> None:
    """Run decoder layers ``layer, layer+1, ...`` (but those in ``skip``) on ``hidden`` (the input of ``layer``),
    until a hook stops it."""
    with start_at(model, adapter, layer, frozenset(skip)):
        run_until_stopped(model, inputs_embeds=hidden, use_cache=False)


def _layer_path(model: Any, parent: Any, attr: str, index: int) -> str:
    for name, module in model.named_modules():
        if module is parent:
            return f"{name}.{attr}.{index}" if name else f"{attr}.{index}"
    return f"{attr}.{index}"


def _tied_embeddings(model: Any) -> bool:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return out is not None and inp is not None and out.weight is inp.weight
