"""The one training loop of the course: ``train_one_epoch``, ``evaluate`` and ``fit`` on top.

Where things live: :mod:`paddle_cnn.config` (what decides a run),
:mod:`paddle_cnn.models.factory` (building and initialising the model),
:mod:`paddle_cnn.checkpoint` (saving and resuming), :mod:`paddle_cnn.results`
(what a run leaves). This file holds the loop alone; the names a user
starts from (``train``, ``config_for``, ``TrainConfig``, ``build_model``,
``Trainer``) are exported by :mod:`paddle_cnn` itself.

A run has two kinds of state, kept apart:

* :class:`Trainer` -- where and how this process trains (config, device,
  processes, precision, threads, task, output folder). It holds nothing
  that one ``fit`` makes, so ``Trainer.evaluate(model, data)`` scores the model
  it is given whatever ran before;
* :class:`TrainState` -- what one ``fit`` creates and changes: the model, its
  data-parallel wrapper, the optimizer, the precision step, the weight
  average (EMA), the history, the accelerator's report.

What examples/sec measures: the global training examples of one epoch divided
by the wall time of that epoch's training steps -- batch preparation on the
device (gather, resize, augmentation), forward, loss, backward, the gradient
all-reduce of a multi-process run and the optimizer update. Evaluation and
checkpointing are outside the timer, and so are the first
:data:`TIMER_WARMUP_STEPS` steps a process runs (kernel selection, allocator
growth). On a GPU the device is synchronised at both edges of the timer so
queued work is counted. This is how d2l's ``train_ch6`` times an epoch, except
that our data preparation happens inside the timed steps (it is on the device,
so it is part of the step).
"""
from __future__ import annotations

import contextlib
import errno
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, List, Optional

import paddle
from paddle import nn

from . import atomic, checkpoint, distributed, memory, runtime
from .checkpoint import CHECKPOINT
from .config import TrainConfig, TrainingError, choose_precision, config_for
from .ema import WeightAverage
from .models import get_spec
from .models.factory import build_model
from .results import FitResult, save_result
from .tasks import get_task

#: Steps at the start of a process's first epoch left out of examples/sec (warm-up, not throughput).
TIMER_WARMUP_STEPS = 3


# --------------------------------------------------------------------------- optimiser and precision
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


class PrecisionStep:
    """One training step for every precision: autocast and loss scaling are off in fp32, not a second path.

    On the CPU, bf16 does not go through Paddle's autocast (its CPU kernels have no bf16 convolution or
    matmul): the accelerator's Conv2D and Linear layers compute in bf16 inside oneDNN with float32
    tensors between layers and float32 master weights (:func:`paddle_cnn.accel.enable_bf16`), so the
    step itself is the fp32 one. ``PADDLE_CNN_BF16_ACTIVATIONS=1`` (off by default, issue 38) keeps bf16
    tensors between the routed layers of models that allow it; the loss still sees float32.
    """

    def __init__(self, precision: str, device: str):
        self.precision = precision
        self.dtype = "bfloat16" if precision == "bf16" else "float16"  # unused (autocast off) in fp32
        self.enabled = precision != "fp32" and device == "gpu"
        # fp16 has a narrow range: scale the loss so small gradients survive; bf16 does not need it.
        self.scaling = precision == "fp16"
        self.scaler = paddle.amp.GradScaler(enable=self.scaling, init_loss_scaling=2.0 ** 14)

    def autocast(self):
        return paddle.amp.auto_cast(enable=self.enabled, dtype=self.dtype)

    def __call__(self, model, x, target, task, optimizer):
        """One step of ``model`` on a batch; ``task`` is bound to the run's config (its loss settings)."""
        with self.autocast():
            out = model(x)
            loss = task.loss(out, target)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.clear_grad()
        return out, loss



