"""Example lmshrink plugin: an architecture adapter for GPT-NeoX."""

from .adapter import GPTNeoXAdapter

__all__ = ["GPTNeoXAdapter"]
__version__ = "0.1.0"
