"""The one training loop of the course: configuration, fit, evaluate, checkpoints.

``Trainer(cfg, out_dir).fit(model, data)`` trains an already-built model and
returns a :class:`FitResult`. It does not plot, and it does not touch the
model's weights except through the optimizer: initialisation is the caller's
choice (:func:`build_model` applies ``cfg.init``).

What examples/sec measures: the global training examples of one epoch divided
by the wall time of that epoch's training steps -- batch preparation on the
device (gather, resize, augmentation), forward, loss, backward, the gradient
all-reduce of a multi-process run and the optimizer update. Evaluation and
checkpointing are outside the timer, and so are the first few steps a process
runs (warm-up). On a GPU the device is synchronised at both edges of the
timer so queued work is counted. This is how d2l's ``train_ch6`` times an
epoch, except that our data preparation happens inside the timed steps (it is
on the device, so it is part of the step).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import paddle
from paddle import nn

from . import atomic, distributed, runtime
from .data import AUGMENTS
from .ema import WeightAverage
from .models import get_spec
from .tasks import get_task

OPTIMIZERS = ("sgd", "adam", "adamw")
AMP_CHOICES = ("auto", "off", "fp16", "bf16")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
TTA_CHOICES = ("none", "flip")
INITS = ("xavier", "default")
CHECKPOINT = "checkpoint.pdckpt"
CHECKPOINT_FORMAT = 1


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
        return self


def config_for(model: str, profile: str = "auto", **overrides) -> TrainConfig:
    """The registry profile of ``model`` plus overrides.

    ``auto`` picks ``course`` when training runs on a GPU and ``cpu`` otherwise,
    reading the ``device`` override: ``device="cpu"`` on a GPU machine gets the
    cpu profile. Overrides whose value is None are ignored, so CLI flags left
    unset keep the profile; ``model_args`` and ``task_args`` are merged into the
    profile's dicts, not swapped for them.
    """
    spec = get_spec(model)
    if profile == "auto":
        profile = "course" if runtime.resolve_device(overrides.get("device") or "auto") == "gpu" else "cpu"
    values = spec.profile(profile)
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

    ``auto``: fp32 on the CPU (Paddle 3.3's CPU autocast runs no bf16 convolution,
    benchmarks/README.md); on a GPU bf16 where the hardware has it (compute
    capability 8.0+, A100), since it needs no loss scaling, else fp16 (V100) with
    a GradScaler. Not run here: the GPU branches are tested with the query mocked.
    """
    if amp == "off" or device != "gpu":
        if amp in ("fp16", "bf16") and device != "gpu":
            raise ValueError(f"--amp {amp} needs a GPU; on the CPU training runs in fp32 (use --amp auto or off)")
        return "fp32"
    major, _ = runtime.gpu_capability()
    if amp == "bf16" and major < 8:
        raise ValueError(f"--amp bf16 needs a GPU of compute capability 8.0 or newer (A100); this one is "
                         f"{major}.x: use --amp fp16")
    if amp in ("fp16", "bf16"):
        return amp
    return "bf16" if major >= 8 else "fp16"


# --------------------------------------------------------------------------- building
def init_weights(model: nn.Layer, kind: str = "xavier") -> nn.Layer:
    """Xavier-uniform for every Conv2D/Linear weight and zero biases (``default`` keeps Paddle's).

    Unlike d2l's Paddle code, which creates an initializer and never applies it,
    this really overwrites the weights; values come from Paddle's seeded RNG.
    """
    if kind == "default":
        return model
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose, nn.Linear)):
            w = layer.weight
            if isinstance(layer, nn.Linear):          # Paddle stores Linear weights as [in, out]
                fan_in, fan_out = w.shape
            else:                                      # [out, in, kh, kw] (transposed: [in, out, kh, kw])
                receptive = int(np.prod(w.shape[2:]))
                fan_out, fan_in = w.shape[0] * receptive, w.shape[1] * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w.set_value(paddle.uniform(w.shape, dtype=w.dtype, min=-bound, max=bound))
            if layer.bias is not None:
                layer.bias.set_value(paddle.zeros(layer.bias.shape, dtype=layer.bias.dtype))
    return model


