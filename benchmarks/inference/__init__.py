"""Inference benchmark: what compression buys at inference time (prefill throughput, decode latency, memory, size
on disk), each compressed variant timed interleaved with the dense model in one process (``python -m
benchmarks.inference``; ``study`` has the command line)."""
