"""Side-by-side benchmark of the compiled kernels (``python -m benchmarks.kernels``)."""
