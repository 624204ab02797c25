"""A conformance suite for :class:`~lmshrink.core.ArchitectureAdapter` implementations.

Every adapter, built in or from a third-party plugin, must satisfy the same contract; this module checks it on
a tiny model. Use it either as plain functions::

    from lmshrink.testing import run_conformance

    def test_my_adapter(tmp_path):
        run_conformance(MyAdapter(), make_tiny_model, tmp_path=tmp_path)

or by subclassing :class:`AdapterConformance` in a test module (pytest collects the subclass because its name
starts with ``Test``; the base class itself is not collected)::

    from lmshrink.testing import AdapterConformance

    class TestMyAdapter(AdapterConformance):
        adapter = MyAdapter()

        def make_model(self):
            return make_tiny_model()

What is checked, for each granularity of the adapter:

- block names resolve to modules of the model, kinds are known, indices run 0..N-1, and the list is the same
  on every call and on a second fresh model;
- gates at 1 leave the logits unchanged, and the gate context manager leaves no hook behind (even on error);
- gate 0 on some blocks equals the model with those blocks removed, for shared ``(N,)`` gates and for
  per-sample ``(B, N)`` gates, and removing them does change the logits (so the check is not vacuous);
- per-sample gate gradients are finite and every gate is wired (its gradient is not identically zero);
- removal + save + reload (plain transformers or lmshrink's format, as ``adapter.save_format`` says) equals the
  gated model, and the reloaded model has the kept blocks with their kinds;
- the pruned model, in memory and reloaded, decodes token by token through its cache to the logits of a full
  pass, and generates the same tokens greedily with and without the KV cache;
- a model of another architecture is refused: ``adapter.matches`` is False and
  :func:`lmshrink.plugins.find_adapter` raises a sentence naming the supported adapters and how to add one.

The model factory must return a small causal LM in float32 whose blocks measurably change the logits (random
weights with an initializer range of ~0.1 do); :func:`tiny_llama`, :func:`tiny_qwen3` and
:func:`tiny_nemotron_h` are such factories (and :func:`tiny_gpt2`, :func:`tiny_gpt_neox` for architectures that
only plugins support).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PretrainedConfig

from .. import tiny_models
from ..compat import cache_argument, output_cache
from ..compress.io import load_compressed, save_compressed
from ..core import BLOCK_KINDS, ArchitectureAdapter, Block, Gates, LmshrinkError
from ..plugins import find_adapter, registry
from ..tiny_models import *  # noqa: F401,F403 - the tiny models are part of this module's names
from .context import labelled as _context
from .context import pytest as _pytest

ModelFactory = Callable[[], Any]

#: default absolute tolerance of the logit comparisons
ATOL = 1e-5


# --- tiny models (the supported families are in lmshrink.tiny_models) ------------------------------------------


class UnsupportedModel(nn.Module):
    """A tiny language model of an architecture no adapter knows (for the refusal check)."""

    def __init__(self) -> None:
        super().__init__()

        self.config = PretrainedConfig(model_type="lmshrink-unsupported")
        self.embed = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16)

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.head(self.embed(input_ids))


# --- helpers -----------------------------------------------------------------------------------------------------


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block. Tiny models are dominated by per-op overhead, and on a busy
    machine torch's intra-op thread pool makes them tens of times slower; tests of tiny models run faster so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_ids(model: Any, batch: int = 2, seq_len: int = 12, seed: int = 0) -> torch.Tensor:
    """Random token ids for ``model`` (ids 3.. avoid the usual special tokens)."""
    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(min(3, vocab - 1), vocab, (batch, seq_len), generator=g)


def _module(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


@torch.no_grad()
def logits(
    model: Any, input_ids: torch.Tensor, adapter: ArchitectureAdapter | None = None, gates: Any = None,
    granularity: str = "layer",
) -> torch.Tensor:
    """Logits of ``model`` on ``input_ids`` (no cache), with ``gates`` installed through ``adapter`` when given."""
    if gates is None:
        return model(input_ids=input_ids, use_cache=False).logits.float()
    with adapter.gate(model, Gates(gates), granularity):
        return model(input_ids=input_ids, use_cache=False).logits.float()


def _hook_count(model: Any) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shapes differ, {tuple(actual.shape)} vs {tuple(expected.shape)}.")
    diff = float((actual - expected).abs().max()) if actual.numel() else 0.0
    if not diff <= atol:
        raise AssertionError(f"{what}: logits differ by up to {diff:.3g} (tolerance {atol:g}).")


def default_removals(blocks: Sequence[Block]) -> list[list[int]]:
    """Removal sets that exercise an adapter: one block of each kind, all blocks of one layer (when a layer has
    several blocks), and a mix of kinds spread over the model, never every block."""
    n = len(blocks)
    sets: list[list[int]] = []

    def add(s: Sequence[int]) -> None:
        s = sorted(set(int(i) for i in s))
        if s and len(s) < n and s not in sets:
            sets.append(s)

    kinds = list(dict.fromkeys(b.kind for b in blocks))
    for kind in kinds:
        of_kind = [b.index for b in blocks if b.kind == kind]
        add([of_kind[len(of_kind) // 2]])
    by_layer: dict[int, list[int]] = {}
    for b in blocks:
        by_layer.setdefault(b.layer, []).append(b.index)
    multi = [idx for idx in by_layer.values() if len(idx) > 1]
    if multi:
        add(multi[len(multi) // 2])
    mix = [next(b.index for b in blocks if b.kind == k) for k in kinds] + [blocks[-1].index]
    add(mix)
    return sets


def removal_sets(
    adapter: ArchitectureAdapter, model: Any, granularity: str, removals: Sequence[Sequence[int]] | None = None
) -> list[list[int]]:
    """The removal sets to check: ``removals`` as given, or the :func:`default_removals` that the adapter accepts
    (an adapter may refuse some removals with :class:`~lmshrink.core.LmshrinkError`, e.g. Nemotron-H refuses to
    drop its last attention block). At least one default set must be accepted."""
    if removals:
        return [list(r) for r in removals]
    accepted = []
    for indices in default_removals(adapter.blocks(model, granularity)):
        try:
            adapter.remove(copy.deepcopy(model), indices, granularity)
        except LmshrinkError:
            continue
        accepted.append(indices)
    if not accepted:
        raise AssertionError(f"{adapter!r} refused every default removal set at granularity {granularity!r}.")
    return accepted


def _prune_copy(adapter: ArchitectureAdapter, model: Any, indices: Sequence[int], granularity: str) -> Any:
    pruned = adapter.remove(copy.deepcopy(model), list(indices), granularity)
    pruned.eval()
    return pruned


# --- the checks --------------------------------------------------------------------------------------------------


def check_blocks(adapter: ArchitectureAdapter, make_model: ModelFactory, granularity: str = "layer") -> list[Block]:
    """Block names resolve, kinds are known, indices run 0..N-1, and the list is stable. Returns the blocks."""
    model = make_model()
    if not adapter.matches(model):
        raise AssertionError(f"{adapter!r} does not match the model its tests build ({type(model).__name__}).")
    blocks = adapter.blocks(model, granularity)
    if not blocks:
        raise AssertionError(f"{adapter!r} reports no blocks at granularity {granularity!r}.")
    for position, b in enumerate(blocks):
        if not isinstance(b, Block):
            raise AssertionError(f"blocks() must return Block objects, got {type(b).__name__}.")
        if b.index != position:
            raise AssertionError(f"Block {b.name} has index {b.index} at position {position}.")
        if b.kind not in BLOCK_KINDS:
            raise AssertionError(f"Block {b.name} has kind {b.kind!r}, not one of {BLOCK_KINDS}.")
        try:
            module = _module(model, b.name)
        except AttributeError:
            raise AssertionError(f"Block name {b.name!r} is not a module path of the model.") from None
        if not isinstance(module, nn.Module):
            raise AssertionError(f"Block name {b.name!r} names a {type(module).__name__}, not a module.")
    if len({b.name for b in blocks}) != len(blocks):
        raise AssertionError("Two blocks share a name.")
    again = adapter.blocks(model, granularity)
    if again != blocks:
        raise AssertionError("blocks() changed between two calls on the same model.")
    if adapter.blocks(make_model(), granularity) != blocks:
        raise AssertionError("blocks() differs between two models from the same factory.")
    if list(adapter.iter_kinds(model, granularity)) != [b.kind for b in blocks]:
        raise AssertionError("iter_kinds() disagrees with blocks().")
    try:
        adapter.blocks(model, "no-such-granularity")
    except LmshrinkError:
        pass
    else:
        raise AssertionError("blocks() accepted an unknown granularity instead of raising LmshrinkError.")
    try:
        adapter.remove(copy.deepcopy(model), [len(blocks)], granularity)
    except LmshrinkError:
        pass
    else:
        raise AssertionError("remove() accepted an out-of-range block index instead of raising LmshrinkError.")
    return blocks


def check_gates_one(
    adapter: ArchitectureAdapter, model: Any, granularity: str = "layer", input_ids: torch.Tensor | None = None,
    atol: float = 1e-6,
) -> None:
    """Gates at 1, shared (N,) or per sample (B, N), leave the logits unchanged; no hook survives the context."""
    ids = sample_ids(model) if input_ids is None else input_ids
    n = len(adapter.blocks(model, granularity))
    hooks = _hook_count(model)
    base = logits(model, ids)
    _assert_close(logits(model, ids, adapter, torch.ones(n), granularity), base, atol, "gates = 1 (shared)")
    per_sample = torch.ones(ids.shape[0], n)
    _assert_close(logits(model, ids, adapter, per_sample, granularity), base, atol, "gates = 1 (per sample)")
    if _hook_count(model) != hooks:
        raise AssertionError("The gate context manager left hooks on the model.")

    class _Boom(Exception):
        pass

    try:
        with adapter.gate(model, Gates(torch.ones(n)), granularity):
            raise _Boom
    except _Boom:
        pass
    if _hook_count(model) != hooks:
        raise AssertionError("The gate context manager left hooks on the model after an exception.")


def check_gate_zero_is_removal(
    adapter: ArchitectureAdapter, model: Any, indices: Sequence[int], granularity: str = "layer",
    input_ids: torch.Tensor | None = None, atol: float = ATOL,
) -> Any:
    """Gate 0 on ``indices`` equals removing them (shared and per-sample gates); returns the pruned copy."""
    ids = sample_ids(model) if input_ids is None else input_ids
    blocks = adapter.blocks(model, granularity)
    n = len(blocks)
    values = torch.ones(n)
    values[list(indices)] = 0.0
    gated = logits(model, ids, adapter, values, granularity)
    base = logits(model, ids)
    if float((gated - base).abs().max()) <= 10 * atol:
        raise AssertionError(
            f"Gating blocks {list(indices)} off does not change the logits: the check would be vacuous. Build the "
            "test model with larger random weights (e.g. initializer_range=0.1), or the gates are not wired."
        )
    pruned = _prune_copy(adapter, model, indices, granularity)
    removed = logits(pruned, ids)
    names = [blocks[i].name for i in indices]
    _assert_close(removed, gated, atol, f"gate 0 vs removal of {names}")
    # per-sample gates: row 0 keeps every block, the other rows drop ``indices``
    per_sample = torch.ones(ids.shape[0], n)
    per_sample[1:, list(indices)] = 0.0
    mixed = logits(model, ids, adapter, per_sample, granularity)
    _assert_close(mixed[:1], base[:1], atol, "per-sample gates, sample with every gate at 1")
    _assert_close(mixed[1:], removed[1:], atol, f"per-sample gates, samples with {names} gated off")
    kept = [b.kind for b in blocks if b.index not in set(indices)]
    left = adapter.blocks(pruned, granularity)
    if [b.kind for b in left] != kept:
        raise AssertionError(f"After removing {names} the blocks' kinds are {[b.kind for b in left]}, expected {kept}.")
    return pruned


def check_gate_gradients(
    adapter: ArchitectureAdapter, model: Any, granularity: str = "layer", input_ids: torch.Tensor | None = None
) -> None:
    """Per-sample gate gradients from one backward pass are finite, shaped (B, N), and no gate is unwired."""
    ids = sample_ids(model) if input_ids is None else input_ids
    n = len(adapter.blocks(model, granularity))
    gates = torch.ones(ids.shape[0], n, requires_grad=True)
    with torch.enable_grad(), adapter.gate(model, Gates(gates), granularity):
        out = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
    model.zero_grad(set_to_none=True)
    grad = gates.grad
    if grad is None or grad.shape != (ids.shape[0], n):
        raise AssertionError(f"Gate gradients missing or misshapen: {None if grad is None else tuple(grad.shape)}.")
    if not torch.isfinite(grad).all():
        raise AssertionError("Gate gradients are not finite.")
    dead = [i for i in range(n) if float(grad[:, i].abs().max()) == 0.0]
    if dead:
        raise AssertionError(f"Gates {dead} get an identically zero gradient: they are not wired into the model.")


def save_pruned(adapter: ArchitectureAdapter, model: Any, indices: Sequence[int], granularity: str, path: str | Path) -> tuple[Any, str]:
    """Prune a copy of ``model`` and save it in the format ``adapter.save_format`` asks for.

    Returns (pruned model, format). This is what the prune pipeline does, in miniature.
    """
    fmt = adapter.save_format(model, list(indices), granularity)
    if fmt not in ("transformers", "lmshrink"):
        raise AssertionError(f"save_format returned {fmt!r}, expected 'transformers' or 'lmshrink'.")
    pruned = _prune_copy(adapter, model, indices, granularity)
    if fmt == "transformers":
        pruned.save_pretrained(path)
    else:
        save_compressed(pruned, path)
    return pruned, fmt


def load_pruned(path: str | Path, fmt: str) -> Any:
    """Reload a model written by :func:`save_pruned`."""
    if fmt == "transformers":
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    return load_compressed(path)


def check_save_reload(
    adapter: ArchitectureAdapter, model: Any, indices: Sequence[int], path: str | Path, granularity: str = "layer",
    input_ids: torch.Tensor | None = None, atol: float = ATOL,
) -> Any:
    """Removal + save + reload equals the gated model, and keeps the blocks' kinds. Returns the reloaded model."""
    ids = sample_ids(model) if input_ids is None else input_ids
    blocks = adapter.blocks(model, granularity)
    values = torch.ones(len(blocks))
    values[list(indices)] = 0.0
    gated = logits(model, ids, adapter, values, granularity)
    _, fmt = save_pruned(adapter, model, indices, granularity, path)
    reloaded = load_pruned(path, fmt)
    if not adapter.matches(reloaded):
        raise AssertionError(f"{adapter!r} does not match the reloaded pruned model ({fmt} format).")
    _assert_close(logits(reloaded, ids), gated, atol, f"reloaded ({fmt} format) vs gated model")
    kept = [b.kind for b in blocks if b.index not in set(indices)]
    left = [b.kind for b in adapter.blocks(reloaded, granularity)]
    if left != kept:
        raise AssertionError(f"The reloaded model's blocks have kinds {left}, expected {kept}.")
    return reloaded


