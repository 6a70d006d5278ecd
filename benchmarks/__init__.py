"""Throughput benchmarks, each runnable with one command (see benchmarks/README.md).

The throughput comparison is four modules: ``throughput`` (the command and the
round-robin driver), ``contenders`` (the worker processes), ``reference_layers``
(d2l's networks as layer tables, built for Paddle or PyTorch) and ``report``
(JSON and markdown). The last three import neither ``paddle`` nor
``paddle_cnn`` at import time, because the d2l-style contender must never see
our CPU tuning; ``throughput`` imports ``paddle_cnn.runtime`` (no Paddle) and
strips the tuning it sets from every contender's environment. The other
benchmarks (``threads``, ``accel``, ``parallel``) import paddle_cnn, and some
Paddle, as they need.
"""
