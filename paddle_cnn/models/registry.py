"""The model registry: one entry per factory, read by CLI, trainer, homework, benchmarks, tests.

A factory is registered once, with the course section it belongs to, its task
and three hyper-parameter profiles (``course``, ``cpu``, ``smoke``). A profile
is a dict of :class:`paddle_cnn.trainer.TrainConfig` fields; whatever it leaves
out keeps the TrainConfig default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

PROFILES = ("course", "cpu", "smoke")
TASKS = ("classification", "segmentation", "detection")


@dataclass(frozen=True)
class ModelSpec:
    name: str                 # factory name: CLI argument, test id
    constructor: Callable     # builds the paddle.nn.Layer (num_classes=..., in_channels=...)
    section: str              # homework/<section>/ and notebooks/NN_<section>.ipynb
    title: Tuple[str, str]    # (English, Simplified Chinese) section title
    task: str                 # one of TASKS
    min_size: int             # smallest input side the architecture accepts
    profiles: Dict[str, dict] = field(default_factory=dict)

    def profile(self, name: str) -> dict:
        if name not in self.profiles:
            raise ValueError(
                f"model {self.name!r} has no profile {name!r}; choose one of {', '.join(self.profiles)} or auto"
            )
        return dict(self.profiles[name])


REGISTRY: Dict[str, ModelSpec] = {}


def register(*, section: str, title: Tuple[str, str], task: str = "classification",
             min_size: int, profiles: Dict[str, dict]):
    """Decorator that records a factory in :data:`REGISTRY` under its own name."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    missing = set(PROFILES) - set(profiles)
    if missing:
        raise ValueError(f"profiles {sorted(missing)} are missing")

    def decorate(fn: Callable) -> Callable:
        if fn.__name__ in REGISTRY:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        REGISTRY[fn.__name__] = ModelSpec(fn.__name__, fn, section, tuple(title), task, min_size, dict(profiles))
        return fn

    return decorate


def list_models(task: str | None = None) -> List[str]:
    """Registered names in registration order (course order), optionally for one task."""
    return [n for n, s in REGISTRY.items() if task is None or s.task == task]


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(REGISTRY)}") from None


def get_model(name: str, **kwargs):
    """Build a registered model: ``get_model('alexnet', num_classes=10, in_channels=1)``."""
    return get_spec(name).constructor(**kwargs)


def sections() -> Dict[str, List[str]]:
    """Section name -> the models registered under it, in course order."""
    out: Dict[str, List[str]] = {}
    for name, spec in REGISTRY.items():
        out.setdefault(spec.section, []).append(name)
    return out
