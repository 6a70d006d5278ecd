"""What decides a training run: :class:`TrainConfig`, the registry's profiles, the precision.

Importing this module imports no training loop, so benchmarks, the CLI and the
notebooks can read a configuration without the trainer.
"""
from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field, fields
from typing import Optional

from . import runtime, students
from .data import AUGMENTS
from .models import get_spec

OPTIMIZERS = ("sgd", "adam", "adamw")
AMP_CHOICES = ("auto", "off", "fp16", "bf16")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
TTA_CHOICES = ("none", "flip")
INITS = ("xavier", "default")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable checkpoint); the message says why."""


def _field(default, help: str, **kw):
    """A TrainConfig field whose ``help`` becomes the CLI flag's help (the CLI is generated from these)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything that decides a training run; profiles in the registry fill it in.

    Every field is a ``paddle-cnn train`` flag (``--batch-size``), generated
    from this class: its type, default and help come from here.
    """

    model: str = _field("lenet", "registered model name", cli=False)
    profile: str = _field("custom", "which registry profile these values came from", cli=False)
    resize: int = _field(28, "input side in pixels (canvas side for scene tasks)")
    epochs: int = _field(10, "passes over the training set")
    batch_size: int = _field(256, "global batch: split over the processes of a --nproc run")
    lr: float = _field(0.1, "peak learning rate")
    # d2l's choice; momentum > 0 turns it into momentum SGD.
    optimizer: str = _field("sgd", "sgd | adam | adamw", choices=OPTIMIZERS)
    momentum: float = _field(0.0, "momentum of sgd (0 = plain SGD)")
    weight_decay: float = _field(0.0, "L2 penalty for sgd/adam, decoupled for adamw")
    schedule: str = _field("constant", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = _field(0.0, "linear warm-up epochs (onecycle: 30%% of training when 0)")
    step_every: int = _field(3, "step schedule: multiply the lr by step_gamma every this many epochs")
    step_gamma: float = _field(0.1, "step schedule: the factor")
    label_smoothing: float = _field(0.0, "mix this much of the uniform distribution into the targets")
    augment: str = _field("none", "on-device augmentation", choices=AUGMENTS)
    erase: float = _field(0.0, "random erasing: blank one random rectangle in this fraction of training images "
                          "(classification; 0 = off)")
    ema: float = _field(0.0, "evaluate an exponential moving average of the weights with this decay "
                        "(e.g. 0.999; 0 = off)")
    tta: str = _field("none", "test-time augmentation: flip averages the predictions for each test image and "
                      "its mirror (classification)", choices=TTA_CHOICES)
    # d2l initialises conv/linear weights with Xavier-uniform.
    init: str = _field("xavier", "weight initialisation", choices=INITS)
    seed: int = _field(0, "seed of weights, data order and augmentation")
    device: str = _field("auto", "auto | cpu | gpu", choices=runtime.DEVICES)
    train_subset: Optional[int] = _field(None, "train on a stratified subset of this many examples (scenes)")
    test_subset: Optional[int] = _field(None, "score on a stratified subset of the test set (fixed images)")
    eval_batch_size: int = _field(1000, "evaluation batch (on a GPU capped by the memory model)")
    amp: str = _field("auto", "auto: fp16 (V100) / bf16 (A100+) autocast on a GPU, fp32 on the CPU; "
                      "or off | fp16 | bf16", choices=AMP_CHOICES)
    grad_clip: float = _field(0.0, "clip gradients to this global norm (0 = off)")
    cpu_threads: int = _field(0, "MKL threads per process on the CPU (0 = physical cores / processes)")
    nproc: int = _field(1, "data-parallel processes (one GPU each on a GPU build; gloo on the CPU)")
    sync_bn: bool = _field(False, "with --nproc > 1 on GPUs: synchronise BatchNorm statistics")
    accel: str = _field("auto", "CPU convolutions through the oneDNN custom op: auto | on | off",
                        choices=("auto", "on", "off"))
    log_dir: Optional[str] = _field(None, "write VisualDL scalars (loss, lr, metrics, examples/sec) here")
    model_args: dict = _field({}, "extra constructor arguments (--set model_args.KEY=VALUE)", cli=False)
    task_args: dict = _field({}, "scene task settings (--set task_args.KEY=VALUE)", cli=False)

    @classmethod
    def from_dict(cls, d, strict: bool = True) -> "TrainConfig":
        """The config a saved ``asdict(cfg)`` describes (checkpoints, results.json, homework records), validated.

        JSON turned tuples into lists; validation turns model arguments back into the constructor's tuples.
        A setting missing from ``d`` (added after it was saved) takes its default. A key this version does
        not know is refused with ``strict`` (a run to continue or replay must mean the same here) and
        ignored without it (reading a run that a newer version wrote). ValueError names what is wrong.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a training configuration is a mapping of settings, not a {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - known)
        if unknown and strict:
            raise ValueError(f"unknown training setting(s) {unknown}")
        values = {k: v for k, v in d.items() if k in known}
        for key in ("model_args", "task_args"):
            if key in values and not isinstance(values[key], dict):
                raise ValueError(f"{key} must be a mapping, got {type(values[key]).__name__}")
            if key in values:
                values[key] = dict(values[key])   # validation converts in place: leave the caller's dict alone
        try:
            return cls(**values).validate()
        except TypeError as e:   # a setting of the wrong kind that a check compared or called
            raise ValueError(f"a setting of the wrong type ({e})") from None

    def validate(self) -> "TrainConfig":
        """Raise ValueError with a fix-it message for the first bad field."""
        def positive(name, value, kind=int):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")
            if kind is int and int(value) != value:
                raise ValueError(f"{name} must be a whole number, got {value!r}")

        spec = get_spec(self.model)
        positive("epochs", self.epochs)
        positive("batch size", self.batch_size)
        positive("resize", self.resize)
        positive("learning rate", self.lr, float)
        positive("eval batch size", self.eval_batch_size)
        positive("step_every", self.step_every)
        positive("nproc", self.nproc)
        for f in fields(self):
            valid = f.metadata.get("choices")
            if valid and getattr(self, f.name) not in valid:
                raise ValueError(f"unknown {f.name} {getattr(self, f.name)!r}; choose one of {', '.join(valid)}")
        if self.resize < spec.min_size:
            raise ValueError(f"{self.model} needs inputs of at least {spec.min_size}x{spec.min_size} pixels; "
                             f"--resize {self.resize} is too small (use --resize {spec.min_size} or more)")
        if not isinstance(self.cpu_threads, int) or self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be a whole number >= 0 (0 = all cores), got {self.cpu_threads!r}")
        for name in ("momentum", "weight_decay", "label_smoothing", "warmup_epochs", "grad_clip", "step_gamma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be below 1, got {self.label_smoothing}")
        if not 0 <= self.erase <= 1:
            raise ValueError(f"erase is the fraction of training images erased, between 0 and 1; got {self.erase}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema is a decay between 0 (off) and 1 (e.g. 0.999), got {self.ema}")
        if spec.task != "classification" and (self.erase or self.tta != "none"):
            raise ValueError(f"--erase and --tta apply to classification; {self.model} is a {spec.task} model "
                             "(its boxes or masks would have to move with the image)")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive whole number or None, got {value!r}")
        if self.batch_size % self.nproc:
            raise ValueError(f"the global batch size {self.batch_size} must be divisible by --nproc {self.nproc}")
        check_model_args(self.model, self.model_args)
        if self.log_dir is not None and (not isinstance(self.log_dir, str) or os.path.isfile(self.log_dir)):
            raise ValueError(f"--log-dir {self.log_dir!r} must name a folder (it is created if missing), not a file")
        return self


