"""Modeling code for a model that lmshrink compressed: decoder layers without their attention or MLP, and
low-rank or PivGa (gauge-fixed low-rank) linear layers. It needs only torch and transformers:

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)

builds the stock model of config.json, replays the structure recorded under ``lmshrink_transforms`` (the same
list as lmshrink_config.json, in order), then transformers loads model.safetensors into it.

Transforms: ``remove_sublayers`` ({"removed": [[layer, "self_attn" | "mlp"], ...], "layers": path}): the branch
returns zeros, so the residual passes unchanged; ``low_rank`` ({"layers": {path: r}}): y = L (R x) + b with
L (out × r), R (r × in); ``pivga`` ({"layers": {path: r}}): y[P] = rows · x, y[P̄] = coef · y[P], with the output
order given by the ``inverse`` permutation (y = [y[P], y[P̄]][inverse]) + b.
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
        return F.linear(F.linear(x, self.right), self.left, self.bias)


class PivGaLinear(nn.Module):
    """y[P] = rows · x, y[P̄] = coef · y[P], reordered by ``inverse`` (+ bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = int(in_features), int(out_features), int(rank)
        self.rows = nn.Parameter(torch.zeros(rank, in_features, dtype=dtype))
        self.coef = nn.Parameter(torch.zeros(out_features - rank, rank, dtype=dtype))
        self.register_buffer("inverse", torch.arange(out_features, dtype=torch.int64))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.linear(x, self.rows)
        if self.rank * (self.in_features + self.out_features) <= self.in_features * self.out_features:
            # the same arithmetic as lmshrink's layer: y = E·z with E[P] = I and E[P̄] = coef, in output order
            return F.linear(z, self._expanded_left(), self.bias)
        y = torch.cat([z, F.linear(z, self.coef)], dim=-1).index_select(-1, self.inverse)
        return y + self.bias if self.bias is not None else y


    def _expanded_left(self) -> torch.Tensor:
        """E, built once by copies and rebuilt only when ``coef`` or ``inverse`` change (or under autograd)."""
        coef, inverse = self.coef, self.inverse
        if torch.is_grad_enabled() and coef.requires_grad:
            return self._build_left()
        key = (_version(coef), coef.data_ptr(), coef.dtype, coef.device, _version(inverse), inverse.data_ptr())
        if getattr(self, "_left_key", None) != key:
            with torch.no_grad():
                self._left = self._build_left()
            self._left_key = key
        return self._left

    def _build_left(self) -> torch.Tensor:
        eye = torch.eye(self.rank, dtype=self.coef.dtype, device=self.coef.device)
        return torch.cat([eye, self.coef], dim=0).index_select(0, self.inverse).contiguous()


def _version(t: torch.Tensor) -> int:
    """The in-place version counter of ``t`` (-1 for an inference tensor, which has none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


class RemovedAttention(nn.Module):
    """A deleted attention branch: returns zeros, and still advances the KV cache of its layer (the decoder reads
    the number of tokens seen from it)."""

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


class RemovedMLP(nn.Module):
    """A deleted MLP branch: returns zeros."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def _replace(root: nn.Module, path: str, module: nn.Module) -> nn.Module:
    parent, _, child = path.rpartition(".")
    owner = root.get_submodule(parent) if parent else root
    old = getattr(owner, child)
    setattr(owner, child, module)
    return old


def _removed_branch(config: Any, attr: str, layer_idx: int) -> nn.Module:
    if attr == "mlp":
        return RemovedMLP()
    if attr != "self_attn":
        raise ValueError(f"Unknown decoder-layer branch {attr!r}.")
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or int(config.hidden_size) // heads)
    return RemovedAttention(layer_idx, kv_heads, head_dim)


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
                _replace(model, path, layer_types[kind](old.in_features, old.out_features, int(rank),
                                                        old.bias is not None, old.weight.dtype))
        else:
            raise ValueError(f"This modeling code does not know the transform {kind!r}; load the model with "
                             "lmshrink.load_compressed.")


class LmshrinkForCausalLM(getattr(transformers, BASE_CLASS)):
    """The stock causal LM with the recorded lmshrink transforms replayed before the weights load."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        apply_transforms(self, list(getattr(config, "lmshrink_transforms", None) or []))