def check_incremental_decoding(model: Any, input_ids: torch.Tensor | None = None, atol: float = 1e-4) -> None:
    """A prefix pass that fills the cache, then one step per token given only the cache (no positions), gives
    the logits of one full pass: the cache's per-layer entries and token count are consistent."""
    ids = sample_ids(model, batch=2, seq_len=9, seed=2) if input_ids is None else input_ids
    split = ids.shape[1] - 3
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits.float()
        cache = output_cache(model(input_ids=ids[:, :split], use_cache=True))
        for t in range(split, ids.shape[1]):
            step = model(input_ids=ids[:, t : t + 1], use_cache=True, **{cache_argument(model): cache})
            cache = output_cache(step)
            _assert_close(step.logits[:, -1].float(), full[:, t], atol, f"cached decoding step at position {t}")


def check_generation(model: Any, input_ids: torch.Tensor | None = None, max_new_tokens: int = 5) -> torch.Tensor:
    """Incremental decoding through the cache matches a full pass (:func:`check_incremental_decoding`), and
    greedy generation with the KV cache equals generation without it. Returns the generated ids."""
    check_incremental_decoding(model)
    prompt = sample_ids(model, batch=1, seq_len=7, seed=1) if input_ids is None else input_ids
    kwargs = dict(
        attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=getattr(model.config, "pad_token_id", None) or 0,
    )
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        plain = model.generate(prompt, use_cache=False, **kwargs)
    if cached.shape[1] <= prompt.shape[1]:
        raise AssertionError("generate() produced no new token.")
    if not torch.equal(cached, plain):
        raise AssertionError(
            f"Greedy generation differs with the KV cache: {cached[0, prompt.shape[1]:].tolist()} (cache) vs "
            f"{plain[0, prompt.shape[1]:].tolist()} (no cache)."
        )
    return cached


