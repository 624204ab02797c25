"""Built-in architecture adapters, registered through the same hook a third-party adapter uses, and
:class:`DecoderStackAdapter`, the base class an adapter for a stack of decoder layers is declared with."""

from .decoder_stack import DecoderStackAdapter

__all__ = ["DecoderStackAdapter"]
