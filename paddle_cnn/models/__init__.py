"""Models of the course, one file per family, all registered in :mod:`.registry`.

Importing this package imports every model file, so the registry is complete.
"""
from .registry import PROFILES, REGISTRY, TASKS, ModelSpec, get_model, get_spec, list_models, register, sections
from . import lenet  # noqa: F401  (registers lenet, lenet_relu)

__all__ = ["PROFILES", "REGISTRY", "TASKS", "ModelSpec", "get_model", "get_spec", "list_models", "register", "sections"]
