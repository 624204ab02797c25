"""The ArchitectureAdapter contract: where the blocks of a model are, how to gate them and remove them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import LmshrinkError

#: block kinds an adapter may report
BLOCK_KINDS = ("layer", "attention", "mlp", "mamba", "moe")


@dataclass(frozen=True)
class Block:
    """One removable unit of a model.

    ``index`` is its 0-based position in the adapter's block list (the problem's variable index), ``name`` its
    module path (e.g. ``model.layers.3`` or ``model.layers.3.self_attn``), ``kind`` one of :data:`BLOCK_KINDS`,
    and ``layer`` the 0-based decoder layer it belongs to.
    """

    index: int
    name: str
    kind: str
    layer: int

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "kind": self.kind, "layer": self.layer}


class Gates:
    """Scalar gates on blocks, installed by :meth:`ArchitectureAdapter.gate`.

    ``values`` is a torch tensor of shape ``(N,)`` (one gate per block) or ``(B, N)`` (one gate per block and per
    sample of the batch, which gives per-sample gradients from a single batched backward pass). Gate 1 leaves the
    block unchanged, gate 0 skips it. Each gate is cast to its activation's dtype and device where it is applied,
    so the values may stay float32 on the CPU for a bfloat16 model on a GPU (their gradient arrives there).
    """

    def __init__(self, values: Any) -> None:
        self.values = values

    def __call__(self, block: int, like: Any) -> Any:
        """The gate of ``block`` shaped to broadcast against an activation ``like`` of shape (B, T, ...)."""
        g = self.values[..., block].to(device=like.device, dtype=like.dtype)  # the block's device (device maps)
        if g.dim() == 0:
            return g
        return g.reshape(-1, *([1] * (like.dim() - 1)))


def scaled_output_hook(gates: Gates, index: int):
    """A forward hook (``register_forward_hook(hook, with_kwargs=True)``) that multiplies a branch's output by the
    gate of block ``index``: for a residual branch ``h + f(h)`` this gives ``h + g·f(h)``, exact at g = 0 and 1.
    Tuple outputs (attention's ``(output, weights)``) keep their other members."""

    def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] * gates(index, output[0]), *output[1:])
        return output * gates(index, output)

    return hook


def mixed_output_hook(gates: Gates, index: int):
    """A forward hook (``register_forward_hook(hook, with_kwargs=True)``) that mixes a whole residual block's input
    and output by the gate of block ``index``: ``(1 − g)·h_in + g·block(h_in)`` is exactly the block's output at
    g = 1 and exactly its input (the block skipped) at g = 0. Tuple outputs keep their other members."""

    def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        h = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output
        g = gates(index, out)
        mixed = (1 - g) * h + g * out
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

    return hook


class ArchitectureAdapter(ABC):
    """Base class of every architecture adapter plugin."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: granularities this adapter can gate and remove, the first is the default
    granularities: ClassVar[tuple[str, ...]] = ("layer",)

    @abstractmethod
    def matches(self, model: Any) -> bool:
        """Whether this adapter understands ``model``."""

    @abstractmethod
    def blocks(self, model: Any, granularity: str = "layer") -> list[Block]:
        """The removable blocks of ``model``, in order."""

    @abstractmethod
    def gate(self, model: Any, gates: Gates, granularity: str = "layer") -> AbstractContextManager[None]:
        """Context manager that installs ``gates`` on the blocks of ``model`` and removes them on exit."""

    @abstractmethod
    def remove(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> Any:
        """Delete the blocks at ``indices`` and rewrite the config; returns the (smaller) model."""

    def check_granularity(self, granularity: str) -> None:
        """Raise :class:`~lmshrink.core.LmshrinkError` unless ``granularity`` is one of :attr:`granularities`."""
        if granularity not in self.granularities:
            raise LmshrinkError(
                f"Adapter {self.name!r} has no granularity {granularity!r}; use one of {list(self.granularities)}."
            )

    def layer_list(self, model: Any) -> tuple[Any, str] | None:
        """``(parent module, attribute)`` of the ``nn.ModuleList`` of decoder layers, when ``model(inputs_embeds=h)``
        runs exactly those layers in order on ``h`` (no embedding scaling). This optional capability lets a
        measurement start a forward pass mid-stack from a cached hidden state; None (the default) means
        unsupported, and measurements run the whole model instead."""
        return None

    def removal_error(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> str | None:
        """Why removing ``indices`` would leave a model the architecture cannot run, or None when it can.
        The pipeline skips candidates with an error and checks per-kind requests before solving."""
        return None

    def unit_parameters(self, model: Any, blocks: Sequence[Block]) -> list[int]:
        """The parameters each block holds, i.e. what removing it saves (the weights of a parameter budget).

        Default: the parameters of the module at each block's ``name`` (a module path), counting a tensor shared
        by several modules once per block. Override where a block is not one module."""
        counts = []
        for b in blocks:
            try:
                module = model.get_submodule(b.name)
            except AttributeError:
                raise LmshrinkError(f"Adapter {self.name!r}: block {b.index} is named {b.name!r}, which is not a "
                                    "module of the model; the adapter must override unit_parameters.") from None
            counts.append(int(sum(p.numel() for p in module.parameters())))
        return counts

    def decoder_parameters(self, model: Any) -> int:
        """The parameters of the decoder layers, what a share of ``--remove 25%`` refers to (default: the sum over
        the blocks at the ``layer`` granularity)."""
        return int(sum(self.unit_parameters(model, self.blocks(model, "layer"))))

    def linear_layers(self, model: Any) -> dict[str, Any]:
        """The weight matrices that SVD compression may factor, by module path."""
        raise NotImplementedError(f"Adapter {self.name!r} does not list linear layers.")

    def save_format(self, model: Any, indices: Sequence[int], granularity: str = "layer") -> str:
        """``"transformers"`` when the pruned model is expressible in its own config, else ``"lmshrink"``."""
        return "transformers"

    def transforms(self) -> Mapping[str, Any]:
        """The structural transforms this adapter records on the models it changes, by type: the
        :class:`lmshrink.compress.io.TransformType` objects that :func:`~lmshrink.compress.io.load_compressed`
        validates and replays when a saved model names them. Import them lazily here (they need torch); the
        default is none."""
        return {}

    def iter_kinds(self, model: Any, granularity: str = "layer") -> Iterator[str]:
        return (b.kind for b in self.blocks(model, granularity))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
