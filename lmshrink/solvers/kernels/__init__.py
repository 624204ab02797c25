"""Compiled solver kernels with plain-function APIs, independent of the :class:`~lmshrink.core.Solver` classes.

- :mod:`.anneal_swap` — fixed-magnetization annealing (Kawasaki swap moves), compiled with numba, many reads in
  parallel: parallel tempering (default) or a simulated-annealing schedule that ends cold, then a greedy quench;
  also the "greedy + swap descent" baseline.
- :mod:`.topk` — proven k lowest states of a cardinality-constrained QUBO by depth-first branch and bound.
- :mod:`.qaoa_subspace` — XY-mixer QAOA simulated in the fixed-Hamming-weight subspace (dimension C(n, M)).
- :mod:`.instances` — instance families that are hard for greedy + swap descent (planted optimum, low spread).

Each module imports numba (``pip install 'lmshrink[fast]'``) or scipy lazily; the arrays-in, arrays-out functions
take ``linear``, a symmetric ``Q`` and the constraint layout (:func:`.layout.problem_layout`), so the energy of a
0/1 vector is ``linear·x + xᵀQx`` (the problem's offset is added by the ``*_problem`` wrappers).
"""
