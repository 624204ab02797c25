"""lmshrink's benchmark studies (run from the repository root): ``python -m benchmarks.removal`` and
``python -m benchmarks.solvers``. See benchmarks/README.md."""
