"""The d2l reference networks of the throughput benchmark: layer tables, and one builder for Paddle and PyTorch.

The ``d2l_paddle`` and ``torch`` contenders must not import ``paddle_cnn``
(its import tunes the CPU), so they build the model from these tables instead.
The layer configurations are those of paddle_cnn's registry at the same input
size; the benchmark checks the trainable parameter counts before it times
anything, and tests/test_benchmark.py checks every parameter shape.

Nothing here imports a framework at import time: :func:`build` imports the one
it is asked for.
"""
from __future__ import annotations

import math
from typing import List

FRAMEWORKS = ("paddle", "torch")


def _out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def architecture(model: str, resize: int) -> List[tuple]:
    """The layers of ``model`` for ``resize`` x ``resize`` one-channel inputs, as tuples.

    ``("conv", in, out, kernel, stride, padding)``, ``("relu",)``, ``("sigmoid",)``,
    ``("maxpool"|"avgpool", kernel, stride, padding)``, ``("bn", channels)``,
    ``("flatten",)``, ``("linear", in, out)``, ``("dropout", p)``,
    ``("residual", in, out, use_1x1conv, stride)``, ``("gap",)`` (global average pool).

    >>> architecture("lenet", 28)[:3]
    [('conv', 1, 6, 5, 1, 2), ('sigmoid',), ('avgpool', 2, 2, 0)]
    """
    if model in ("lenet", "lenet_relu"):  # d2l 6.6 (LeNet: sigmoid + avg-pool; the ReLU/max-pool variant)
        act, pool = ("sigmoid", "avgpool") if model == "lenet" else ("relu", "maxpool")
        layers, side, channels = [], resize, 1
        for out, kernel, padding in ((6, 5, 2), (16, 5, 0)):
            layers += [("conv", channels, out, kernel, 1, padding), (act,), (pool, 2, 2, 0)]
            channels, side = out, _out(_out(side, kernel, 1, padding), 2, 2)
        layers.append(("flatten",))
        width = channels * side * side
        for hidden in (120, 84):
            layers += [("linear", width, hidden), (act,)]
            width = hidden
        return layers + [("linear", width, 10)]
    if model == "alexnet":  # d2l 7.1, for one input channel; the flatten width follows the input size
        layers, side, channels = [], resize, 1
        for out, kernel, stride, padding, pool in ((96, 11, 4, 1, True), (256, 5, 1, 2, True), (384, 3, 1, 1, False),
                                                   (384, 3, 1, 1, False), (256, 3, 1, 1, True)):
            layers += [("conv", channels, out, kernel, stride, padding), ("relu",)]
            channels, side = out, _out(side, kernel, stride, padding)
            if pool:
                layers.append(("maxpool", 3, 2, 0))
                side = _out(side, 3, 2)
        layers.append(("flatten",))
        width = channels * side * side  # 6400 at 224 (d2l's constant), 256 at 96
        for hidden in (4096, 4096):
            layers += [("linear", width, hidden), ("relu",), ("dropout", 0.5)]
            width = hidden
        return layers + [("linear", width, 10)]
    if model == "resnet18":  # d2l 7.6: 7x7 stem, four stages of two residuals, global average pool
        layers = [("conv", 1, 64, 7, 2, 3), ("bn", 64), ("relu",), ("maxpool", 3, 2, 1)]
        channels = 64
        for i, out in enumerate((64, 128, 256, 512)):
            first = i == 0
            layers.append(("residual", channels, out, not first, 1 if first else 2))
            layers.append(("residual", out, out, False, 1))
            channels = out
        return layers + [("gap",), ("flatten",), ("linear", channels, 10)]
    raise SystemExit(f"no d2l/torch re-implementation of {model!r} in benchmarks/reference_layers.py; "
                     "choose one of lenet, lenet_relu, alexnet, resnet18 (or run only --contenders paddle_cnn)")


def build(arch: List[tuple], framework: str):
    """An ``nn.Sequential`` of ``framework``'s layers (``paddle`` or ``torch``) from :func:`architecture`.

    d2l's Paddle and PyTorch editions are the same code with different class
    names: Paddle spells its 2-D layers ``Conv2D``/``BatchNorm2D``/...,
    PyTorch ``Conv2d``/``BatchNorm2d``/...; the suffix is the only difference.
    """
    if framework == "paddle":
        import paddle.nn.functional as F
        from paddle import nn

        base, suffix = nn.Layer, "2D"
    elif framework == "torch":
        import torch.nn.functional as F
        from torch import nn

        base, suffix = nn.Module, "2d"
    else:
        raise ValueError(f"unknown framework {framework!r}; choose one of {', '.join(FRAMEWORKS)}")
    conv2d, batchnorm2d = getattr(nn, "Conv" + suffix), getattr(nn, "BatchNorm" + suffix)
    maxpool2d, avgpool2d = getattr(nn, "MaxPool" + suffix), getattr(nn, "AvgPool" + suffix)
    adaptive_avgpool2d = getattr(nn, "AdaptiveAvgPool" + suffix)

    class Residual(base):  # d2l 7.6 (the same code in its Paddle and PyTorch editions)
        def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
            self.conv2 = conv2d(num_channels, num_channels, kernel_size=3, padding=1)
            self.conv3 = conv2d(input_channels, num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
            self.bn1 = batchnorm2d(num_channels)
            self.bn2 = batchnorm2d(num_channels)

        def forward(self, X):
            Y = F.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3 is not None:
                X = self.conv3(X)
            return F.relu(Y + X)

    make = {
        "conv": lambda i, o, k, s, p: conv2d(i, o, kernel_size=k, stride=s, padding=p),
        "relu": nn.ReLU, "sigmoid": nn.Sigmoid,
        "maxpool": lambda k, s, p: maxpool2d(kernel_size=k, stride=s, padding=p),
        "avgpool": lambda k, s, p: avgpool2d(kernel_size=k, stride=s, padding=p),
        "bn": batchnorm2d, "flatten": nn.Flatten, "linear": nn.Linear,
        "dropout": lambda p: nn.Dropout(p=p), "residual": Residual, "gap": lambda: adaptive_avgpool2d((1, 1)),
    }
    return nn.Sequential(*[make[kind](*args) for kind, *args in arch])


def trainable_parameters(net, framework: str) -> int:
    """Trainable parameter count of a network built by :func:`build` (or any Paddle/PyTorch network)."""
    if framework == "torch":
        return sum(p.numel() for p in net.parameters() if p.requires_grad)
    return sum(math.prod(p.shape) for p in net.parameters() if not p.stop_gradient)
