"""paddle_cnn: the course package behind the modern-CNN notebooks.

Import it before ``paddle``: the first thing it does is tune MKL/OpenMP for
this CPU, which only works before Paddle's libraries load (see runtime.py).
Importing the package itself does not load Paddle; ``get_model`` and
``list_models`` load the registry (and Paddle) on first use.
"""
from .runtime import check_numpy_for_paddle as _check_numpy
from .runtime import exit_if_command as _exit_if_command
from .runtime import tune_cpu as _tune_cpu

try:
    _check_numpy()
except ImportError as _problem:
    _exit_if_command(_problem)  # the console script: one line, exit 2; a notebook: the ImportError below
    raise
_tune_cpu()

__version__ = "0.2.0"

__all__ = ["get_model", "list_models", "__version__"]


def __getattr__(name):
    if name in ("get_model", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
