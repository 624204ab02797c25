"""Test helpers for lmshrink and its plugins: tiny models and the adapter conformance suite.

Importing this package needs torch and transformers (and pytest only to run the tests, not to import them).
The public names are listed once, in :mod:`lmshrink.testing.adapters`.
"""

from .adapters import *  # noqa: F401,F403
from .adapters import __all__  # noqa: F401
