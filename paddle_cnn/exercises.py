"""Exercises: the seed's homework ("implement it in Paddle") made checkable, one or more per section.

Each section's notebook has an exercise cell holding an empty scaffold
(:func:`scaffold`): the student writes the section's block or function with
the package's own arguments, then calls ``exercises.check(NAME, candidate)``.
The check builds the package's version (:func:`reference`) and the student's
with a few standard argument sets, copies the package's weights into the
student's, runs both on the same random input and compares, one printed line
per property: parameter count, output shape, output values, gradients of the
input and of every parameter, and for blocks with batch normalization the
moving statistics and the output in prediction mode.

Weights are lined up layer by layer: each of the student's layers (the
parameters owned by one sub-layer) takes the first unused layer of the
package's version with the same parameter shapes, so layers must be defined
in the order they run. Shapes are compared without their 1-sized axes, so a
``gamma`` of shape ``[C]`` lines up with one of ``[1, C, 1, 1]``.

A wrong candidate never produces a traceback: an exception while building or
running it is reported as one line naming the exception and the last line of
the student's code it passed through. ``check(NAME, None)`` or an unfilled
scaffold prints that the exercise is not attempted yet.

>>> check("vgg_block", None)
exercise vgg_block: not attempted yet (fill in the cell above)
False
"""
from __future__ import annotations

import copy
import linecache
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from .blocks import DenseBlock, Inception, Residual, nin_block, transition, vgg_block
from .models.alexnet import AlexNet
from .models.batchnorm import batch_norm
from .models.unet import Up
from .tasks.detection import encode_boxes

OK, BAD = "✓", "✗"
RTOL = 1e-3        # different but correct code (loops vs conv2d, another summation order) differs by ~1e-6
ATOL = 1e-4        # of the largest magnitude of the expected tensor


def corr2d(X, K):
    """2-D cross-correlation of ``X`` [h, w] with ``K`` [kh, kw] (LeNet section): Paddle's ``conv2d`` is exactly this.

    >>> corr2d(paddle.arange(9, dtype="float32").reshape([3, 3]), paddle.to_tensor([[0.0, 1.0], [2.0, 3.0]])).numpy()
    array([[19., 25.],
           [37., 43.]], dtype=float32)
    """
    return F.conv2d(X.reshape([1, 1, *X.shape]), K.reshape([1, 1, *K.shape]))[0, 0]


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class Rand:
    """A random float32 input of ``shape``: normal * scale + offset (``positive``: uniform in [0.5, 2))."""
    shape: tuple
    grad: bool = True
    scale: float = 1.0
    offset: float = 0.0
    positive: bool = False

    def draw(self, rng) -> np.ndarray:
        if self.positive:
            return rng.uniform(0.5, 2.0, self.shape).astype(np.float32)
        return (rng.standard_normal(self.shape) * self.scale + self.offset).astype(np.float32)


@dataclass(frozen=True)
class Case:
    """One argument set: constructor ``args``/``kwargs`` (layers) and the inputs of the call.

    ``inputs`` is a list whose :class:`Rand` entries become tensors (the same
    numbers for both versions); a callable ``inputs`` takes a NumPy generator
    and returns the list (NumPy arrays are passed as they are).
    """
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    inputs: object = ()


@dataclass(frozen=True)
class Exercise:
    """An exercise: the package's ``reference``, what ``kind`` of object it is, and the argument sets."""
    name: str
    section: str
    reference: Callable
    kind: str                  # "layer": reference(*args) is an nn.Layer; "function": reference(*inputs) computes
    cases: tuple
    scaffold: str
    train: bool = True         # layer mode during the comparison (eval for dropout, whose masks are random)
    outputs: tuple = ()        # names of the returned values when there are several
    parts: Optional[Callable] = None  # output -> [(label, array)] compared one line each