# --------------------------------------------------------------------------- evaluation
def evaluate(model: nn.Layer, data, cfg: TrainConfig, step: Optional[PrecisionStep] = None,
             ema: Optional[WeightAverage] = None, ablate: bool = False, batch_size: Optional[int] = None) -> dict:
    """Test metrics of ``model`` on ``data``; rank 0's figures are shared with every rank.

    Scores exactly the model it is given: with ``ema`` (a :class:`WeightAverage`
    of this model's own run) the averaged weights are swapped in for the
    evaluation and swapped back after; nothing else is remembered between calls.
    ``step`` evaluates under the training precision (autocast). ``ablate`` (the
    last epoch) also scores the run without each test-time trick it uses, as
    ``<metric>_without_ema`` and ``<metric>_without_tta``: what each added,
    measured on the same trained network.

    Every rank evaluates, and rank 0's result is broadcast. Letting rank 0
    evaluate alone would leave the others waiting inside the broadcast, and
    a gloo collective gives up after a fixed time: a 28-px ResNet whose
    flip-averaged evaluation took rank 0 longer than that ended a two-process
    CPU run with ``gloo ... TIMEOUT``. The other ranks' cores are idle during
    evaluation anyway, so the wall time is the same. (Their batch-norm
    statistics differ from rank 0's, which is why their figures are not
    averaged in.)
    """
    task = get_task(get_spec(cfg.model).task, cfg)
    batch = batch_size or cfg.eval_batch_size
    inner = distributed.unwrap(model)
    autocast = step.autocast() if step is not None else contextlib.nullcontext()
    averaged = ema.applied(inner) if ema is not None else contextlib.nullcontext()
    with runtime.evaluating(inner), autocast:
        with averaged:
            metrics = task.evaluate(inner, data, batch)
            if ablate and cfg.tta != "none":
                plain = task.bind(replace(cfg, tta="none"))
                metrics[f"{task.metric}_without_tta"] = plain.evaluate(inner, data, batch)[task.metric]
        if ablate and ema is not None:
            metrics[f"{task.metric}_without_ema"] = task.evaluate(inner, data, batch)[task.metric]
    return distributed.broadcast_object(metrics)


# --------------------------------------------------------------------------- one run's state
@dataclass
class TrainState:
    """What one ``fit`` creates and changes, handed from function to function as one object."""

    model: nn.Layer                  # the network being trained (unwrapped)
    net: nn.Layer                    # the same network, wrapped in paddle.DataParallel in an N-process run
    optimizer: object
    step: PrecisionStep
    ema: Optional[WeightAverage] = None
    history: List[dict] = field(default_factory=list)
    accel: dict = field(default_factory=dict)

    def _scaler(self):
        return self.step.scaler if self.step.scaling else None

    def to_checkpoint(self, cfg: TrainConfig, device: str) -> dict:
        """What a checkpoint of this run holds (:mod:`paddle_cnn.checkpoint` writes and checks it)."""
        scaler = self._scaler()
        return {"format": checkpoint.FORMAT, "model_name": cfg.model, "config": asdict(cfg), "device": device,
                "model": dict(self.model.state_dict()),
                "optimizer": checkpoint.rename_optimizer_state(self.optimizer.state_dict(), self.model, portable=True),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "history": self.history}

    def restore(self, saved: dict, where) -> None:
        """Load a checkpoint's ``saved`` state (:meth:`to_checkpoint`'s, read back) into this run.

        Everything is checked before anything is loaded: the weights' names and shapes, the weight
        average when this run keeps one, the history's epochs. CheckpointError says what is wrong.
        """
        if self.ema is not None and not saved.get("ema"):
            raise checkpoint.CheckpointError(f"--resume: {where} was trained without --ema; resume with the same settings")
        history = checkpoint.check_history(saved["history"], where)
        checkpoint.load_weights(self.model, saved["model"], where)
        self.optimizer.set_state_dict(checkpoint.as_tensors(
            checkpoint.rename_optimizer_state(saved["optimizer"], self.model, portable=False)))
        scaler = self._scaler()
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(checkpoint.as_tensors(saved["scaler"]))
        if self.ema is not None:
            self.ema.set_state_dict(checkpoint.as_tensors(saved["ema"]))
        self.history = history