def check_refuses(adapter: ArchitectureAdapter, foreign: Sequence[Any] = ()) -> None:
    """``adapter`` does not match models of other architectures, and :func:`~lmshrink.plugins.find_adapter`
    refuses an unsupported model with a sentence listing the supported adapters and how to write one."""
    unsupported = UnsupportedModel()
    for other in [unsupported, *foreign]:
        if adapter.matches(other):
            raise AssertionError(f"{adapter!r} claims to support {type(other).__name__}.")
    try:
        find_adapter(unsupported)
    except LmshrinkError as exc:
        message = str(exc)
    else:
        raise AssertionError("find_adapter() accepted a model no adapter supports.")
    missing = [e.name for e in registry("adapter") if e.name not in message]
    if missing:
        raise AssertionError(f"The refusal does not name the supported adapters {missing}: {message!r}")
    if "plugin" not in message or "ArchitectureAdapter" not in message:
        raise AssertionError(f"The refusal does not say how to write an adapter plugin: {message!r}")


def run_conformance(
    adapter: ArchitectureAdapter,
    make_model: ModelFactory,
    *,
    tmp_path: str | Path,
    granularities: Sequence[str] | None = None,
    removals: Sequence[Sequence[int]] | None = None,
    foreign: Sequence[Any] = (),
    atol: float = ATOL,
) -> None:
    """Every check of this module, for each granularity (default: all the adapter's) and removal set
    (default: :func:`default_removals`), with torch on one thread (:func:`single_thread`)."""
    tmp_path = Path(tmp_path)
    with single_thread():
        _run_conformance(adapter, make_model, tmp_path, granularities, removals, foreign, atol)