def _scenes(rng, n: int, canvas: int, K: int, overlap: bool) -> list:
    """Padded box arrays of ``n`` scenes as a scene generator makes them (integer pixel edges)."""
    boxes = np.zeros((n, K, 4), np.float32)
    labels = np.zeros((n, K), np.int64)
    counts = np.array([1 + i % K for i in range(n)], np.int64)
    for i in range(n):
        for j in range(counts[i]):
            w, h = rng.randint(8, canvas // 2, size=2)
            if overlap and j:   # next to the previous box, so that some cells are claimed twice
                x1 = min(canvas - w, int(boxes[i, j - 1, 0]) + rng.randint(2, 6))
                y1 = min(canvas - h, int(boxes[i, j - 1, 1]) + rng.randint(2, 6))
            else:
                x1, y1 = rng.randint(0, canvas - w + 1), rng.randint(0, canvas - h + 1)
            boxes[i, j] = (x1, y1, x1 + w, y1 + h)
            labels[i, j] = rng.randint(0, 10)
    return [boxes, labels, counts, canvas, 4]


def _target_parts(t) -> list:
    return [("confidence (channel 0)", t[:, 0]), ("valid mask (channel 1)", t[:, 1]),
            ("distances (channels 2-5)", t[:, 2:6]), ("classes (channel 6)", t[:, 6])]


def _bn_inputs(shape, training: bool) -> list:
    c = [1, shape[1]] + [1] * (len(shape) - 2)
    return [Rand(shape, scale=2.0, offset=1.0), Rand(tuple(c), scale=0.3, offset=1.0), Rand(tuple(c), scale=0.5),
            Rand(tuple(c), grad=False), Rand(tuple(c), grad=False, positive=True), 1e-5, 0.9, training]


_SCAFFOLDS = {
    "corr2d": '''\
def my_corr2d(X, K):
    """2-D cross-correlation of X [h, w] with the kernel K [kh, kw]: no padding, stride 1.

    Returns Y [h - kh + 1, w - kw + 1] with Y[i, j] = (X[i:i + kh, j:j + kw] * K).sum().
    Use Paddle operations only, so that gradients reach X and K.
    """
    raise NotImplementedError
''',
    "alexnet": '''\
class MyAlexNet(nn.Layer):
    """AlexNet for in_channels x input_size x input_size images (d2l's version).

    Convolutions, each followed by ReLU: 96 11x11 (stride 4, padding 1), then a 3x3 max-pool with
    stride 2; 256 5x5 (padding 2), max-pool; 384, 384 and 256 3x3 (padding 1), max-pool.
    Then flatten, Linear -> 4096, ReLU, Dropout(0.5), Linear -> 4096, ReLU, Dropout(0.5),
    Linear -> num_classes. The first Linear's input size follows from input_size.
    Define the layers in the order they run.
    """

    def __init__(self, num_classes=10, in_channels=1, input_size=224):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
''',
    "vgg_block": '''\
def my_vgg_block(num_convs, in_channels, out_channels):
    """num_convs 3x3 convolutions (padding 1), each followed by ReLU, then a 2x2 max-pool with stride 2.

    Returns an nn.Sequential: [N, in_channels, H, W] -> [N, out_channels, H/2, W/2].
    """
    raise NotImplementedError
''',
    "nin_block": '''\
def my_nin_block(in_channels, out_channels, kernel, stride, padding):
    """A kernel x kernel convolution (stride, padding), then two 1x1 convolutions; ReLU after each.

    Returns an nn.Sequential; the 1x1 convolutions keep out_channels channels.
    """
    raise NotImplementedError
''',
    "inception": '''\
class MyInception(nn.Layer):
    """Four parallel paths, concatenated on the channel axis in this order; ReLU after every convolution.

    path 1: 1x1 conv -> c1; path 2: 1x1 conv -> c2[0], 3x3 conv (padding 1) -> c2[1];
    path 3: 1x1 conv -> c3[0], 5x5 conv (padding 2) -> c3[1];
    path 4: 3x3 max-pool (stride 1, padding 1), 1x1 conv -> c4.
    Output: [N, c1 + c2[1] + c3[1] + c4, H, W]. Define the layers in the order above.
    """

    def __init__(self, in_channels, c1, c2, c3, c4):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
''',
    "batch_norm": '''\
def my_batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """Batch normalization of X [N, C] (per feature) or [N, C, H, W] (per channel, over N, H and W).

    gamma, beta and the moving statistics are shaped [1, C] or [1, C, 1, 1].
    training=True: normalize with the batch mean and biased variance (divide by m), and return
    moving statistics updated as momentum * moving + (1 - momentum) * batch statistic.
    training=False: normalize with the moving statistics and return them unchanged.
    Returns (gamma * X_hat + beta, moving_mean, moving_var).
    """
    raise NotImplementedError
''',
    "residual": '''\
class MyResidual(nn.Layer):
    """conv1 3x3 (stride, padding 1) -> bn1 -> ReLU -> conv2 3x3 (padding 1) -> bn2, plus the shortcut, -> ReLU.

    The shortcut is the input itself, or with use_1x1conv=True a 1x1 convolution conv3 with the
    same stride (needed when the stride or the channel count changes).
    """

    def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
''',
    "dense_block": '''\
class MyDenseBlock(nn.Layer):
    """num_convs conv blocks (BatchNorm2D -> ReLU -> 3x3 conv with padding 1 -> growth_rate channels).

    Each block sees all earlier outputs: x = concat([x, block(x)]) on the channel axis, x first,
    so the output has in_channels + num_convs * growth_rate channels.
    """

    def __init__(self, num_convs, in_channels, growth_rate):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
''',
    "transition": '''\
def my_transition(in_channels, out_channels):
    """BatchNorm2D -> ReLU -> 1x1 conv to out_channels -> 2x2 average pool with stride 2.

    Returns an nn.Sequential: [N, in_channels, H, W] -> [N, out_channels, H/2, W/2].
    """
    raise NotImplementedError
''',
    "unet_up": '''\
class MyUp(nn.Layer):
    """One U-Net decoder step: forward(x, skip) with x [N, in_channels, h, w], skip [N, skip_channels, 2h, 2w].

    A 2x2 transposed convolution with stride 2 halves the channels (in_channels // 2) and doubles
    the side; concatenate [skip, up-sampled x] on the channel axis (skip first); then twice:
    3x3 conv (padding 1, bias_attr=False) -> BatchNorm2D -> ReLU, to out_channels.
    """

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        raise NotImplementedError

    def forward(self, x, skip):
        raise NotImplementedError
''',
    "densebox_targets": '''\
def my_densebox_targets(boxes, labels, counts, canvas, stride=4):
    """DenseBox training targets, float32 NumPy array [n, 7, G, G] with G = canvas // stride.

    boxes [n, K, 4] (x1, y1, x2, y2 in pixels), labels [n, K], counts [n]: rows j < counts[i] are real.
    Cell (row r, column c) has its centre at ((c + 0.5) * stride, (r + 0.5) * stride). For a box with
    centre (bx, by) and size s = sqrt(w * h), a cell is positive when its centre lies within 0.3 * s of
    (bx, by), and always for the cell holding the box centre (column bx // stride, row by // stride).
    A cell several boxes claim belongs to the one with the nearest centre (the first on a tie).
    Channels: 0 confidence (1 on positive cells, else 0); 1 valid (0 on cells within
    0.3 * s + 2 * stride of a centre that are not positive, else 1); 2-5 the distances
    (cx - x1, cy - y1, x2 - cx, y2 - cy) / 16 from the cell centre to the owning box's sides on
    positive cells, else 0; 6 the owning box's label on positive cells, else -1.
    """
    raise NotImplementedError
''',
}


def _exercises() -> "OrderedDict[str, Exercise]":
    E = OrderedDict()
    E["corr2d"] = Exercise("corr2d", "lenet", corr2d, "function", (
        Case(inputs=[Rand((6, 8)), Rand((2, 2))]),
        Case(inputs=[Rand((5, 7)), Rand((1, 2))]),
        Case(inputs=[Rand((4, 5)), Rand((3, 3))]),
    ), _SCAFFOLDS["corr2d"])
    E["alexnet"] = Exercise("alexnet", "alexnet", AlexNet, "layer", (
        Case((10, 1, 65), inputs=[Rand((2, 1, 65, 65))]),       # the smallest side: 1x1 after the last pool
        Case((5, 3, 112), inputs=[Rand((2, 3, 112, 112))]),     # 2x2 after the last pool: 1024 inputs to the MLP
    ), _SCAFFOLDS["alexnet"], train=False)
    E["vgg_block"] = Exercise("vgg_block", "vgg", vgg_block, "layer", (
        Case((2, 3, 8), inputs=[Rand((2, 3, 16, 16))]),
        Case((1, 4, 6), inputs=[Rand((2, 4, 10, 10))]),
        Case((3, 2, 5), inputs=[Rand((2, 2, 7, 7))]),           # odd side: the pool floors 7 to 3
    ), _SCAFFOLDS["vgg_block"])
    E["nin_block"] = Exercise("nin_block", "nin", nin_block, "layer", (
        Case((3, 8, 5, 2, 1), inputs=[Rand((2, 3, 17, 17))]),
        Case((1, 6, 3, 1, 1), inputs=[Rand((2, 1, 9, 9))]),
    ), _SCAFFOLDS["nin_block"])
    # Channel counts all different, so every layer's shapes are its own.
    E["inception"] = Exercise("inception", "googlenet", Inception, "layer", (
        Case((6, 4, (3, 5), (2, 6), 7), inputs=[Rand((2, 6, 9, 9))]),
        Case((5, 2, (4, 6), (1, 3), 8), inputs=[Rand((2, 5, 6, 6))]),
    ), _SCAFFOLDS["inception"])
    E["batch_norm"] = Exercise("batch_norm", "batchnorm", batch_norm, "function", (
        Case(inputs=_bn_inputs((4, 3, 5, 5), True)),
        Case(inputs=_bn_inputs((8, 5), True)),
        Case(inputs=_bn_inputs((4, 3, 5, 5), False)),
    ), _SCAFFOLDS["batch_norm"], outputs=("Y", "moving_mean", "moving_var"))
    E["residual"] = Exercise("residual", "resnet", Residual, "layer", (
        Case((3, 3), inputs=[Rand((2, 3, 6, 6))]),
        Case((3, 6), dict(use_1x1conv=True, stride=2), inputs=[Rand((2, 3, 7, 7))]),
        Case((4, 5), dict(use_1x1conv=True), inputs=[Rand((2, 4, 5, 5))]),
    ), _SCAFFOLDS["residual"])
    E["dense_block"] = Exercise("dense_block", "densenet", DenseBlock, "layer", (
        Case((2, 3, 4), inputs=[Rand((2, 3, 5, 5))]),
        Case((3, 2, 3), inputs=[Rand((2, 2, 4, 4))]),
    ), _SCAFFOLDS["dense_block"])
    E["transition"] = Exercise("transition", "densenet", transition, "layer", (
        Case((6, 3), inputs=[Rand((2, 6, 6, 6))]),
        Case((4, 5), inputs=[Rand((2, 4, 5, 5))]),
    ), _SCAFFOLDS["transition"])
    E["unet_up"] = Exercise("unet_up", "unet", Up, "layer", (
        Case((8, 4, 4), inputs=[Rand((2, 8, 3, 3)), Rand((2, 4, 6, 6))]),
        Case((6, 5, 3), inputs=[Rand((2, 6, 4, 4)), Rand((2, 5, 8, 8))]),
    ), _SCAFFOLDS["unet_up"])
    E["densebox_targets"] = Exercise("densebox_targets", "densebox", encode_boxes, "function", (
        Case(inputs=lambda rng: _scenes(rng, 3, 32, 3, overlap=False)),
        Case(inputs=lambda rng: _scenes(rng, 4, 48, 3, overlap=True)),
    ), _SCAFFOLDS["densebox_targets"], parts=_target_parts)
    return E


EXERCISES = _exercises()
# Section (homework folder, registry section) -> its main exercise; section_exercises() lists all of them.
SECTION_EXERCISE: "OrderedDict[str, str]" = OrderedDict()
for _ex in EXERCISES.values():
    SECTION_EXERCISE.setdefault(_ex.section, _ex.name)

_RESULTS: "OrderedDict[str, str]" = OrderedDict()   # name -> "passed" / "failed" / "not attempted", this process


def section_exercises(section: str) -> list:
    """Names of every exercise of ``section`` (e.g. ``["dense_block", "transition"]``)."""
    return [e.name for e in EXERCISES.values() if e.section == section]


def _get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def scaffold(name: str) -> str:
    """The empty scaffold of exercise ``name``: signature, docstring, ``raise NotImplementedError``.

    The scaffold uses ``paddle`` and ``nn`` (``from paddle import nn``) from the notebook's setup cell.
    """
    return _get(name).scaffold


def reference(name: str):
    """The package's object that exercise ``name`` is checked against (a class or a function)."""
    return _get(name).reference


def last_results() -> dict:
    """Outcome of each exercise checked in this process: name -> "passed", "failed" or "not attempted"."""
    return dict(_RESULTS)


def section_results(section: str) -> list:
    """What ``homework.record`` stores: ``{"exercise": name, "passed": bool or "not run"}`` per exercise."""
    out = []
    for name in section_exercises(section):
        status = _RESULTS.get(name)
        out.append({"exercise": name, "passed": "not run" if status is None else status == "passed"})
    return out


# --------------------------------------------------------------------------- errors
class _NotAttempted(Exception):
    pass


class _Failed(Exception):
    """One property failed; the message is the line already printed."""


_HIDDEN = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (paddle, np)) + (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(os.__file__)) + os.sep)