def _too_big(cfg: TrainConfig, detail: str) -> ValueError:
    spec = get_spec(cfg.model)
    return ValueError(f"{cfg.model} at --resize {cfg.resize} does not fit in memory ({detail}); "
                      f"use a smaller --resize (its profiles use {spec.profiles['cpu'].get('resize')} on the CPU)")


def build_model(cfg: TrainConfig) -> nn.Layer:
    """The registered model for ``cfg``, seeded and initialised as ``cfg.init`` says.

    Training needs the weights about four times (weights, gradients, two
    optimizer slots); a model whose parameters alone cannot fit that way in
    this machine's memory is refused before initialisation touches them.
    """
    spec = get_spec(cfg.model)
    runtime.seed_everything(cfg.seed)
    kwargs = dict(cfg.model_args)
    kwargs.setdefault("input_size", cfg.resize)
    try:
        model = spec.constructor(**kwargs)
        need = 4 * 4 * sum(int(np.prod(p.shape)) for p in model.parameters())
        total = runtime.memory_bytes()
        if total and need > total:
            raise _too_big(cfg, f"{need / 2**30:.0f} GiB for weights, gradients and optimizer state; "
                                f"this machine has {total / 2**30:.0f} GiB")
        return init_weights(model, cfg.init)
    except MemoryError:
        raise _too_big(cfg, "the allocation of its weights failed") from None
    except TypeError as e:  # an unknown model argument from --set model_args.KEY=...
        if "argument" in str(e):
            import inspect

            known = [n for n in inspect.signature(spec.constructor).parameters if n != "input_size"]
            raise ValueError(f"{cfg.model} does not take that model argument ({e}); "
                             f"its arguments are {', '.join(known)}") from None
        raise


