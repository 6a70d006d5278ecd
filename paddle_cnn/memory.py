"""Memory model: how many bytes a training step and an evaluation batch need on a GPU.

No GPU is available where this course is written, so the question "does the
``course`` profile of vgg11 fit a 16 GB V100?" is answered by arithmetic on
tensor shapes. One forward pass at a small batch (:data:`MEASURE_BATCH`) on the
CPU, with a forward hook on every layer, records each tensor that enters or
leaves a layer: its number of elements, whether it has the batch dimension and
when it first and last appears. Everything with the batch dimension scales
linearly with the batch, so one small forward gives the bytes at any batch.

Training step (``train_bytes``), an upper bound on the peak of a step:

* activations: every distinct tensor that leaves a layer (plus the model's
  input, the inputs of leaf layers made by functional calls such as
  ``paddle.concat``, and the model's outputs, also a dict of them as DenseBox
  returns). Autograd keeps most of them for the backward pass. Some it frees
  (a convolution output read only by a ReLU is not needed once the ReLU has
  run), so this overestimates, by up to ~2x for conv-ReLU stacks;
* the backward working set: gradients of the input and output of the largest
  leaf layer, live together while that layer's backward runs;
* parameters, their gradients and ``optimizer_slots`` state tensors of the
  same size (0 for plain SGD, 1 for momentum, 2 for Adam/AdamW), plus buffers
  (BatchNorm statistics). AMP's O1 keeps parameters and gradients in fp32; the
  fp16/bf16 copies of the weights that autocast makes are kept for backward
  too, so they are counted once more at ``dtype_bytes``.

Evaluation (``eval_bytes``, under ``no_grad``): the peak of the tensors alive
at any one time. A tensor lives from the hook that first sees it to the last
leaf layer that reads it; the model's input and outputs live throughout (the
caller holds them). The peak over all hooks, plus parameters and buffers, is
the estimate. For a plain stack of layers it is the largest (input + output)
of one layer plus the batch itself; skip connections (U-Net, ResNet) are
counted while some layer still reads them.

Bytes per element: ``dtype_bytes`` for floating-point activations (2 under
fp16/bf16 autocast, 4 in fp32; the model runs here in fp32 and only the
element count is kept), the real size for integer tensors. Under autocast a
few ops (softmax, losses) stay in fp32: not modelled.

What this leaves out, and why :data:`GPU_BUDGET` keeps headroom below a
card's memory: the CUDA context and cuDNN/cuBLAS handles (several hundred MB),
cuDNN convolution workspaces, the caching allocator's fragmentation and its
rounding of block sizes, temporaries inside one op (the normalisation before
the model, the loss), and the data kept on the device (the uint8 test set,
a few MB). Treat the numbers as a planning estimate, not a measurement on a GPU.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import paddle
from paddle import nn

from . import runtime
from .models import get_spec

#: What the model leaves out (CUDA context, cuDNN workspaces, the allocator's rounding), kept free on a card.
GPU_HEADROOM = 4 * 2**30
#: A 16 GB V100 (AI Studio's common card) minus the headroom: the plan when no GPU is visible to ask.
GPU_BUDGET = 16 * 2**30 - GPU_HEADROOM
#: The batch of the measuring forward pass: 2, so batch norm in training mode has two samples.
MEASURE_BATCH = 2
#: Optimizer state tensors per parameter: SGD none, momentum one velocity, Adam two moments.
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}
HALF_PRECISION = 2
FULL_PRECISION = 4


@dataclass(frozen=True)
class TensorRecord:
    """One tensor seen by the hooks; ``numel`` is per example when ``batched``."""

    numel: int
    batched: bool     # leading dimension is the batch: scales with it
    floating: bool    # floating point: stored at the precision in use
    itemsize: int     # bytes per element as measured (fp32: 4)
    first: int        # index of the hook event that first saw it
    last: int         # index of the last hook event that read it (the final event: alive to the end)

    def nbytes(self, batch: int, dtype_bytes: int) -> int:
        return self.numel * (batch if self.batched else 1) * (dtype_bytes if self.floating else self.itemsize)


END = 1 << 60  # "alive until the forward returns"


@dataclass(frozen=True)
class Footprint:
    """What one hooked forward pass showed about a model at one input size.

    ``leaf_calls`` lists, per call of a leaf layer, the record indices of its inputs and outputs.
    """

    tensors: Tuple[TensorRecord, ...]
    leaf_calls: Tuple[Tuple[int, ...], ...]
    events: int
    param_bytes: int          # as stored (fp32 stays fp32 under AMP O1)
    param_float_numel: int    # floating-point parameter elements (autocast copies them)
    buffer_bytes: int

    def activation_sum(self, batch: int, dtype_bytes: int = FULL_PRECISION) -> int:
        """Bytes of all recorded tensors together: what the backward pass may keep."""
        return sum(t.nbytes(batch, dtype_bytes) for t in self.tensors)

    def backward_work(self, batch: int, dtype_bytes: int = FULL_PRECISION) -> int:
        """Bytes of the largest (inputs + outputs) of one leaf call: its gradients during backward."""
        return max((sum(self.tensors[i].nbytes(batch, dtype_bytes) for i in call) for call in self.leaf_calls),
                   default=0)

    def live_peak(self, batch: int, dtype_bytes: int = FULL_PRECISION) -> int:
        """The most bytes alive at any hook event, each tensor alive from first to last sight."""
        delta = [0] * (self.events + 1)
        for t in self.tensors:
            size = t.nbytes(batch, dtype_bytes)
            delta[t.first] += size
            if t.last < self.events:
                delta[t.last + 1] -= size
        peak = live = 0
        for change in delta:
            live += change
            peak = max(peak, live)
        return peak

    def train_bytes(self, batch: int, dtype_bytes: int = FULL_PRECISION, optimizer_slots: int = 2) -> int:
        """Peak bytes of one training step at ``batch`` (see the module docstring for what is counted)."""
        weights = self.param_bytes * (2 + optimizer_slots) + self.buffer_bytes  # weights, grads, state
        if dtype_bytes < FULL_PRECISION:
            weights += self.param_float_numel * dtype_bytes  # autocast's half-precision weight copies
        return self.activation_sum(batch, dtype_bytes) + self.backward_work(batch, dtype_bytes) + weights

    def eval_bytes(self, batch: int, dtype_bytes: int = FULL_PRECISION) -> int:
        """Peak bytes of one evaluation batch under ``no_grad``."""
        return self.live_peak(batch, dtype_bytes) + self.param_bytes + self.buffer_bytes


# --------------------------------------------------------------------------- measuring
def gpu_budget(index: int = 0) -> int:
    """Bytes a run may plan for on GPU ``index``: its memory less :data:`GPU_HEADROOM` (at least 1 GiB).

    Asked through runtime's device queries (the boundary tests mock); where no
    GPU is visible (planning on a CPU machine for AI Studio) it is :data:`GPU_BUDGET`.
    """
    from . import runtime

    if runtime.gpu_count() <= index:
        return GPU_BUDGET
    return max(2**30, runtime.gpu_memory_bytes(index) - GPU_HEADROOM)


def _tensors_in(value) -> List[paddle.Tensor]:
    """Every tensor in a (nested) tuple / list / dict, in order."""
    if isinstance(value, paddle.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors_in(item)]
    return []


def _nbytes_stored(tensors) -> Tuple[int, int]:
    """(bytes, floating-point elements) of parameters or buffers as they are stored."""
    total = floating = 0
    for t in tensors:
        n = int(t.numel())
        total += n * t.element_size()
        if paddle.is_floating_point(t):
            floating += n
    return total, floating


def measure(model: nn.Layer, input_shape, train: bool = True) -> Footprint:
    """Run ``model`` once on zeros of ``input_shape`` (batch first) with hooks; return its footprint.

    The model runs where Paddle's current device is, in training or evaluation
    mode as ``train`` says (shapes are the same; the mode only decides what
    dropout and batch norm do), always without building a graph. The model's
    mode is restored afterwards.
    """
    batch = int(input_shape[0])
    seen: Dict[int, int] = {}        # id(tensor) -> record index
    keep: List[paddle.Tensor] = []  # hold every seen tensor so that no id is reused during the pass
    info: List[list] = []           # per record: [numel, batched, floating, itemsize, first, last]
    calls: List[Tuple[int, ...]] = []
    clock = [0]

    def touch(t: paddle.Tensor, reads: bool) -> int:
        key = id(t)
        if key not in seen:
            shape = list(t.shape)
            numel = int(t.numel())
            batched = bool(shape) and shape[0] == batch and batch > 0
            seen[key] = len(info)
            keep.append(t)
            info.append([numel // batch if batched else numel, batched, paddle.is_floating_point(t),
                         t.element_size(), clock[0], clock[0]])
        index = seen[key]
        if reads:
            info[index][5] = max(info[index][5], clock[0])
        return index

    def hook(layer, inputs, outputs):
        clock[0] += 1
        leaf = not layer.sublayers()
        ins = [touch(t, reads=True) for t in _tensors_in(inputs)] if leaf else []
        outs = [touch(t, reads=False) for t in _tensors_in(outputs)]
        if leaf:
            calls.append(tuple(dict.fromkeys(ins + outs)))

    was_training = model.training
    handles = [layer.register_forward_post_hook(hook) for layer in model.sublayers(include_self=True)]
    try:
        model.train() if train else model.eval()
        with paddle.no_grad():
            x = paddle.zeros(list(input_shape), dtype="float32")
            touch(x, reads=False)
            outputs = model(x)
            clock[0] += 1
            for t in [x] + _tensors_in(outputs):  # the caller holds its batch and the results to the end
                info[touch(t, reads=True)][5] = END
    finally:
        for handle in handles:
            handle.remove()
        model.train() if was_training else model.eval()
    events = clock[0]
    records = tuple(TensorRecord(n, b, f, s, first, min(last, events)) for n, b, f, s, first, last in info)
    param_bytes, param_float = _nbytes_stored(model.parameters())
    buffer_bytes, _ = _nbytes_stored(model.buffers())
    return Footprint(records, tuple(calls), events, param_bytes, param_float, buffer_bytes)


# --------------------------------------------------------------------------- registered models
_CACHE: Dict[tuple, Footprint] = {}


def _key(model_name: str, size: int, model_args: Optional[dict], train: bool) -> tuple:
    args = json.dumps(model_args or {}, sort_keys=True, default=repr)
    return model_name, args, int(size), bool(train)


def footprint(model_name: str, size: int, train: bool = True, model_args: Optional[dict] = None) -> Footprint:
    """The (cached) footprint of a registered model at ``size`` x ``size`` pixels.

    The model is built and run on the CPU whatever the current device is (and
    the device and Paddle's random state are restored afterwards), so asking on
    a GPU machine costs no GPU memory.
    """
    key = _key(model_name, size, model_args, train)
    if key not in _CACHE:
        kwargs = dict(model_args or {})
        kwargs.setdefault("input_size", int(size))
        channels = int(kwargs.get("in_channels", 1))
        previous = paddle.get_device()
        paddle.set_device("cpu")
        rng = paddle.get_rng_state()  # the CPU generator now: the weights' initialisation draws from it
        try:
            model = get_spec(model_name).constructor(**kwargs)
            _CACHE[key] = measure(model, [MEASURE_BATCH, channels, int(size), int(size)], train)
        finally:
            paddle.set_rng_state(rng)  # (no device argument: Paddle 2.6 fails on a string there)
            paddle.set_device(previous)
    return _CACHE[key]


def activation_bytes(model_name: str, size: int, batch: int, train: bool = True, dtype_bytes: int = 4,
                     model_args: Optional[dict] = None, optimizer_slots: int = 2) -> int:
    """Peak bytes of a training step (``train``) or an evaluation batch of a registered model.

    Includes parameters (and, for training, gradients and ``optimizer_slots``
    state tensors per parameter; 2 = Adam, the largest of our optimizers).

    >>> activation_bytes("vgg11", 224, 1000, train=False) > GPU_BUDGET   # doctest: +SKIP
    True
    """
    fp = footprint(model_name, size, train, model_args)
    if train:
        return fp.train_bytes(int(batch), dtype_bytes, optimizer_slots)
    return fp.eval_bytes(int(batch), dtype_bytes)


def precision_bytes(amp: str) -> int:
    """Bytes per activation element of a GPU run with this ``amp`` setting: 4 for fp32/off, else 2."""
    return FULL_PRECISION if amp in ("off", "fp32") else HALF_PRECISION


def optimizer_slots(cfg) -> int:
    """State tensors per parameter of ``cfg``'s optimizer (SGD with momentum keeps one)."""
    if cfg.optimizer == "sgd":
        return OPTIMIZER_SLOTS["momentum"] if cfg.momentum else OPTIMIZER_SLOTS["sgd"]
    return OPTIMIZER_SLOTS.get(cfg.optimizer, 2)


def eval_batch_size(cfg, budget_bytes: int = GPU_BUDGET, dtype_bytes: int = FULL_PRECISION) -> int:
    """The largest evaluation batch, at most ``cfg.eval_batch_size`` and at least 1, whose peak fits.

    The peak grows with the batch, so a bisection over 1..cfg.eval_batch_size
    finds it; 1 is returned even when a single example does not fit (the
    training step would not fit either, and that is reported elsewhere).
    """
    fp = footprint(cfg.model, cfg.resize, False, cfg.model_args)
    low, high = 1, int(cfg.eval_batch_size)
    while low < high:  # the answer stays in [low, high]
        mid = (low + high + 1) // 2
        if fp.eval_bytes(mid, dtype_bytes) <= budget_bytes:
            low = mid
        else:
            high = mid - 1
    return low


def step_memory(cfg, budget_bytes: int = GPU_BUDGET) -> dict:
    """Planned GPU memory of ``cfg`` (a TrainConfig): its training step and its evaluation.

    Precision: ``cfg.amp`` "off"/"fp32" is 4 bytes, anything else ("auto",
    "fp16", "bf16") 2, i.e. the GPU case. ``eval_batch`` is what
    :func:`eval_batch_size` picks under ``budget_bytes`` and ``eval_bytes`` its peak.
    """
    dtype = precision_bytes(cfg.amp)
    train = activation_bytes(cfg.model, cfg.resize, cfg.batch_size, True, dtype, cfg.model_args,
                             optimizer_slots(cfg))
    batch = eval_batch_size(cfg, budget_bytes, dtype)
    return {"train_bytes": train, "eval_bytes": activation_bytes(cfg.model, cfg.resize, batch, False, dtype,
                                                                 cfg.model_args),
            "eval_batch": batch, "dtype_bytes": dtype}


def check_fits_memory(cfg) -> None:
    """Refuse an input size whose training step cannot fit this machine's memory, before any step runs.

    Sizes up to the model's largest profile size are taken as they are; above
    it the memory model's estimate at that profile size is scaled by the area
    (activations grow with the pixels), which is enough to refuse ``--resize
    3000`` at once instead of after minutes of swapping.
    """
    spec = get_spec(cfg.model)
    reference = max(int(p.get("resize", cfg.resize)) for p in spec.profiles.values())
    if cfg.resize <= reference:
        return
    per_pixel = activation_bytes(cfg.model, reference, cfg.batch_size // cfg.nproc, True, 4, cfg.model_args,
                                 optimizer_slots(cfg))
    need = per_pixel * (cfg.resize / reference) ** 2
    device = runtime.resolve_device(cfg.device)
    total = gpu_budget() if device == "gpu" else runtime.memory_bytes()
    if total and need > total:
        raise ValueError(f"{cfg.model} at --resize {cfg.resize} does not fit in memory: about {need / 2**30:.0f} GiB "
                         f"for a training step of batch {cfg.batch_size}; this {'GPU budget' if device == 'gpu' else 'machine'} "
                         f"has {total / 2**30:.0f} GiB: use a smaller --resize (its profiles use up to {reference}) "
                         "or --batch-size")