def _where(exc: BaseException) -> str:
    """'line 5 in forward: `x = self.conv(x)`' of the last frame outside Paddle, NumPy, the stdlib and this package."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(_HIDDEN):
            last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    code = last.tb_frame.f_code
    text = linecache.getline(code.co_filename, last.tb_lineno).strip()
    return f" (your code, line {last.tb_lineno} in {code.co_name}" + (f": `{text}`)" if text else ")")


def _error_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not set(line.strip()) <= set("-=")]
    # Paddle's messages start with a C++ stack or a banner; its own summary is the "(Kind) ..." line.
    summary = next((line for line in lines if line.startswith("(") and ")" in line[:30]), lines[0] if lines else "")
    if len(summary) > 240:
        summary = summary[:237] + "..."
    return f"{type(exc).__name__}: {summary}" if summary else type(exc).__name__


def _run_student(what: str, fn, *args, **kwargs):
    """Call the student's code; NotImplementedError means not attempted, any other error one printed line."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotAttempted() from None
    except Exception as exc:  # noqa: BLE001 - every error in the student's code becomes one line
        raise _Failed(f"{BAD} {what} raised {_error_line(exc)}{_where(exc)}") from None


# --------------------------------------------------------------------------- comparison helpers
def _squeezed(shape) -> tuple:
    return tuple(int(s) for s in shape if int(s) != 1)