def _run_conformance(
    adapter: ArchitectureAdapter, make_model: ModelFactory, tmp_path: Path, granularities: Sequence[str] | None,
    removals: Sequence[Sequence[int]] | None, foreign: Sequence[Any], atol: float,
) -> None:
    for granularity in granularities or adapter.granularities:
        with _context(f"granularity {granularity!r}"):
            blocks = check_blocks(adapter, make_model, granularity)
            model = make_model()
            ids = sample_ids(model)
            check_gates_one(adapter, model, granularity, ids)
            check_gate_gradients(adapter, model, granularity, ids)
            for k, indices in enumerate(removal_sets(adapter, model, granularity, removals)):
                with _context(f"removing {[blocks[i].name for i in indices]}"):
                    pruned = check_gate_zero_is_removal(adapter, model, indices, granularity, ids, atol)
                    check_generation(pruned)
                    reloaded = check_save_reload(
                        adapter, model, indices, tmp_path / f"{granularity}-{k}", granularity, ids, atol
                    )
                    check_generation(reloaded)
    check_refuses(adapter, foreign)


class AdapterConformance:
    """Base class of a pytest conformance test class for one adapter (subclass it as ``TestSomething``).

    Set ``adapter`` (an instance) and define ``make_model``; optionally set ``granularities``, ``removals`` (a
    list of index lists, used for every granularity) and ``foreign_models`` (models the adapter must refuse).
    Its tests run torch on one thread (:func:`single_thread`).
    """

    adapter: ArchitectureAdapter
    granularities: Sequence[str] | None = None
    removals: Sequence[Sequence[int]] | None = None
    atol: float = ATOL

    if _pytest is not None:

        @_pytest.fixture(autouse=True)
        def _lmshrink_single_thread(self) -> Iterator[None]:
            with single_thread():
                yield

    def make_model(self) -> Any:
        """A tiny float32 causal LM that the adapter supports."""
        raise NotImplementedError("Subclasses define make_model().")

    def foreign_models(self) -> list[Any]:
        """Models of other architectures the adapter must not match (an unsupported toy model is always added)."""
        return []

    def _granularities(self) -> Sequence[str]:
        return self.granularities or self.adapter.granularities

    def _removals(self, model: Any, granularity: str) -> list[list[int]]:
        return removal_sets(self.adapter, model, granularity, self.removals)

    def test_blocks_are_stable(self) -> None:
        for g in self._granularities():
            with _context(f"granularity {g!r}"):
                check_blocks(self.adapter, self.make_model, g)

    def test_gates_at_one_leave_logits_unchanged(self) -> None:
        model = self.make_model()
        for g in self._granularities():
            with _context(f"granularity {g!r}"):
                check_gates_one(self.adapter, model, g)

    def test_gate_gradients(self) -> None:
        model = self.make_model()
        for g in self._granularities():
            with _context(f"granularity {g!r}"):
                check_gate_gradients(self.adapter, model, g)

    def test_gate_zero_equals_removal(self) -> None:
        model = self.make_model()
        for g in self._granularities():
            for indices in self._removals(model, g):
                with _context(f"granularity {g!r}, removing {list(indices)}"):
                    pruned = check_gate_zero_is_removal(self.adapter, model, indices, g, atol=self.atol)
                    check_generation(pruned)

    def test_save_reload_generate(self, tmp_path: Path) -> None:
        model = self.make_model()
        for g in self._granularities():
            for k, indices in enumerate(self._removals(model, g)):
                with _context(f"granularity {g!r}, removing {list(indices)}"):
                    reloaded = check_save_reload(self.adapter, model, indices, tmp_path / f"{g}-{k}", g, atol=self.atol)
                    check_generation(reloaded)

    def test_refuses_other_architectures(self) -> None:
        check_refuses(self.adapter, self.foreign_models())


