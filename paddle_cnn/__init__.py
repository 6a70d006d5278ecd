"""paddle_cnn: the course package behind the modern-CNN notebooks.

Import it before ``paddle``: the first thing it does is tune MKL/OpenMP for
this CPU, which only works before Paddle's libraries load (see runtime.py).
Importing the package itself does not load Paddle; the names below load
their module (and Paddle) on first use. They are the way in::

    from paddle_cnn import train, config_for, TrainConfig, build_model, Trainer, get_model, list_models
"""
from .runtime import check_numpy_for_paddle as _check_numpy
from .command import exit_if_command as _exit_if_command
from .command import exit_on_interrupt as _exit_on_interrupt
from .command import started_as_command as _started_as_command
from .runtime import tune_cpu as _tune_cpu

if _started_as_command():  # Ctrl-C while Paddle loads: one line, not a traceback (cli.main takes over in its try)
    _exit_on_interrupt()
try:
    _check_numpy()
except ImportError as _problem:
    _exit_if_command(_problem)  # the console script: one line, exit 2; a notebook: the ImportError below
    raise
_tune_cpu()

__version__ = "0.2.0"

#: The way in: each name and the module that holds it (imported on first use).
_EXPORTS = {
    "train": "trainer", "Trainer": "trainer",
    "config_for": "config", "TrainConfig": "config",
    "build_model": "models.factory",
    "get_model": "models", "list_models": "models",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