def _tuple(shape) -> tuple:
    return tuple(int(s) for s in shape)


def _numpy(value) -> np.ndarray:
    return value.detach().numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)


def _close(mine: np.ndarray, expected: np.ndarray) -> Optional[str]:
    """None when close, else 'differ by up to D (at [i, j]: yours a, expected b)'."""
    # float32 arithmetic: AlexNet's head has 17 M weights, each of whose gradients gets compared.
    dtype = np.float32 if np.asarray(expected).dtype.kind == "f" else np.float64
    mine, expected = np.asarray(mine, dtype), np.asarray(expected, dtype)
    if np.array_equal(mine, expected):   # the usual case: the same weights through the same operations
        return None
    if not np.isfinite(mine).all():
        return "contain NaN or inf"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    diff = np.abs(mine - expected)
    if np.all(diff <= ATOL * scale + 1e-6 + RTOL * np.abs(expected)):
        return None
    at = np.unravel_index(int(diff.argmax()), diff.shape)
    return (f"differ by up to {diff.max():.3g} (at {list(map(int, at))}: yours {mine[at]:.4g}, "
            f"expected {expected[at]:.4g})")


def _max_diff(pairs) -> float:
    return max([float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) if np.size(a) else 0.0
                for a, b in pairs] or [0.0])


