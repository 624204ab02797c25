"""Example lmshrink plugin: an architecture adapter for GPT-2."""

from .adapter import GPT2Adapter

__all__ = ["GPT2Adapter"]
__version__ = "0.1.0"
