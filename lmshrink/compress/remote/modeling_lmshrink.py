"""Modeling code for a model that lmshrink compressed: decoder layers without their attention or MLP, and
low-rank or PivGa (gauge-fixed low-rank) linear layers. It needs only torch and transformers:

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)

builds the stock model of config.json, replays the structure recorded under ``lmshrink_transforms`` (the same
list as lmshrink_config.json, in order), then transformers loads model.safetensors into it.

Transforms: ``remove_sublayers`` ({"removed": [[layer, "self_attn" | "mlp"], ...], "layers": path}): the branch
returns zeros, so the residual passes unchanged; ``low_rank`` ({"layers": {path: r}}): y = L (R x) + b with
L (out × r), R (r × in); ``pivga`` ({"layers": {path: r}}): y[P] = rows · x, y[P̄] = coef · y[P], with the output
order given by the ``inverse`` permutation (y = [y[P], y[P̄]][inverse]) + b.

lmshrink's own layers (:mod:`lmshrink.compress.low_rank`, :mod:`lmshrink.compress.pivga`,
:mod:`lmshrink.adapters.sublayer`) extend the classes of this file, so a saved model computes the same with or
without lmshrink.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers

#: the transformers class this model extends (the writer sets it from the saved config's architecture)
BASE_CLASS = "LlamaForCausalLM"
#: keyword names under which a decoder passes the KV cache to its sub-modules, newest first
CACHE_KWARGS = ("cache", "past_key_values")


class LowRankLinear(nn.Module):
    """y = left · (right · x) + bias."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = int(in_features), int(out_features), int(rank)
        self.left = nn.Parameter(torch.zeros(out_features, rank, dtype=dtype))
        self.right = nn.Parameter(torch.zeros(rank, in_features, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.right), _column_major(self.left), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class PivGaLinear(nn.Module):
    """y[P] = rows · x, y[P̄] = coef · y[P] (+ bias), with ``inverse`` mapping output position i to its place in
    the concatenation [y[P], y[P̄]]: a rank-r layer storing r(m + n) − r² numbers."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = int(in_features), int(out_features), int(rank)
        self.rows = nn.Parameter(torch.zeros(rank, in_features, dtype=dtype))
        self.coef = nn.Parameter(torch.zeros(out_features - rank, rank, dtype=dtype))
        self.register_buffer("inverse", torch.arange(out_features, dtype=torch.int64))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None

    @property
    def gather_free(self) -> bool:
        """Whether the forward is y = E·(B′x) (two products, r(m + n) multiply-adds): when that is no more than the
        dense m·n. At higher ranks (which only the gauge-fixed storage reaches) the forward computes y[P̄] = C·y[P]
        and gathers the rows into place, r(m + n) − r² multiply-adds."""
        return self.rank * (self.in_features + self.out_features) <= self.in_features * self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.linear(x, self.rows)  # y[P]
        if self.gather_free:
            # two matrix products and no gather of the outputs (E is laid out once): r² more multiply-adds than the
            # gathered form below, and faster than its cat and gather on the CPU
            return F.linear(z, self.expanded_left(), self.bias)
        y = torch.cat([z, F.linear(z, self.coef)], dim=-1).index_select(-1, self.inverse)
        return y + self.bias if self.bias is not None else y

    def expanded_left(self) -> torch.Tensor:
        """E (m × r) with E[P] = I and E[P̄] = C, in the output rows' own order, so that y = E·(B′x).

        Built from ``coef`` and ``inverse`` by copies only (exact in every dtype). Without autograd it is kept and
        rebuilt only when ``coef`` or ``inverse`` change (in place, by loading weights, or by ``.to()``); with
        autograd on a trainable ``coef`` it is rebuilt on every call so that gradients reach ``coef``.
        """
        coef, inverse = self.coef, self.inverse
        if torch.is_grad_enabled() and coef.requires_grad:
            return self._build_left(coef, inverse)
        key = (_version(coef), coef.data_ptr(), coef.dtype, coef.device, _version(inverse), inverse.data_ptr())
        if getattr(self, "_left_key", None) != key:
            with torch.no_grad():
                self._left = self._build_left(coef.detach(), inverse)
            self._left_key = key
        return self._left

    def _build_left(self, coef: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.rank, dtype=coef.dtype, device=coef.device)
        return _columns_contiguous(torch.cat([eye, coef], dim=0).index_select(0, inverse))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def _columns_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` (m × r) laid out column by column: F.linear(z, t) then multiplies z by the row-major r × m matrix tᵀ,
    which streams the weights in long rows; with t row-major each output is a dot product of only r numbers, and a
    matrix-vector product (decoding) runs a third slower on the CPU."""
    return t.t().contiguous().t()


def _column_major(left: nn.Parameter) -> nn.Parameter:
    """The left factor ``left``, its storage relaid column by column in place the first time (whatever loaded or
    moved it); the values, the shape and the saved weights do not change."""
    if left.dim() == 2 and not left.t().is_contiguous():
        with torch.inference_mode(False), torch.no_grad():
            left.data = _columns_contiguous(left.data)
    return left


def _version(t: torch.Tensor) -> int:
    """The in-place version counter of ``t`` (-1 for an inference tensor, which has none and cannot change)."""
    try:
        return t._version
    except RuntimeError:
        return -1


class RemovedAttention(nn.Module):
    """Stands in for a deleted attention branch: no parameters, returns ``(zeros_like(h), None)``.

    It still keeps the KV cache's bookkeeping right: the decoder reads the number of tokens already seen from the
    cache of its first layer, so a layer whose attention is gone must still advance its cache entry. For a dynamic
    cache it appends keys and values of shape (batch, 1, tokens, 1), a negligible amount of memory; for any other
    cache layer (static, quantized) it writes zeros of the attention's own key/value shape.
    """

    def __init__(self, layer_idx: int, num_key_value_heads: int = 1, head_dim: int = 1) -> None:
        super().__init__()
        self.layer_idx, self.num_key_value_heads, self.head_dim = layer_idx, num_key_value_heads, head_dim

    def forward(self, hidden_states: torch.Tensor | None = None, *args: Any,
                **kwargs: Any) -> tuple[torch.Tensor, None]:
        if hidden_states is None:
            hidden_states = args[0]
        cache = next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)
        if cache is not None and hasattr(cache, "update"):
            self._advance_cache(cache, hidden_states)
        return torch.zeros_like(hidden_states), None

    def _advance_cache(self, cache: Any, hidden_states: torch.Tensor) -> None:
        # here, not at the top: the file must load in a transformers without these classes (only a cache needs them)
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        layers = getattr(cache, "layers", None)
        layer = layers[self.layer_idx] if layers is not None and self.layer_idx < len(layers) else None
        batch, tokens = hidden_states.shape[:2]
        if layer is None or type(layer) in (DynamicLayer, DynamicSlidingWindowLayer):
            shape = (batch, 1, tokens, 1)  # a dynamic cache only counts the tokens: the smallest entry will do
        else:
            shape = (batch, self.num_key_value_heads, tokens, self.head_dim)
        zeros = hidden_states.new_zeros(shape)
        cache.update(zeros, zeros, self.layer_idx)

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}"