# --------------------------------------------------------------------------- the loop
class Trainer:
    """Where and how this process trains one :class:`TrainConfig`; :meth:`fit` runs the loop.

    ``out_dir`` (optional) receives ``checkpoint.pdckpt`` after every epoch
    (written atomically, by rank 0 of a multi-process run) and is where
    ``resume`` looks for it. In a process started by :mod:`paddle_cnn.distributed`
    the model is wrapped in ``paddle.DataParallel`` and each process trains on
    its slice of every global batch. A Trainer keeps no state of a run between
    calls: each :meth:`fit` makes its own :class:`TrainState`.
    """

    def __init__(self, cfg: TrainConfig, out_dir=None, progress: Optional[bool] = None,
                 log: Optional[Callable[[str], None]] = print):
        self.cfg = cfg.validate()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.task = get_task(get_spec(cfg.model).task, self.cfg)   # bound once: no config per step
        kind = runtime.resolve_device(cfg.device)
        self.dist = distributed.context(kind)
        self.device = runtime.get_device(cfg.device, self.dist.local_rank)
        self.progress = progress if self.dist.is_main else False  # None: a bar only when stderr is a terminal
        self.log = (log or (lambda s: None)) if self.dist.is_main else (lambda s: None)
        self.precision = choose_precision(cfg.amp, self.device)
        if self.precision == "bf16" and self.device == "cpu":
            if cfg.accel == "off":
                raise ValueError("--amp bf16 on the CPU runs through the oneDNN accelerator; drop --accel off")
            from . import accel

            ok, why = accel.bf16_available()
            if not ok:
                raise ValueError(f"--amp bf16 on the CPU: {why}")
        self.threads = None
        if self.device == "cpu":
            self.threads = runtime.set_cpu_threads(cfg.cpu_threads or max(1, runtime.physical_cores()
                                                                           // self.dist.world))

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def run_info(self, accel: Optional[dict] = None) -> dict:
        """How this run trains: precision, processes, backend, threads, the CPU accelerator."""
        if accel is None:
            accel = {"enabled": False, "reason": "GPU run" if self.device == "gpu" else "not applied"}
        return {"precision": self.precision, "world": self.dist.world, "backend": self.dist.backend,
                "threads_per_process": self.threads, "accel": accel}

    # -- checkpoints --------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        if self.out_dir is None:
            raise TrainingError("resume needs an output folder (--out) that holds a checkpoint")
        return self.out_dir / CHECKPOINT

    def load_checkpoint(self, state: TrainState) -> None:
        """The checkpoint in ``out_dir`` (checked against this run) loaded into ``state``."""
        path = self.checkpoint_path()
        if not path.is_file():
            raise TrainingError(f"--resume: no checkpoint at {path}; train without --resume first "
                                "(or point --out at the folder of the run to continue)")
        saved = checkpoint.load(path)
        checkpoint.check_resumable(saved, self.cfg, self.device, path)
        state.restore(saved, path)

    def save_checkpoint(self, state: TrainState) -> None:
        if self.out_dir is None or not self.is_main:
            return
        blob = state.to_checkpoint(self.cfg, self.device)
        path = self.checkpoint_path()
        try:
            checkpoint.save(path, blob)
        except OSError as e:
            kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint was written"
            if e.errno == errno.ENOSPC:
                need = len(checkpoint.dumps(blob)) / 2**20
                raise TrainingError(f"the disk holding {self.out_dir} is full: a checkpoint needs {need:.1f} MB; "
                                    f"free some space and continue with --resume ({kept})") from None
            raise TrainingError(f"cannot write the checkpoint into {self.out_dir} ({e.strerror or e}); "
                                f"{kept}") from None

    # -- evaluation -----------------------------------------------------------------
    def eval_batch_size(self) -> int:
        """The evaluation batch: ``cfg.eval_batch_size``, on a GPU capped so its activations fit the memory budget."""
        if self.device != "gpu":
            return self.cfg.eval_batch_size
        dtype_bytes = 4 if self.precision == "fp32" else 2
        return memory.eval_batch_size(self.cfg, memory.gpu_budget(self.dist.local_rank), dtype_bytes)

    def evaluate(self, model, data, step: Optional[PrecisionStep] = None, ablate: bool = False,
                 ema: Optional[WeightAverage] = None) -> dict:
        """:func:`evaluate` with this trainer's config and evaluation batch: scores the model it is given."""
        return evaluate(model, data, self.cfg, step, ema, ablate, self.eval_batch_size())

    # -- fit ------------------------------------------------------------------------
    def start(self, model: nn.Layer, resume: bool = False) -> TrainState:
        """A fresh :class:`TrainState` for ``model`` (from the checkpoint with ``resume``)."""
        cfg = self.cfg
        accel = self.run_info()["accel"]
        if self.device == "cpu" and cfg.accel != "off":
            from . import accel as accelerator

            accel = accelerator.apply(model, cfg.accel, threads=self.threads, log=self.log)
            if self.precision == "bf16":
                if not accel.get("enabled"):
                    raise ValueError(f"--amp bf16 on the CPU needs the oneDNN accelerator: {accel.get('reason')}")
                bf16 = accelerator.enable_bf16(model, threads=self.threads, log=self.log)
                accel = {**accel, "bf16": bf16}
                between = ("bf16 activations between routed layers, float32 statistics and head"
                           if bf16.get("activations") == "bf16" else "tensors between layers")
                self.log(f"bf16: {', '.join(f'{n} {k}' for k, n in bf16.items() if isinstance(n, int) and k[0].isupper())} "
                         f"layers compute in bf16 through oneDNN (float32 weights, loss and {between})")
        elif self.device == "cpu":
            accel = {"enabled": False, "reason": "--accel off"}
        model.train()
        step = PrecisionStep(self.precision, self.device)
        state = TrainState(model=model, net=model, optimizer=make_optimizer(cfg, model, self.device), step=step,
                           ema=WeightAverage(model, cfg.ema) if cfg.ema else None, accel=accel)
        if resume:
            self.load_checkpoint(state)
        state.net = distributed.wrap(model, self.dist, cfg.sync_bn)
        return state

    def fit(self, model: nn.Layer, data, resume: bool = False, stop_after: Optional[int] = None) -> FitResult:
        """Train ``model`` on ``data`` for ``cfg.epochs`` epochs (from the checkpoint with ``resume``).

        ``stop_after`` ends the run after that many epochs in all while the
        schedule still plans ``cfg.epochs`` (what ``homework verify`` replays).
        What examples/sec measures: see the module docstring.
        """
        cfg, task = self.cfg, self.task
        state = self.start(model, resume)
        if data.num_train < cfg.batch_size:
            raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {data.num_train} training examples; "
                             f"use --batch-size {data.num_train} or less")
        if getattr(data, "num_test", 1) < 1:
            raise ValueError("the test set is empty: nothing to score the model on")
        history = state.history
        last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        if resume and len(history) >= last:
            self.log(f"checkpoint already has {len(history)} epochs (of {cfg.epochs}); nothing to train")
        if history and task.metric not in history[-1]:  # stopped between saving an epoch and evaluating it
            history[-1].update(self.evaluate(state.net, data, state.step, ablate=len(history) == cfg.epochs,
                                             ema=state.ema))
            self.save_checkpoint(state)
        writer = self._visualdl()
        warm = TIMER_WARMUP_STEPS
        for epoch in range(len(history), last):
            wall_start = time.perf_counter()
            record = train_one_epoch(self, state, data, epoch, warm)
            warm = 0
            history.append(record)
            self.save_checkpoint(state)   # before evaluation, which may fail
            record.update(self.evaluate(state.net, data, state.step, ablate=epoch + 1 == cfg.epochs, ema=state.ema))
            record["wall_time"] = time.perf_counter() - wall_start
            self.save_checkpoint(state)
            self._write_scalars(writer, record, epoch)
            self.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.3f}, "
                     f"{task.train_metric_label} {record['train_metric']:.3f}, "
                     f"{task.metric_label} {record[task.metric]:.3f}, "
                     f"{record['examples_per_sec']:.1f} examples/sec, {record['wall_time']:.1f} s")
        if writer is not None:
            writer.close()
        if state.ema is not None:   # the returned model is the one that was scored
            state.ema.copy_to(model)
        final = {k: v for k, v in history[-1].items()
                 if k not in ("epoch", "examples", "timed_examples", "train_time", "wall_time", "lr_end",
                              "examples_per_sec")} if history else {}
        return FitResult(model, cfg, history, self.device, getattr(data, "source", {}), task.metric,
                         task.metric_label, task.train_metric_label, final, data, self.run_info(state.accel))

    def check_finite(self, loss_sum, seen: int, epoch: int, i: int, check_every: int, epochs_done: int) -> None:
        """Stop on a non-finite loss, on every rank at the same step (the check is an all-reduce)."""
        total = distributed.all_reduce_sum(loss_sum.clone()) if self.dist.active else loss_sum
        value = float(total) / seen
        if math.isfinite(value):
            return
        where = f"step {i + 1}" if check_every == 1 else f"steps {i + 2 - check_every}-{i + 1}"
        kept = (f"; the checkpoint of epoch {epochs_done} in {self.checkpoint_path()} is kept"
                if self.out_dir is not None and epochs_done else "")
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


