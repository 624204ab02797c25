"""Quantum-hardware experiments: run records (:mod:`.record`), their summaries and plots (:mod:`.show`) and
parameter sweeps under a QPU-time budget (:mod:`.sweep`)."""
