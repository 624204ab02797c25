"""Baseline block-removal methods, run through the same pipeline and reports as lmshrink's objectives.

One-shot score baselines are objectives that produce a linear problem (the solver's minimiser removes the M
lowest-scored blocks, per kind where the spec asks for it):

- ``block-influence`` (ShortGPT): BI_i = 1 − mean cos(block input, block output)   (:mod:`.block_influence`)
- ``norm-ratio``: mean ‖block output − input‖ / ‖input‖                            (:mod:`.norm_ratio`)

Procedures that are not a fixed problem are :class:`RemovalMethod` plugins (hook ``lmshrink_register_methods``),
run by ``lmshrink.prune(method=...)`` / ``lmshrink prune --method``:

- ``block-influence-iterative``: remove the lowest-BI block, recompute, repeat       (:mod:`.block_influence`)
- ``angular`` (Gromov et al.): the window of M consecutive layers with the smallest angular distance
  between its input and output                                                      (:mod:`.angular`)
- ``sleb`` (SLEB-style): greedily remove the block whose removal gives the lowest measured loss (:mod:`.sleb`)
- ``blockpruner`` (BlockPruner-style): the same greedy over attention and MLP sub-layers, by calibration
  perplexity                                                                        (:mod:`.blockpruner`)
- ``evopress`` (EvoPress-style): (1+λ) evolutionary search over removal sets with multi-step selection
                                                                                    (:mod:`.evopress`)
"""

from __future__ import annotations

from .base import RemovalMethod, Selection, get_method, greedy_order

__all__ = ["RemovalMethod", "Selection", "get_method", "greedy_order"]