def train_one_epoch(trainer: Trainer, state: TrainState, data, epoch: int, warmup_steps: int = 0) -> dict:
    """One pass over the training set; returns the epoch's record (loss, train metric, examples/sec, lr).

    The first ``warmup_steps`` steps are trained but left out of the timer.
    Dropout and augmentation draw from (seed, epoch, rank) only, so a resumed
    run replays the epoch exactly.
    """
    cfg, task, dist, device = trainer.cfg, trainer.task, trainer.dist, trainer.device
    steps = data.steps_per_epoch(cfg.batch_size)
    # Reading a loss on the host stalls a GPU's queue, so there we look every 50 steps; with several
    # processes the check is an all-reduce of its own, so the CPU looks every 10.
    check_every = 50 if device == "gpu" else 10 if dist.active else 1
    paddle.seed(cfg.seed * 1000003 + epoch + 7919 * dist.rank)
    loss_sum = paddle.zeros([], "float32")
    hits_sum = paddle.zeros([], "float32")
    count = seen = timed = 0
    bar = trainer._bar(steps, epoch)
    runtime.synchronize(device)
    t0 = time.perf_counter()
    for i, (x, target) in enumerate(data.train_batches(cfg.batch_size, epoch, rank=dist.rank, world=dist.world)):
        if i == warmup_steps:  # the first steps this process runs are not timed
            runtime.synchronize(device)
            t0, timed = time.perf_counter(), 0
        state.optimizer.set_lr(lr_at(cfg, epoch * steps + i, steps))
        out, loss = state.step(state.net, x, target, task, state.optimizer)
        if state.ema is not None:
            state.ema.update(state.model)
        n = int(x.shape[0]) * dist.world
        loss_sum += loss.detach().astype("float32") * n
        hits, denom = task.train_hits(out.detach() if hasattr(out, "detach") else out, target)
        hits_sum += hits
        count += denom
        seen += n
        timed += n
        if (i + 1) % check_every == 0 or i + 1 == steps:
            trainer.check_finite(loss_sum, seen, epoch, i, check_every, len(state.history))
            if bar is not None:
                bar.set_postfix(loss=f"{float(loss_sum) / seen / dist.world:.3f}", refresh=False)
        if bar is not None:
            bar.update(1)
    runtime.synchronize(device)
    train_time = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    # Sums over ranks: every rank ends the epoch with the same loss and train metric.
    loss_sum = distributed.all_reduce_sum(loss_sum)
    hits_sum = distributed.all_reduce_sum(hits_sum)
    # A task's denominator is an int known on the host (examples, pixels) or, when it depends on
    # the targets (DenseBox's positive cells), a device tensor summed like the hits.
    count = count * dist.world if isinstance(count, int) else float(distributed.all_reduce_sum(count))
    return {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, seen) / dist.world,
            "train_metric": float(hits_sum) / max(1, count),
            "examples": seen, "timed_examples": timed, "train_time": train_time,
            "examples_per_sec": timed / max(1e-12, train_time), "lr_end": state.optimizer.get_lr()}


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
        progress: Optional[bool] = None, log: Optional[Callable[[str], None]] = print,
        stop_after: Optional[int] = None, check_memory: bool = True) -> FitResult:
    """Build data and model for ``cfg``, fit, and save results when ``out`` is given (rank 0).

    ``check_memory=False`` when the caller has already refused a size that cannot fit
    (:func:`paddle_cnn.memory.check_fits_memory`; the command line does it before preparing ``--out``).
    Rank 0 holds the lock of ``out`` (:func:`paddle_cnn.atomic.locked`) from before it touches anything
    there to the end: a second command on the same folder is refused (FolderBusy) and changes nothing.
    """
    if check_memory:
        memory.check_fits_memory(cfg)
    trainer = Trainer(cfg, out, progress=progress, log=log)
    owns_out = out is not None and trainer.is_main
    with atomic.locked(out, "the run folder") if owns_out else contextlib.nullcontext():
        if owns_out:
            atomic.remove_leftovers(out)   # a killed write's .part files: ours to remove once we hold the lock
        data = trainer.task.build_data(cfg, data_dir)
        net = build_model(cfg)
        result = trainer.fit(net, data, resume=resume, stop_after=stop_after)
        if owns_out and result.history and stop_after is None:
            save_result(result, out)
    return result


__all__ = ["Trainer", "TrainState", "PrecisionStep", "evaluate", "train_one_epoch", "make_optimizer", "lr_at",
           "train", "run", "TIMER_WARMUP_STEPS"]
