"""paddle_cnn: the course package behind the modern-CNN notebooks.

Import it before ``paddle``: the first thing it does is tune MKL/OpenMP for
this CPU, which only works before Paddle's libraries load (see runtime.py).
"""
from .runtime import tune_cpu as _tune_cpu

_tune_cpu()

__version__ = "0.1.0"

from .models import get_model, list_models  # noqa: E402

__all__ = ["get_model", "list_models", "__version__"]
