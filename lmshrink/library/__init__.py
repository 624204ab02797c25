"""The problem library: real block-removal problems with known optima and the measured value of their states.

``lmshrink problems build`` regenerates the reference set (:mod:`.build`); ``lmshrink problems export`` writes it
in the formats solver researchers use (:mod:`.formats`). A small set ships in the package (:func:`shipped_dir`).
"""

from .instance import LibraryInstance, load_instance, load_library, shipped_dir

__all__ = ["LibraryInstance", "load_instance", "load_library", "shipped_dir"]