class RemovedMLP(nn.Module):
    """Stands in for a deleted MLP branch: no parameters, returns zeros shaped like its input."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def replace_module(root: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at the dotted ``path`` under ``root``; returns the module it replaced."""
    parent, _, child = path.rpartition(".")
    owner = root.get_submodule(parent) if parent else root
    old = getattr(owner, child)
    setattr(owner, child, module)
    return old


def kv_shape(config: Any) -> tuple[int, int]:
    """(key/value heads, head dimension) of a decoder's attention, from its config."""
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
    return int(kv_heads), int(head_dim)


def _removed_branch(config: Any, attr: str, layer_idx: int) -> nn.Module:
    if attr == "mlp":
        return RemovedMLP()
    if attr != "self_attn":
        raise ValueError(f"Unknown decoder-layer branch {attr!r}.")
    return RemovedAttention(layer_idx, *kv_shape(config))


def apply_transforms(model: nn.Module, transforms: list[dict[str, Any]]) -> None:
    """Give a freshly built stock ``model`` the module shapes of the saved one (the weights load afterwards)."""
    layer_types = {"low_rank": LowRankLinear, "pivga": PivGaLinear}
    for spec in transforms:
        kind = spec["type"]
        if kind == "remove_sublayers":
            layers = model.get_submodule(spec.get("layers", "model.layers"))
            for layer_idx, attr in spec["removed"]:
                setattr(layers[int(layer_idx)], attr, _removed_branch(model.config, attr, int(layer_idx)))
        elif kind in layer_types:
            for path, rank in spec["layers"].items():
                old = model.get_submodule(path)
                replace_module(model, path, layer_types[kind](old.in_features, old.out_features, int(rank),
                                                        old.bias is not None, old.weight.dtype))
        else:
            raise ValueError(f"This modeling code does not know the transform {kind!r}; load the model with "
                             "lmshrink.load_compressed.")


def _causal_lm_class() -> type:
    class LmshrinkForCausalLM(getattr(transformers, BASE_CLASS)):
        """The stock causal LM with the recorded lmshrink transforms replayed before the weights load."""

        def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            apply_transforms(self, list(getattr(config, "lmshrink_transforms", None) or []))

    LmshrinkForCausalLM.__qualname__ = LmshrinkForCausalLM.__name__
    return LmshrinkForCausalLM


def __getattr__(name: str) -> Any:
    # ``LmshrinkForCausalLM`` is made on first access (transformers' loader reads it with getattr), so that the
    # layers above can be imported without loading the base model's modeling code
    if name == "LmshrinkForCausalLM":
        globals()[name] = cls = _causal_lm_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
