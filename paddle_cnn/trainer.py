"""The one training loop of the course: configuration, fit, evaluate, checkpoints.

``Trainer(cfg, out_dir).fit(model, data)`` trains an already-built model and
returns a :class:`FitResult`. It does not plot, and it does not touch the
model's weights except through the optimizer: initialisation is the caller's
choice (:func:`build_model` applies ``cfg.init``).

What examples/sec measures: the training examples of one epoch divided by the
wall time of that epoch's training steps -- batch preparation on the device
(gather, resize, augmentation), forward, loss, backward and optimizer update.
Evaluation and checkpointing are outside the timer. On a GPU the device is
synchronised at both edges of the timer so queued work is counted. This is how
d2l's ``train_ch6`` times an epoch, except that our data preparation happens
inside the timed steps (it is on the device, so it is part of the step).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import paddle
from paddle import nn

from . import atomic, runtime
from .data import AUGMENTS
from .models import get_spec
from .tasks import get_task

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
INITS = ("xavier", "default")
CHECKPOINT = "checkpoint.pdckpt"
CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable checkpoint); the message says why."""


@dataclass
class TrainConfig:
    """Everything that decides a training run; profiles in the registry fill it in."""

    model: str = "lenet"
    profile: str = "custom"        # which registry profile these values came from
    resize: int = 28               # input side in pixels (canvas side for scene tasks)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1                # peak learning rate
    optimizer: str = "sgd"         # d2l's choice; momentum > 0 turns it into momentum SGD
    momentum: float = 0.0
    weight_decay: float = 0.0      # L2 for sgd/adam, decoupled for adamw
    schedule: str = "constant"
    warmup_epochs: float = 0.0     # linear warm-up; onecycle uses 30% of training when 0
    step_every: int = 3            # "step" schedule: multiply by step_gamma every step_every epochs
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    augment: str = "none"          # on-device: none | flip | crop | crop+flip
    init: str = "xavier"           # d2l initialises conv/linear weights with Xavier-uniform
    seed: int = 0
    device: str = "auto"
    train_subset: Optional[int] = None  # stratified subset sizes for fast profiles
    test_subset: Optional[int] = None
    eval_batch_size: int = 1000
    amp: str = "auto"              # auto: bf16/fp16 autocast on a GPU, fp32 on the CPU; or "off"
    grad_clip: float = 0.0         # global-norm clip, 0 = off
    cpu_threads: int = 0           # MKL threads on the CPU; 0 keeps runtime's default (all cores)
    model_args: dict = field(default_factory=dict)  # extra constructor arguments
    task_args: dict = field(default_factory=dict)   # scene tasks: canvas, items, ...

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
        for name, value, valid in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                   ("augment", self.augment, AUGMENTS), ("init", self.init, INITS),
                                   ("device", self.device, runtime.DEVICES), ("amp", self.amp, ("auto", "off"))):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(valid)}")
        if self.resize < spec.min_size:
            raise ValueError(f"{self.model} needs inputs of at least {spec.min_size}x{spec.min_size} pixels; "
                             f"--resize {self.resize} is too small (use --resize {spec.min_size} or more)")
        if not isinstance(self.cpu_threads, int) or self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be a whole number >= 0 (0 = all cores), got {self.cpu_threads!r}")
        for name in ("momentum", "weight_decay", "label_smoothing", "warmup_epochs", "grad_clip"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        return self


def config_for(model: str, profile: str = "auto", **overrides) -> TrainConfig:
    """The registry profile of ``model`` (``auto``: course on a GPU, cpu otherwise) plus overrides.

    Overrides whose value is None are ignored, so CLI flags left unset keep the profile;
    ``model_args`` and ``task_args`` are merged into the profile's dicts, not swapped for them.
    """
    spec = get_spec(model)
    if profile == "auto":
        profile = "course" if _gpu_available() else "cpu"
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


def _gpu_available() -> bool:
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


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


def build_model(cfg: TrainConfig) -> nn.Layer:
    """The registered model for ``cfg``, seeded and initialised as ``cfg.init`` says."""
    spec = get_spec(cfg.model)
    runtime.seed_everything(cfg.seed)
    kwargs = dict(cfg.model_args)
    kwargs.setdefault("input_size", cfg.resize)
    return init_weights(spec.constructor(**kwargs), cfg.init)


def make_optimizer(cfg: TrainConfig, model: nn.Layer):
    params = model.parameters()
    clip = nn.ClipGradByGlobalNorm(cfg.grad_clip) if cfg.grad_clip else None
    wd = cfg.weight_decay or None
    if cfg.optimizer == "sgd" and cfg.momentum:
        return paddle.optimizer.Momentum(cfg.lr, cfg.momentum, parameters=params, weight_decay=wd, grad_clip=clip)
    if cfg.optimizer == "sgd":
        return paddle.optimizer.SGD(cfg.lr, parameters=params, weight_decay=wd, grad_clip=clip)
    if cfg.optimizer == "adam":
        return paddle.optimizer.Adam(cfg.lr, parameters=params, weight_decay=wd, grad_clip=clip)
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

    @property
    def examples_per_sec(self) -> float:
        """Training examples over training-step time, across all epochs of this run."""
        timed = [h for h in self.history if h.get("train_time")]
        return sum(h["examples"] for h in timed) / max(1e-12, sum(h["train_time"] for h in timed))

    @property
    def wall_time(self) -> float:
        return sum(h["wall_time"] for h in self.history)

    def summary(self) -> str:
        """The d2l-style closing line: loss, train metric, test metric, examples/sec and device."""
        last = self.history[-1]
        return (f"loss {last['train_loss']:.3f}, {self.train_metric_label} {last['train_metric']:.3f}, "
                f"{self.metric_label} {last[self.metric]:.3f}, {self.examples_per_sec:.1f} examples/sec "
                f"on {self.device}")

    def to_dict(self) -> dict:
        return {"model": self.config.model, "config": asdict(self.config), "device": self.device,
                "data": self.data_source, "metric": self.metric, "history": self.history,
                "final": {**self.final, "examples_per_sec": self.examples_per_sec, "wall_time": self.wall_time}}


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


# --------------------------------------------------------------------------- the loop
class Trainer:
    """Train one model on one data object with one :class:`TrainConfig`.

    ``out_dir`` (optional) receives ``checkpoint.pdckpt`` after every epoch
    (written atomically) and is where ``resume`` looks for it.
    """

    def __init__(self, cfg: TrainConfig, out_dir=None, progress: Optional[bool] = None,
                 log: Optional[Callable[[str], None]] = print):
        self.cfg = cfg.validate()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress      # None: a bar only when stderr is a terminal
        self.log = log or (lambda s: None)
        self.task = get_task(get_spec(cfg.model).task)
        self.device = runtime.get_device(cfg.device)
        if self.device == "cpu" and cfg.cpu_threads:
            runtime.set_cpu_threads(cfg.cpu_threads)

    # -- checkpoints --------------------------------------------------------------
    def _comparable(self, cfg_dict: dict) -> dict:
        # These may change between a run and its resumption without changing the run.
        return {k: v for k, v in cfg_dict.items()
                if k not in ("epochs", "device", "eval_batch_size", "profile", "cpu_threads")}

    def checkpoint_path(self) -> Path:
        if self.out_dir is None:
            raise TrainingError("resume needs an output folder (--out) that holds a checkpoint")
        return self.out_dir / CHECKPOINT

    def load_checkpoint(self, model, optimizer) -> List[dict]:
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
        theirs, ours = self._comparable(state["config"]), self._comparable(asdict(self.cfg))
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if diff:
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {ours.get(k)!r}" for k in diff)
            raise TrainingError(f"--resume: {path} was trained with another configuration ({detail}); "
                                "resume with the same settings or use another --out folder")
        model.set_state_dict(state["model"])
        optimizer.set_state_dict(_rename_optimizer_state(state["optimizer"], model, portable=False))
        return list(state["history"])

    def save_checkpoint(self, model, optimizer, history: List[dict]) -> None:
        if self.out_dir is None:
            return
        atomic.paddle_save({"format": CHECKPOINT_FORMAT, "model_name": self.cfg.model, "config": asdict(self.cfg),
                            "model": model.state_dict(),
                            "optimizer": _rename_optimizer_state(optimizer.state_dict(), model, portable=True),
                            "history": history}, self.checkpoint_path())

    # -- mixed precision (GPU only; not run on our CPU machine) --------------------
    def _amp(self):
        if self.device != "gpu" or self.cfg.amp == "off":
            return None, None
        bf16 = getattr(paddle.amp, "is_bfloat16_supported", lambda: False)()
        dtype = "bfloat16" if bf16 else "float16"
        # fp16 has a narrow range: scale the loss so small gradients survive; bf16 does not need it.
        scaler = None if bf16 else paddle.amp.GradScaler(init_loss_scaling=2.0 ** 14)
        return dtype, scaler

    # -- fit ------------------------------------------------------------------------
    def evaluate(self, model, data) -> dict:
        model.eval()
        try:
            return self.task.evaluate(model, data, self.cfg)
        finally:
            model.train()

    def fit(self, model: nn.Layer, data, resume: bool = False) -> FitResult:
        cfg, task = self.cfg, self.task
        model.train()
        optimizer = make_optimizer(cfg, model)
        history = self.load_checkpoint(model, optimizer) if resume else []
        if resume and len(history) >= cfg.epochs:
            self.log(f"checkpoint already has {len(history)} epochs (of {cfg.epochs}); nothing to train")
        amp_dtype, scaler = self._amp()
        steps = data.steps_per_epoch(cfg.batch_size)
        # Reading a loss on the host stalls a GPU's queue, so there we look every 50 steps.
        check_every = 1 if self.device == "cpu" else 50
        for epoch in range(len(history), cfg.epochs):
            wall_start = time.perf_counter()
            paddle.seed(cfg.seed * 1000003 + epoch)  # dropout etc. depend on (seed, epoch) only: exact resume
            loss_sum = paddle.zeros([], "float32")
            hits_sum = paddle.zeros([], "float32")
            count = seen = 0
            bar = self._bar(steps, epoch)
            runtime.synchronize(self.device)
            t0 = time.perf_counter()
            for step, (x, target) in enumerate(data.train_batches(cfg.batch_size, epoch)):
                optimizer.set_lr(lr_at(cfg, epoch * steps + step, steps))
                if amp_dtype:
                    with paddle.amp.auto_cast(dtype=amp_dtype):
                        out = model(x)
                        loss = task.loss(out, target, cfg)
                else:
                    out = model(x)
                    loss = task.loss(out, target, cfg)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                optimizer.clear_grad()
                n = int(x.shape[0])
                loss_sum += loss.detach().astype("float32") * n
                hits, denom = task.train_hits(out.detach() if hasattr(out, "detach") else out, target)
                hits_sum += hits
                count += denom
                seen += n
                if (step + 1) % check_every == 0 or step + 1 == steps:
                    value = float(loss_sum) / seen
                    if not math.isfinite(value):
                        where = f"step {step + 1}" if check_every == 1 else f"steps {step + 2 - check_every}-{step + 1}"
                        kept = (f"; the checkpoint of epoch {len(history)} in {self.checkpoint_path()} is kept"
                                if self.out_dir is not None and history else "")
                        raise TrainingError(
                            f"non-finite loss ({value}) in epoch {epoch + 1}, {where}; lower the learning rate "
                            f"(now {cfg.lr}) or add warm-up / gradient clipping{kept}")
                    if bar is not None:
                        bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                if bar is not None:
                    bar.update(1)
            runtime.synchronize(self.device)
            train_time = time.perf_counter() - t0
            if bar is not None:
                bar.close()
            metrics = self.evaluate(model, data)
            record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, seen),
                      "train_metric": float(hits_sum) / max(1, count), **metrics,
                      "examples": seen, "train_time": train_time, "examples_per_sec": seen / max(1e-12, train_time),
                      "lr_end": optimizer.get_lr(), "wall_time": time.perf_counter() - wall_start}
            history.append(record)
            self.save_checkpoint(model, optimizer, history)
            self.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.3f}, "
                     f"{task.train_metric_label} {record['train_metric']:.3f}, "
                     f"{task.metric_label} {record[task.metric]:.3f}, "
                     f"{record['examples_per_sec']:.1f} examples/sec, {record['wall_time']:.1f} s")
        final = {k: v for k, v in history[-1].items()
                 if k not in ("epoch", "examples", "train_time", "wall_time", "lr_end", "examples_per_sec")} \
            if history else {}
        return FitResult(model, cfg, history, self.device, getattr(data, "source", {}), task.metric,
                         task.metric_label, task.train_metric_label, final, data)

    def _bar(self, steps: int, epoch: int):
        if self.progress is False:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="batch", leave=False,
                    disable=None if self.progress is None else not self.progress)