def conformance_suite(adapter: ArchitectureAdapter, make_model: Callable[[], Any], *,
                      foreign: Sequence[Callable[[], Any]] = (), **settings: Any) -> type[AdapterConformance]:
    """An :class:`AdapterConformance` test class for ``adapter`` on the models ``make_model`` builds, refusing the
    models the ``foreign`` factories build; ``settings`` set its other attributes (``granularities``,
    ``removals``). Give it a ``Test...`` name: ``TestGPT2 = conformance_suite(GPT2Adapter(), tiny_gpt2)``."""
    body = {"adapter": adapter, "make_model": lambda self: make_model(),
            "foreign_models": lambda self: [build() for build in foreign], **settings}
    return type(f"{type(adapter).__name__}Conformance", (AdapterConformance,), body)


__all__ = [
    "ATOL",
    "AdapterConformance",
    "UnsupportedModel",
    "check_blocks",
    "check_gate_gradients",
    "conformance_suite",
    "check_gate_zero_is_removal",
    "check_gates_one",
    "check_generation",
    "check_incremental_decoding",
    "check_refuses",
    "check_save_reload",
    "default_removals",
    "load_pruned",
    "logits",
    "removal_sets",
    "run_conformance",
    "sample_ids",
    "save_pruned",
    "single_thread",
    *tiny_models.__all__,
]
