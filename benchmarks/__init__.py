"""Throughput benchmarks, each runnable with one command (see benchmarks/README.md).

Nothing here imports ``paddle_cnn`` or ``paddle`` at import time: the
benchmark starts each contender in its own subprocess with its own
environment, and the d2l-style contender must never see our CPU tuning.
"""