def make_optimizer(cfg: TrainConfig, model: nn.Layer, device: str = "cpu"):
    """The optimizer ``cfg`` names; on a GPU, Momentum and Adam update all parameters in one fused call."""
    params = model.parameters()
    clip = nn.ClipGradByGlobalNorm(cfg.grad_clip) if cfg.grad_clip else None
    wd = cfg.weight_decay or None
    fused = {"use_multi_tensor": True} if device == "gpu" else {}  # Paddle 2.6+; AdamW has no such option
    if cfg.optimizer == "sgd" and cfg.momentum:
        return paddle.optimizer.Momentum(cfg.lr, cfg.momentum, parameters=params, weight_decay=wd, grad_clip=clip,
                                         **fused)
    if cfg.optimizer == "sgd":
        return paddle.optimizer.SGD(cfg.lr, parameters=params, weight_decay=wd, grad_clip=clip)
    if cfg.optimizer == "adam":
        return paddle.optimizer.Adam(cfg.lr, parameters=params, weight_decay=wd, grad_clip=clip, **fused)
    return paddle.optimizer.AdamW(cfg.lr, parameters=params, weight_decay=cfg.weight_decay, grad_clip=clip)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global ``step``: a pure function, so resuming needs no scheduler state."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        warm = warm or int(0.3 * total)
        if step < warm:  # from lr/25 up to lr
            return cfg.lr * (0.04 + 0.96 * step / warm)
        t = (step - warm) / max(1, total - warm)
        return cfg.lr * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t)))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return cfg.lr * cfg.step_gamma ** (step // steps_per_epoch // cfg.step_every)
    return cfg.lr


# Schedules whose value at a step depends on the total number of epochs.
HORIZON_SCHEDULES = ("cosine", "onecycle")


# --------------------------------------------------------------------------- results
@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: the trained model, per-epoch history and final figures."""

    model: nn.Layer
    config: TrainConfig
    history: List[dict]
    device: str
    data_source: dict
    metric: str = "test_acc"
    metric_label: str = "test acc"
    train_metric_label: str = "train acc"
    final: dict = field(default_factory=dict)
    data: object = field(default=None, repr=False)  # the data object trained on (for predictions)
    run_info: dict = field(default_factory=dict)     # precision, processes, accelerator: how it ran

    @property
    def examples_per_sec(self) -> float:
        """Timed training examples over timed training-step time, across all epochs of this run."""
        timed = [h for h in self.history if h.get("train_time")]
        return (sum(h.get("timed_examples", h["examples"]) for h in timed)
                / max(1e-12, sum(h["train_time"] for h in timed)))

    @property
    def wall_time(self) -> float:
        return sum(h.get("wall_time", 0.0) for h in self.history)

    def summary(self) -> str:
        """The d2l-style closing line: loss, train metric, test metric, examples/sec and device."""
        last = self.history[-1]
        procs = self.run_info.get("world", 1)
        where = f"{self.device}" + (f" x {procs} processes" if procs > 1 else "")
        return (f"loss {last['train_loss']:.3f}, {self.train_metric_label} {last['train_metric']:.3f}, "
                f"{self.metric_label} {last[self.metric]:.3f}, {self.examples_per_sec:.1f} examples/sec "
                f"on {where}")

    def to_dict(self) -> dict:
        return {"model": self.config.model, "config": asdict(self.config), "device": self.device,
                "data": self.data_source, "metric": self.metric, "run": self.run_info, "history": self.history,
                "final": {**self.final, "examples_per_sec": self.examples_per_sec, "wall_time": self.wall_time}}

    def plot_predictions(self, count: int = 16, cols: int = 8):
        """A figure of ``count`` test predictions, drawn by the model's task (mistakes or boxes marked)."""
        from . import plots  # noqa: F401  (selects a non-interactive backend where there is no display)
        import matplotlib.pyplot as plt

        from .tasks import task_of

        rows = max(2, -(-count // cols))
        fig = plt.figure(figsize=(11, 1.8 * rows + 0.4))
        with runtime.evaluating(self.model), paddle.no_grad():
            task_of(self.config.model).draw_predictions(fig, fig.add_gridspec(rows, cols), self.model, self.data,
                                                        self.config, count)
        fig.suptitle(f"{self.config.model}: test predictions", fontsize=9)
        return fig


def _rename_optimizer_state(state: dict, model: nn.Layer, portable: bool) -> dict:
    """Key optimizer state by structured parameter names ('net.0.weight') instead of Paddle's
    process-wide unique names ('conv2d_4.w_0'), which differ whenever another model was built first.
    """
    pairs = [(p.name, name) for name, p in model.named_parameters()]
    if not portable:
        pairs = [(b, a) for a, b in pairs]
    pairs.sort(key=lambda ab: -len(ab[0]))  # longest first: 'x.w_10' must not match as 'x.w_1'
    renamed = {}
    for key, value in state.items():
        for old, new in pairs:
            if isinstance(key, str) and key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        renamed[key] = value
    return renamed


class _Step:
    """One training step for every precision: autocast and loss scaling are off in fp32, not a second path."""

    def __init__(self, precision: str, device: str):
        self.precision = precision
        self.dtype = "bfloat16" if precision == "bf16" else "float16"  # unused (autocast off) in fp32
        self.enabled = precision != "fp32"
        # fp16 has a narrow range: scale the loss so small gradients survive; bf16 does not need it.
        self.scaling = precision == "fp16"
        self.scaler = paddle.amp.GradScaler(enable=self.scaling, init_loss_scaling=2.0 ** 14)

    def autocast(self):
        return paddle.amp.auto_cast(enable=self.enabled, dtype=self.dtype)

    def __call__(self, model, x, target, task, cfg, optimizer):
        with self.autocast():
            out = model(x)
            loss = task.loss(out, target, cfg)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.clear_grad()
        return out, loss


# --------------------------------------------------------------------------- the loop
class Trainer:
    """Train one model on one data object with one :class:`TrainConfig`, in this process.

    ``out_dir`` (optional) receives ``checkpoint.pdckpt`` after every epoch
    (written atomically, by rank 0 of a multi-process run) and is where
    ``resume`` looks for it. In a process started by :mod:`paddle_cnn.distributed`
    the model is wrapped in ``paddle.DataParallel`` and each process trains on
    its slice of every global batch.
    """

    def __init__(self, cfg: TrainConfig, out_dir=None, progress: Optional[bool] = None,
                 log: Optional[Callable[[str], None]] = print):
        self.cfg = cfg.validate()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.task = get_task(get_spec(cfg.model).task)
        kind = runtime.resolve_device(cfg.device)
        self.dist = distributed.context(kind)
        self.device = runtime.get_device(cfg.device, self.dist.local_rank)
        self.progress = progress if self.dist.is_main else False  # None: a bar only when stderr is a terminal
        self.log = (log or (lambda s: None)) if self.dist.is_main else (lambda s: None)
        self.precision = choose_precision(cfg.amp, self.device)
        self.threads = None
        if self.device == "cpu":
            self.threads = runtime.set_cpu_threads(cfg.cpu_threads or max(1, runtime.physical_cores()
                                                                           // self.dist.world))
        self.accel = {"enabled": False, "reason": "GPU run" if self.device == "gpu" else "not applied"}
        self.ema = None   # the WeightAverage of a run with cfg.ema, made by fit

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def run_info(self) -> dict:
        """How this run trains: precision, processes, backend, threads, the CPU accelerator."""
        return {"precision": self.precision, "world": self.dist.world, "backend": self.dist.backend,
                "threads_per_process": self.threads, "accel": self.accel}

    # -- checkpoints --------------------------------------------------------------
    def _comparable(self, cfg_dict: dict) -> dict:
        # These may change between a run and its resumption without changing the run.
        return {k: v for k, v in cfg_dict.items()
                if k not in ("epochs", "device", "eval_batch_size", "profile", "cpu_threads", "accel", "log_dir")}

    def checkpoint_path(self) -> Path:
        if self.out_dir is None:
            raise TrainingError("resume needs an output folder (--out) that holds a checkpoint")
        return self.out_dir / CHECKPOINT

    def load_checkpoint(self, model, optimizer, step) -> List[dict]:
        path = self.checkpoint_path()
        if not path.is_file():
            raise TrainingError(f"--resume: no checkpoint at {path}; train without --resume first "
                                "(or point --out at the folder of the run to continue)")
        try:
            state = paddle.load(str(path))
        except Exception as e:  # a damaged file: say so rather than show Paddle's internals
            raise TrainingError(f"--resume: {path} cannot be read as a checkpoint ({type(e).__name__}: {e})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"--resume: {path} is not a paddle_cnn checkpoint")
        if state["model_name"] != self.cfg.model:
            raise TrainingError(f"--resume: {path} belongs to model {state['model_name']!r}, not {self.cfg.model!r}; "
                                "use another --out folder or train that model")
        # A setting added after the checkpoint was written counts as its default there.
        theirs = self._comparable({**asdict(TrainConfig()), **state["config"]})
        ours = self._comparable(asdict(self.cfg))
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if diff:
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {ours.get(k)!r}" for k in diff)
            raise TrainingError(f"--resume: {path} was trained with another configuration ({detail}); "
                                "resume with the same settings or use another --out folder")
        before = state["config"]["epochs"]
        if before != self.cfg.epochs and self.cfg.schedule in HORIZON_SCHEDULES:
            raise TrainingError(
                f"--resume: {path} was trained with a {self.cfg.schedule} schedule planned over {before} epochs; "
                f"--epochs {self.cfg.epochs} would bend the learning rate of the epochs still to come onto another "
                f"curve. Resume with --epochs {before}, or start a new run (another --out) with --epochs "
                f"{self.cfg.epochs}")
        if state.get("device", self.device) != self.device:
            raise TrainingError(f"--resume: {path} was trained on {state['device']}, this run is on {self.device}; "
                                f"examples/sec would mix two devices under one label: resume with --device "
                                f"{state['device']} or start a new run")
        model.set_state_dict(state["model"])
        optimizer.set_state_dict(_rename_optimizer_state(state["optimizer"], model, portable=False))
        if state.get("scaler") and step.scaling:
            step.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.set_state_dict(state["ema"])
        return list(state["history"])

    def save_checkpoint(self, model, optimizer, step, history: List[dict]) -> None:
        if self.out_dir is None or not self.is_main:
            return
        atomic.paddle_save({"format": CHECKPOINT_FORMAT, "model_name": self.cfg.model, "config": asdict(self.cfg),
                            "device": self.device, "model": model.state_dict(),
                            "optimizer": _rename_optimizer_state(optimizer.state_dict(), model, portable=True),
                            "scaler": step.scaler.state_dict() if step.scaling else None,
                            "ema": self.ema.state_dict() if self.ema is not None else None,
                            "history": history}, self.checkpoint_path())

    # -- evaluation -----------------------------------------------------------------
    def eval_batch_size(self) -> int:
        """The evaluation batch: ``cfg.eval_batch_size``, on a GPU capped so its activations fit the memory budget."""
        if self.device != "gpu":
            return self.cfg.eval_batch_size
        from . import memory

        return memory.eval_batch_size(self.cfg, memory.GPU_BUDGET, 4 if self.precision == "fp32" else 2)

    def evaluate(self, model, data, step: Optional[_Step] = None, ablate: bool = False) -> dict:
        """Test metrics under the training precision; rank 0's figures are shared with every rank.

        Every rank evaluates, and rank 0's result is broadcast. Letting rank 0
        evaluate alone would leave the others waiting inside the broadcast, and
        a gloo collective gives up after a fixed time: a 28-px ResNet whose
        flip-averaged evaluation took rank 0 longer than that ended a
        two-process CPU run with ``gloo ... TIMEOUT``. The other ranks' cores
        are idle during evaluation anyway, so the wall time is the same. (Their
        batch-norm statistics differ from rank 0's, which is why their figures
        are not averaged in.)

        With ``cfg.ema`` the averaged weights are scored. ``ablate`` (the last
        epoch) also scores the run without each test-time trick it uses, as
        ``<metric>_without_ema`` and ``<metric>_without_tta``: what each added,
        measured on the same trained network.
        """
        cfg, task, batch = self.cfg, self.task, self.eval_batch_size()
        inner = distributed.unwrap(model)
        autocast = step.autocast() if step is not None else contextlib.nullcontext()
        averaged = self.ema.applied(inner) if self.ema is not None else contextlib.nullcontext()
        with runtime.evaluating(inner), autocast:
            with averaged:
                metrics = task.evaluate(inner, data, cfg, batch)
                if ablate and cfg.tta != "none":
                    plain = replace(cfg, tta="none")
                    metrics[f"{task.metric}_without_tta"] = task.evaluate(inner, data, plain, batch)[task.metric]
            if ablate and self.ema is not None:
                metrics[f"{task.metric}_without_ema"] = task.evaluate(inner, data, cfg, batch)[task.metric]
        return distributed.broadcast_object(metrics)

    # -- fit ------------------------------------------------------------------------
    def fit(self, model: nn.Layer, data, resume: bool = False) -> FitResult:
        """Train ``model`` on ``data`` for ``cfg.epochs`` epochs (from the checkpoint with ``resume``).

        What examples/sec measures: global training examples over the wall time
        of the training steps -- batch preparation on the device, forward, loss,
        backward, gradient all-reduce and update. Evaluation and checkpoints are
        outside the timer, and so are the first :data:`TIMER_WARMUP_STEPS` steps a
        process runs (kernel selection, allocator growth). On a GPU the device is
        synchronised at both edges of the timer.
        """
        cfg, task = self.cfg, self.task
        inner = model
        if self.device == "cpu":
            self.accel = _apply_accel(inner, cfg.accel, self.threads, self.log)
        model.train()
        step = _Step(self.precision, self.device)
        optimizer = make_optimizer(cfg, inner, self.device)
        self.ema = WeightAverage(inner, cfg.ema) if cfg.ema else None
        history = self.load_checkpoint(inner, optimizer, step) if resume else []
        net = distributed.wrap(inner, self.dist, cfg.sync_bn)
        steps = data.steps_per_epoch(cfg.batch_size)
        if data.num_train < cfg.batch_size:
            raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {data.num_train} training examples; "
                             f"use --batch-size {data.num_train} or less")
        if resume and len(history) >= cfg.epochs:
            self.log(f"checkpoint already has {len(history)} epochs (of {cfg.epochs}); nothing to train")
        if history and task.metric not in history[-1]:  # stopped between saving an epoch and evaluating it
            history[-1].update(self.evaluate(net, data, step, ablate=len(history) == cfg.epochs))
            self.save_checkpoint(inner, optimizer, step, history)
        writer = self._visualdl()
        # Reading a loss on the host stalls a GPU's queue, so there we look every 50 steps; with several
        # processes the check is an all-reduce of its own, so the CPU looks every 10.
        check_every = 50 if self.device == "gpu" else 10 if self.dist.active else 1
        warm = TIMER_WARMUP_STEPS
        for epoch in range(len(history), cfg.epochs):
            wall_start = time.perf_counter()
            # dropout, augmentation: (seed, epoch, rank) only, so a resumed run replays the epoch exactly
            paddle.seed(cfg.seed * 1000003 + epoch + 7919 * self.dist.rank)
            loss_sum = paddle.zeros([], "float32")
            hits_sum = paddle.zeros([], "float32")
            count = seen = timed = 0
            bar = self._bar(steps, epoch)
            runtime.synchronize(self.device)
            t0 = time.perf_counter()
            for i, (x, target) in enumerate(data.train_batches(cfg.batch_size, epoch, rank=self.dist.rank,
                                                                world=self.dist.world)):
                if i == warm:  # the first steps this process runs are not timed
                    runtime.synchronize(self.device)
                    t0, timed = time.perf_counter(), 0
                optimizer.set_lr(lr_at(cfg, epoch * steps + i, steps))
                out, loss = step(net, x, target, task, cfg, optimizer)
                if self.ema is not None:
                    self.ema.update(inner)
                n = int(x.shape[0]) * self.dist.world
                loss_sum += loss.detach().astype("float32") * n
                hits, denom = task.train_hits(out.detach() if hasattr(out, "detach") else out, target)
                hits_sum += hits
                count += denom
                seen += n
                timed += n
                if (i + 1) % check_every == 0 or i + 1 == steps:
                    self._check_finite(loss_sum, seen, epoch, i, check_every, history, step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{float(loss_sum) / seen / self.dist.world:.3f}", refresh=False)
                if bar is not None:
                    bar.update(1)
            runtime.synchronize(self.device)
            train_time = time.perf_counter() - t0
            warm = 0
            if bar is not None:
                bar.close()
            # Sums over ranks: every rank ends the epoch with the same loss and train metric.
            loss_sum = distributed.all_reduce_sum(loss_sum)
            hits_sum = distributed.all_reduce_sum(hits_sum)
            # A task's denominator is an int known on the host (examples, pixels) or, when it depends on
            # the targets (DenseBox's positive cells), a device tensor summed like the hits.
            count = count * self.dist.world if isinstance(count, int) else float(distributed.all_reduce_sum(count))
            record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, seen) / self.dist.world,
                      "train_metric": float(hits_sum) / max(1, count),
                      "examples": seen, "timed_examples": timed, "train_time": train_time,
                      "examples_per_sec": timed / max(1e-12, train_time), "lr_end": optimizer.get_lr()}
            history.append(record)
            self.save_checkpoint(inner, optimizer, step, history)   # before evaluation, which may fail
            record.update(self.evaluate(net, data, step, ablate=epoch + 1 == cfg.epochs))
            record["wall_time"] = time.perf_counter() - wall_start
            self.save_checkpoint(inner, optimizer, step, history)
            self._write_scalars(writer, record, epoch)
            self.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.3f}, "
                     f"{task.train_metric_label} {record['train_metric']:.3f}, "
                     f"{task.metric_label} {record[task.metric]:.3f}, "
                     f"{record['examples_per_sec']:.1f} examples/sec, {record['wall_time']:.1f} s")
        if writer is not None:
            writer.close()
        if self.ema is not None:   # the returned model is the one that was scored
            self.ema.copy_to(inner)
        final = {k: v for k, v in history[-1].items()
                 if k not in ("epoch", "examples", "timed_examples", "train_time", "wall_time", "lr_end",
                              "examples_per_sec")} if history else {}
        return FitResult(inner, cfg, history, self.device, getattr(data, "source", {}), task.metric,
                         task.metric_label, task.train_metric_label, final, data, self.run_info())

    def _check_finite(self, loss_sum, seen, epoch, i, check_every, history, step) -> None:
        """Stop on a non-finite loss, on every rank at the same step (the check is an all-reduce)."""
        total = distributed.all_reduce_sum(loss_sum.clone()) if self.dist.active else loss_sum
        value = float(total) / seen
        if math.isfinite(value):
            return
        where = f"step {i + 1}" if check_every == 1 else f"steps {i + 2 - check_every}-{i + 1}"
        kept = (f"; the checkpoint of epoch {len(history)} in {self.checkpoint_path()} is kept"
                if self.out_dir is not None and history else "")
        fix = f"lower the learning rate (now {self.cfg.lr}) or add warm-up / gradient clipping"
        if self.precision == "fp16":
            fix = f"train in fp32 with --amp off (fp16 overflows more easily without batch norm), or {fix}"
        raise TrainingError(f"non-finite loss ({value}) in epoch {epoch + 1}, {where}; {fix}{kept}")

    def _bar(self, steps: int, epoch: int):
        if self.progress is False:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="batch", leave=False,
                    disable=None if self.progress is None else not self.progress)

    # -- VisualDL -------------------------------------------------------------------
    def _visualdl(self):
        """A VisualDL LogWriter on ``cfg.log_dir`` (rank 0), or None with a one-line notice."""
        if not self.cfg.log_dir or not self.is_main:
            return None
        try:
            from visualdl import LogWriter
        except ImportError:
            self.log(f"--log-dir {self.cfg.log_dir}: visualdl is not installed, so no scalars are written "
                     "(pip install visualdl; AI Studio has it)")
            return None
        return LogWriter(logdir=str(self.cfg.log_dir))

    def _write_scalars(self, writer, record: dict, epoch: int) -> None:
        if writer is None:
            return
        for key in ("train_loss", "train_metric", "examples_per_sec", "lr_end", self.task.metric):
            if isinstance(record.get(key), (int, float)):
                writer.add_scalar(tag=f"{self.cfg.model}/{key}", step=epoch + 1, value=float(record[key]))


def _apply_accel(model, mode: str, threads, log) -> dict:
    """Route the model's convolutions through the oneDNN custom op where it works (paddle_cnn.accel)."""
    if mode == "off":
        return {"enabled": False, "reason": "--accel off"}
    try:
        from . import accel
    except ImportError as e:  # the accelerator package is optional
        if mode == "on":
            raise ValueError(f"--accel on: the accelerator cannot be imported ({e})") from None
        return {"enabled": False, "reason": f"accelerator not importable ({e})"}
    return accel.apply(model, mode, threads=threads, log=log)


#: Steps at the start of a process's first epoch left out of examples/sec (warm-up, not throughput).
TIMER_WARMUP_STEPS = 3


# --------------------------------------------------------------------------- one call
def train(model: str, profile: str = "auto", out=None, resume: bool = False, data_dir=None,
          progress: Optional[bool] = None, log: Optional[Callable[[str], None]] = print,
          **overrides) -> FitResult:
    """Train a registered model with a profile; the call behind the notebooks.

    Needs the Fashion-MNIST files, so the test suite skips it:

    >>> result = train("lenet_relu", profile="smoke", log=None, progress=False)   # doctest: +SKIP
    >>> result.history[-1]["epoch"]                                               # doctest: +SKIP
    1

    With ``out``, the folder receives the per-epoch checkpoint, ``results.json``
    and ``curves.png``. Notebooks train in one process; ``nproc`` > 1 belongs
    to the command line (``paddle-cnn train MODEL --nproc N``).
    """
    return run(config_for(model, profile, **overrides), out, resume, data_dir, progress, log)


def run(cfg: TrainConfig, out=None, resume: bool = False, data_dir=None,
        progress: Optional[bool] = None, log: Optional[Callable[[str], None]] = print) -> FitResult:
    """Build data and model for ``cfg``, fit, and save results when ``out`` is given (rank 0)."""
    trainer = Trainer(cfg, out, progress=progress, log=log)
    data = trainer.task.build_data(cfg, data_dir)
    net = build_model(cfg)
    result = trainer.fit(net, data, resume=resume)
    if out is not None and result.history and trainer.is_main:
        save_result(result, out)
    return result


def save_result(result: FitResult, out) -> None:
    """Write ``results.json`` (with the environment) and ``curves.png`` into ``out``."""
    from . import plots

    out = Path(out)
    atomic.write_json(out / "results.json", {**result.to_dict(), "environment": runtime.environment(result.device),
                                             "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    plots.save_curves(result.history, out / "curves.png", result.metric, title=result.config.model)