def _trainable(layer: nn.Layer) -> list:
    return [(n, p) for n, p in layer.named_parameters() if not p.stop_gradient]


def _state(layer: nn.Layer) -> list:
    """Moving statistics: Paddle's BatchNorm keeps them as non-trainable parameters, a from-scratch one as buffers."""
    return ([(n, p) for n, p in layer.named_parameters() if p.stop_gradient]
            + [(n, b) for n, b in layer.named_buffers() if b is not None])


def _line_up(ref: list, mine: list):
    """Pair the student's tensors with the package's: whole layers by their shapes in order, then tensor by tensor.

    Returns (pairs [(ref_name, ref_t, my_name, my_t)], unmatched package tensors, unmatched student tensors).
    """
    def groups(items):
        out = OrderedDict()
        for name, t in items:
            out.setdefault(name.rpartition(".")[0], []).append((name, t))
        return list(out.values())

    def sig(group):
        return tuple(_squeezed(t.shape) for _, t in group)

    ref_groups, used, pairs, left_mine = groups(ref), set(), [], []
    for group in groups(mine):
        match = next((i for i, g in enumerate(ref_groups) if i not in used and sig(g) == sig(group)), None)
        if match is None:
            left_mine += group
            continue
        used.add(match)
        pairs += [(rn, rt, mn, mt) for (rn, rt), (mn, mt) in zip(ref_groups[match], group)]
    left_ref = [item for i, g in enumerate(ref_groups) if i not in used for item in g]
    for name, t in list(left_mine):
        match = next((item for item in left_ref if _squeezed(item[1].shape) == _squeezed(t.shape)), None)
        if match is not None:
            pairs.append((match[0], match[1], name, t))
            left_ref.remove(match)
            left_mine.remove((name, t))
    return pairs, left_ref, left_mine


