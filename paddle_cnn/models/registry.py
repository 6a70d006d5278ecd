"""The model registry: one entry per factory, read by CLI, trainer, homework, benchmarks, tests.

A factory is registered once, with the course section it belongs to, its task
and three hyper-parameter profiles (``course``, ``cpu``, ``smoke``). A profile
is a dict of :class:`paddle_cnn.config.TrainConfig` fields; whatever it leaves
out keeps the TrainConfig default. ``smoke`` (seconds, for tests and notebook
CI) is derived from ``cpu`` by :func:`smoke_profile`; a factory gives only what
differs from that.
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

# The two cpu-profile recipes of the chapter, written once. Without batch norm (AlexNet, VGG, NiN,
# GoogLeNet) plain SGD sits on a long loss plateau in a run of a few epochs, so these use AdamW;
# with batch norm (ResNet, DenseNet) momentum SGD at lr 0.1 runs fast. Both with a one-cycle schedule.
ADAMW_ONECYCLE = dict(lr=1e-3, optimizer="adamw", weight_decay=0.05, schedule="onecycle", init="xavier")
SGD_ONECYCLE = dict(lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule="onecycle", init="xavier")


# What makes a cpu profile a smoke profile: one short epoch on a few examples (scenes for scene tasks).
SMOKE = {
    "classification": dict(epochs=1, train_subset=512, test_subset=256, batch_size=64),
    "segmentation": dict(epochs=1, train_subset=256, test_subset=64, batch_size=16),
    "detection": dict(epochs=1, train_subset=256, test_subset=64, batch_size=16),
}


def smoke_profile(cpu: dict, task: str, overrides: dict | None = None) -> dict:
    """The cpu profile shrunk to seconds: :data:`SMOKE` sizes, a constant learning rate, one process, default threads."""
    smoke = {k: v for k, v in cpu.items() if k not in ("schedule", "warmup_epochs", "cpu_threads", "nproc")}
    smoke.update(SMOKE[task])
    smoke["batch_size"] = min(smoke["batch_size"], cpu.get("batch_size", smoke["batch_size"]))
    smoke.update(overrides or {})
    return smoke


def register(*, section: str, title: Tuple[str, str], task: str = "classification",
             min_size: int, profiles: Dict[str, dict]):
    """Decorator that records a factory in :data:`REGISTRY` under its own name.

    ``profiles`` needs ``course`` and ``cpu``; ``smoke``, if given, holds only
    the differences from :func:`smoke_profile` of the cpu profile.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    missing = {"course", "cpu"} - set(profiles)
    if missing:
        raise ValueError(f"profiles {sorted(missing)} are missing")
    unknown = set(profiles) - set(PROFILES)
    if unknown:
        raise ValueError(f"unknown profiles {sorted(unknown)}; profiles are {PROFILES}")
    profiles = {**profiles, "smoke": smoke_profile(profiles["cpu"], task, profiles.get("smoke"))}

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