# --------------------------------------------------------------------------- one call
def train(model: str, profile: str = "auto", out=None, resume: bool = False, data_dir=None,
          progress: Optional[bool] = None, log: Optional[Callable[[str], None]] = print,
          **overrides) -> FitResult:
    """Train a registered model with a profile; the call behind the notebooks.

    >>> result = train("lenet_relu", profile="smoke")          # doctest: +SKIP
    >>> print(result.summary())

    With ``out``, the folder receives the per-epoch checkpoint, ``results.json``
    and ``curves.png``.
    """
    return run(config_for(model, profile, **overrides), out, resume, data_dir, progress, log)


def run(cfg: TrainConfig, out=None, resume: bool = False, data_dir=None,
        progress: Optional[bool] = None, log: Optional[Callable[[str], None]] = print) -> FitResult:
    """Build data and model for ``cfg``, fit, and save results when ``out`` is given."""
    trainer = Trainer(cfg, out, progress=progress, log=log)
    data = trainer.task.build_data(cfg, data_dir)
    net = build_model(cfg)
    result = trainer.fit(net, data, resume=resume)
    if out is not None and result.history:
        save_result(result, out)
    return result


def save_result(result: FitResult, out) -> None:
    """Write ``results.json`` (with the environment) and ``curves.png`` into ``out``."""
    from . import plots

    out = Path(out)
    atomic.write_json(out / "results.json", {**result.to_dict(), "environment": runtime.environment(result.device),
                                             "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    plots.save_curves(result.history, out / "curves.png", result.metric, title=result.config.model)