def _copy(pairs) -> None:
    for _, ref_t, _, my_t in pairs:
        paddle.assign(paddle.to_tensor(ref_t.numpy().reshape(_tuple(my_t.shape)), dtype=my_t.dtype), my_t)


def _perturb_constants(layer: nn.Layer, rng) -> None:
    """Give constant parameters (biases at 0, BN's gamma at 1) random values, so that a forgotten one shows."""
    for _, p in _trainable(layer):
        value = p.numpy()
        if value.size and np.ptp(value) == 0:
            p.set_value((value + rng.standard_normal(value.shape) * 0.5).astype(value.dtype))


def _flatten(out, names: tuple) -> list:
    if isinstance(out, dict):
        return [out[k] for k in sorted(out)]
    if isinstance(out, (tuple, list)) and (names or len(out) != 1):
        return list(out)
    return [out]


def _shape_text(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _arg_text(args, kwargs) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


def _input_text(values) -> str:
    shown = []
    for v in values:
        if isinstance(v, (np.ndarray, paddle.Tensor, Rand)):
            shown.append(f"[{', '.join(str(int(s)) for s in v.shape)}]")
        else:
            shown.append(repr(v))
    return ", ".join(shown)


def _materialize(raw: list, rng):
    """(values, grad flags): Rand entries drawn once; the same numbers go to both versions."""
    values, grads = [], []
    for item in raw:
        if isinstance(item, Rand):
            values.append(item.draw(rng))
            grads.append(item.grad)
        else:
            values.append(item)
            grads.append(False)
    return values, grads


def _as_inputs(values, grads, raw) -> list:
    """Fresh copies for one version: tensors for drawn inputs (with gradients where asked), the rest copied."""
    out = []
    for value, grad, item in zip(values, grads, raw):
        if isinstance(item, Rand):
            t = paddle.to_tensor(value)
            t.stop_gradient = not grad
            out.append(t)
        else:
            out.append(copy.deepcopy(value))
    return out


# --------------------------------------------------------------------------- the check
def _check_case(ex: Exercise, candidate, case: Case, raw: list, seed: int, label: str) -> None:
    """Run one argument set; print a line per property; raise _Failed (already printed) or _NotAttempted.

    The case's label is printed before its first property line, so an unfilled
    scaffold (NotImplementedError before any property) prints nothing here.
    """
    rng = np.random.RandomState(seed)
    values, grads = _materialize(raw, rng)
    ref_in, my_in = _as_inputs(values, grads, raw), _as_inputs(values, grads, raw)
    header = [label]

    def say(line):
        if header:
            print(header.pop())
        print("  " + line)

    def fail(line):
        say(line)
        raise _Failed(line)

    ref = mine = None
    pairs = state_pairs = []
    if ex.kind == "layer":
        try:   # the student's first: an unfilled scaffold stops here, before AlexNet's 25 M weights are drawn
            mine = _run_student("building it", candidate, *case.args, **case.kwargs)
        except _Failed as f:
            fail(str(f))
        if not isinstance(mine, nn.Layer):
            fail(f"{BAD} building it returned {type(mine).__name__}, not a paddle.nn.Layer")
        paddle.seed(seed)
        ref = ex.reference(*case.args, **case.kwargs)
        _perturb_constants(ref, rng)
        for layer in (ref, mine):
            if ex.train:
                layer.train()
            else:
                layer.eval()
        n_ref = sum(int(np.prod(p.shape)) for _, p in _trainable(ref))
        n_mine = sum(int(np.prod(p.shape)) for _, p in _trainable(mine))
        if n_ref != n_mine:
            fail(f"{BAD} parameter count: yours {n_mine:,}, expected {n_ref:,}")
        say(f"{OK} parameter count {n_ref:,}")
        pairs, left_ref, left_mine = _line_up(_trainable(ref), _trainable(mine))
        if left_ref or left_mine:
            if left_mine:
                shapes = ", ".join(f"{n} {list(map(int, t.shape))}" for n, t in left_mine[:3])
                fail(f"{BAD} weights: your parameters {shapes} have no counterpart of that shape in the "
                     f"package's version")
            shapes = ", ".join(f"{list(map(int, t.shape))}" for _, t in left_ref[:3])
            fail(f"{BAD} weights: the package's parameters of shapes {shapes} have no counterpart in yours")
        _copy(pairs)
        state_pairs, left_ref, left_mine = _line_up(_state(ref), _state(mine))
        if left_ref or left_mine:
            fail(f"{BAD} moving statistics: yours {len(_state(mine))} tensors, expected {len(_state(ref))} "
                 f"({', '.join(n for n, _ in _state(ref))}): use nn.BatchNorm2D or keep them as buffers")
        _copy(state_pairs)
        ref_out = ref(*ref_in)
        try:
            my_out = _run_student("the forward pass", mine, *my_in)
        except _Failed as f:
            fail(str(f))
    else:
        ref_out = ex.reference(*ref_in)
        try:
            my_out = _run_student("your function", candidate, *my_in)
        except _Failed as f:
            fail(str(f))

    # Output shapes.
    ref_outs, my_outs = _flatten(ref_out, ex.outputs), _flatten(my_out, ex.outputs)
    if len(my_outs) != len(ref_outs):
        what = f"{len(ref_outs)} values ({', '.join(ex.outputs)})" if ex.outputs else "one tensor"
        fail(f"{BAD} output: yours returned {len(my_outs)} value(s), expected {what}")
    for m in my_outs:
        if not isinstance(m, (paddle.Tensor, np.ndarray)):
            fail(f"{BAD} output: yours returned {type(m).__name__}, expected a paddle.Tensor")
    ref_shapes = [_shape_text(r.shape) for r in ref_outs]
    my_shapes = [_shape_text(m.shape) for m in my_outs]
    if ref_shapes != my_shapes:
        fail(f"{BAD} output shape: yours {', '.join(my_shapes)}, expected {', '.join(ref_shapes)}")
    say(f"{OK} output shape {', '.join(ref_shapes)}")

    # Output values, one line per named output (or part).
    named = list(zip(ex.outputs or ("output values",) * len(ref_outs), ref_outs, my_outs))
    if ex.parts is not None:
        named = [(label_r, r, m) for (label_r, r), (_, m) in zip(ex.parts(_numpy(ref_outs[0])),
                                                                  ex.parts(_numpy(my_outs[0])))]
    for what, r, m in named:
        problem = _close(_numpy(m), _numpy(r))
        if problem:
            fail(f"{BAD} {what}: yours {problem}")
        say(f"{OK} {what} (max difference {_max_diff([(_numpy(m), _numpy(r))]):.2g})")

    # Gradients of a weighted sum of the differentiable outputs (a plain sum would give BN zero gradients).
    live = [i for i, r in enumerate(ref_outs) if isinstance(r, paddle.Tensor) and not r.stop_gradient]
    if live:
        weights = [rng.standard_normal(_tuple(ref_outs[i].shape)).astype(np.float32) for i in live]
        for i in live:
            if not isinstance(my_outs[i], paddle.Tensor) or my_outs[i].stop_gradient:
                fail(f"{BAD} gradients: none reach your output (did it leave Paddle, e.g. through .numpy()?)")
        sum((ref_outs[i] * paddle.to_tensor(w)).sum() for i, w in zip(live, weights)).backward()
        try:
            _run_student("the backward pass", lambda: sum((my_outs[i] * paddle.to_tensor(w)).sum()
                                                           for i, w in zip(live, weights)).backward())
        except _Failed as f:
            fail(str(f))
        checked = [(f"input {k + 1}", r, m) for k, (r, m, g) in enumerate(zip(ref_in, my_in, grads)) if g]
        checked += [(f"parameter {mn}", rt, mt) for _, rt, mn, mt in pairs]
        for what, r, m in checked:
            if r.grad is None:
                continue
            if m.grad is None:
                fail(f"{BAD} gradient of {what}: none reaches it")
            problem = _close(_numpy(m.grad).reshape(_tuple(r.grad.shape)), _numpy(r.grad))
            if problem:
                fail(f"{BAD} gradient of {what}: yours {problem}")
        n_in = sum(grads)
        say(f"{OK} gradients of {n_in} input{'s' * (n_in != 1)}"
              + (f" and {len(pairs)} parameters" if pairs else ""))

    if state_pairs and ex.train:
        for rn, rt, mn, mt in state_pairs:
            problem = _close(_numpy(mt).reshape(_tuple(rt.shape)), _numpy(rt))
            if problem:
                fail(f"{BAD} moving statistics after one training step ({mn}): yours {problem}")
        say(f"{OK} moving statistics after one training step")
        ref.eval()
        mine.eval()
        with paddle.no_grad():
            r = _flatten(ref(*ref_in), ex.outputs)[0]
            try:
                m = _flatten(_run_student("the forward pass in eval mode", mine, *my_in), ex.outputs)[0]
            except _Failed as f:
                fail(str(f))
        problem = _close(_numpy(m), _numpy(r)) if _tuple(m.shape) == _tuple(r.shape) else "have another shape"
        if problem:
            fail(f"{BAD} output in eval mode (moving statistics): yours {problem}")
        say(f"{OK} output in eval mode (moving statistics)")


def check(name: str, candidate, seed: int = 0) -> bool:
    """Compare the student's ``candidate`` with the package's version of exercise ``name``; True when all agree.

    ``candidate`` takes the package's constructor (or call) arguments. Prints
    one line per property and argument set, and stops at the first argument
    set that fails. Never raises for a wrong candidate.
    """
    ex = _get(name)
    if candidate is None:
        return _not_attempted(name)
    if not callable(candidate):
        print(f"{BAD} exercise {name}: expected a class or function, got {type(candidate).__name__}")
        _RESULTS[name] = "failed"
        return False
    shown = getattr(candidate, "__name__", name)
    get_state = getattr(paddle, "get_rng_state", None)
    rng_state = get_state() if get_state else None
    try:
        for k, case in enumerate(ex.cases):
            raw = case.inputs(np.random.RandomState(seed + k)) if callable(case.inputs) else list(case.inputs)
            if ex.kind == "layer":
                label = f"{shown}({_arg_text(case.args, case.kwargs)}) on input {_input_text(raw)}"
            else:
                label = f"{shown}({_input_text(raw)})"
            _check_case(ex, candidate, case, raw, seed + k, f"case {k + 1} of {len(ex.cases)}: {label}")
    except _NotAttempted:
        return _not_attempted(name)
    except Exception as exc:  # noqa: BLE001 - whatever odd object the candidate handed back, one line, no traceback
        if not isinstance(exc, _Failed):
            print(f"  {BAD} checking stopped: {_error_line(exc)}{_where(exc)}")
        print(f"{BAD} exercise {name}: not passed yet (see the first {BAD} above)")
        _RESULTS[name] = "failed"
        return False
    finally:
        if rng_state is not None:
            paddle.set_rng_state(rng_state)
    print(f"{OK} exercise {name}: passed ({len(ex.cases)} argument sets)")
    _RESULTS[name] = "passed"
    return True


def _not_attempted(name: str) -> bool:
    print(f"exercise {name}: not attempted yet (fill in the cell above)")
    _RESULTS[name] = "not attempted"
    return False


if __name__ == "__main__":  # pragma: no cover - python -m paddle_cnn.exercises: the package checks itself
    sys.exit(0 if all(check(n, reference(n)) for n in EXERCISES) else 1)