#: Schedules whose value at a step depends on the total number of epochs.
HORIZON_SCHEDULES = ("cosine", "onecycle")
#: Model arguments fixed by the data: Fashion-MNIST pictures have one channel, the task decides the classes.
DATA_FIXED_ARGS = ("num_classes", "in_channels")


def check_value(where: str, name: str, value, default):
    """``value`` for an argument whose default is ``default``, of the default's type, or ValueError.

    bool stays bool (``residual=abc`` is refused, not kept as a string), int is
    a whole number >= 1, float a finite number, a tuple a tuple/list of the
    same nesting (``stage_arch=((64, 2), (128, 2))``) of positive numbers.
    Returns the value, tuples as tuples.
    """
    def fail(kind):
        return ValueError(f"{where} {name}={value!r}: expected {kind} like the default {default!r}")

    if default is None or isinstance(default, str):
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("True or False")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail("a whole number >= 1")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise fail("a finite number >= 0")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)) or not value:
            raise fail("a non-empty tuple")
        inner = default[0] if default else 1
        return tuple(check_value(where, f"{name}[{i}]", v, inner) for i, v in enumerate(value))
    return value


def check_model_args(model: str, model_args: dict) -> None:
    """Refuse model arguments the constructor does not take, of the wrong type, or fixed by the data."""
    spec = get_spec(model)
    params = {n: p.default for n, p in inspect.signature(spec.constructor).parameters.items()
              if n != "input_size" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for name, value in (model_args or {}).items():
        if name not in params:
            raise ValueError(f"{model} does not take the model argument {name!r}; its arguments are "
                             f"{', '.join(params)}")
        if name in DATA_FIXED_ARGS and value != params[name]:
            raise ValueError(f"--set {name}={value!r}: {model} is trained on Fashion-MNIST, whose data fix "
                             f"{name} at {params[name]}; leave it out")
        checked = check_value("--set", name, value, params[name])
        model_args[name] = checked


def config_for(model: str, profile: str = "auto", **overrides) -> TrainConfig:
    """The registry profile of ``model`` plus overrides.

    ``auto`` picks ``course`` when training runs on a GPU and ``cpu`` otherwise,
    reading the ``device`` override: ``device="cpu"`` on a GPU machine gets the
    cpu profile. Overrides whose value is None are ignored, so CLI flags left
    unset keep the profile; ``model_args`` and ``task_args`` are merged into the
    profile's dicts, not swapped for them. Without a ``seed`` override, a student id in
    ``PADDLE_CNN_STUDENT`` sets the seed (:func:`~paddle_cnn.students.seed_for`).
    """
    spec = get_spec(model)
    if profile == "auto":
        profile = "course" if runtime.resolve_device(overrides.get("device") or "auto") == "gpu" else "cpu"
    values = spec.profile(profile)
    if overrides.get("seed") is None:
        # A student's runs train with the student's seed (PADDLE_CNN_STUDENT), whatever starts them.
        values["seed"] = students.student_seed(default=values.get("seed", TrainConfig.seed))
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("model_args", "task_args"):  # merged, so one option does not drop the profile's others
            value = {**values.get(key, {}), **value}
        values[key] = value
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return TrainConfig(model=model, profile=profile, **values).validate()


def choose_precision(amp: str, device: str) -> str:
    """``fp32``, ``fp16`` or ``bf16`` for a run: what ``--amp`` asks, on the device at hand.

    ``auto``: fp32 on the CPU -- bf16 there is asked for with ``--amp bf16``
    (the trainer checks that the CPU has native bf16 and that the oneDNN
    accelerator runs), and ``auto`` would pick it only once a measured
    comparison put bf16's accuracy inside fp32's interval, which this
    repository has not measured (benchmarks/README.md); on a GPU bf16 where
    the hardware has it (compute capability 8.0+, A100), since it needs no
    loss scaling, else fp16 (V100) with a GradScaler. Not run here: the GPU
    branches are tested with the query mocked.
    """
    if device != "gpu":
        if amp == "fp16":
            raise ValueError("--amp fp16 needs a GPU; on the CPU use --amp bf16 (CPUs with AVX512-BF16 or AMX) "
                             "or fp32 (--amp off)")
        return "bf16" if amp == "bf16" else "fp32"
    if amp == "off":
        return "fp32"
    major, _ = runtime.gpu_capability()
    if amp == "bf16" and major < 8:
        raise ValueError(f"--amp bf16 needs a GPU of compute capability 8.0 or newer (A100); this one is "
                         f"{major}.x: use --amp fp16")
    if amp in ("fp16", "bf16"):
        return amp
    return "bf16" if major >= 8 else "fp16"
