"""Batch normalization, the "batch normalization" section: from scratch, then LeNet with it.

Ioffe and Szegedy (2015). :func:`batch_norm` and :class:`BatchNorm` follow
Paddle's own conventions exactly, so ``tests/test_batchnorm.py`` can compare
them with ``nn.BatchNorm1D`` / ``nn.BatchNorm2D`` in values and gradients:

* ``momentum`` weighs the old statistic: ``moving = momentum * moving + (1 - momentum) * batch``
  (Paddle's default 0.9; PyTorch's ``momentum=0.1`` means the same thing the other way round);
* the moving variance is updated with the *biased* batch variance (divide by
  m, not m - 1), the same one used to normalize the batch. PyTorch uses the
  unbiased one for its running variance, Paddle does not.
"""
from __future__ import annotations

import paddle
from paddle import nn

from ..blocks import Classifier, out_size
from .registry import register

EPS = 1e-5       # Paddle's default epsilon
MOMENTUM = 0.9   # Paddle's default momentum (weight of the old moving statistic)

# d2l's BN-LeNet: (out_channels, kernel) of each conv, then BN, sigmoid and a 2x2/2 average pool.
# No padding in the first conv (unlike the LeNet section): 28 -> 24 -> 12 -> 8 -> 4.
CONV_ARCH = ((6, 5), (16, 5))
FC_ARCH = (120, 84)  # each Linear is followed by BN and sigmoid
MIN_SIZE = 16  # 16 -> 12 -> 6 -> 2 -> 1


def batch_norm(X, gamma, beta, moving_mean, moving_var, eps: float, momentum: float, training: bool):
    """Normalize ``X`` with batch statistics (training) or the moving ones (prediction).

    ``X`` is ``[N, C]`` (after a fully connected layer: statistics per feature)
    or ``[N, C, H, W]`` (after a convolution: per channel, over N, H and W).
    ``gamma``, ``beta`` and the moving statistics are shaped ``[1, C]`` or
    ``[1, C, 1, 1]`` so they broadcast. Returns ``(Y, new_moving_mean, new_moving_var)``.
    """
    if len(X.shape) not in (2, 4):
        raise ValueError(f"batch_norm expects [N, C] or [N, C, H, W] input, got shape {list(X.shape)}")
    if not training:
        # Prediction: a fixed affine map, so one example's output does not depend on its batch.
        X_hat = (X - moving_mean) / paddle.sqrt(moving_var + eps)
    else:
        axes = [0] if len(X.shape) == 2 else [0, 2, 3]
        mean = X.mean(axis=axes, keepdim=True)                  # [1, C] or [1, C, 1, 1]
        var = ((X - mean) ** 2).mean(axis=axes, keepdim=True)   # biased, as Paddle
        X_hat = (X - mean) / paddle.sqrt(var + eps)
        # The moving statistics are bookkeeping, not part of the graph: no gradient flows into them.
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean.detach()
        moving_var = momentum * moving_var + (1.0 - momentum) * var.detach()
    Y = gamma * X_hat + beta  # learnable scale and shift restore what normalizing took away
    return Y, moving_mean, moving_var


class BatchNorm(nn.Layer):
    """Batch normalization from scratch; ``num_dims`` 2 for ``[N, C]`` input, 4 for ``[N, C, H, W]``.

    ``gamma`` and ``beta`` are trainable parameters; the moving mean and
    variance are buffers (saved in ``state_dict``, never trained), updated in
    training mode and used in eval mode.

    >>> list(BatchNorm(6, num_dims=4)(paddle.randn([2, 6, 8, 8])).shape)
    [2, 6, 8, 8]
    """

    def __init__(self, num_features: int, num_dims: int = 4, eps: float = EPS, momentum: float = MOMENTUM):
        super().__init__()
        if num_dims not in (2, 4):
            raise ValueError(f"num_dims must be 2 (fully connected) or 4 (convolutional), got {num_dims}")
        shape = [1, num_features] if num_dims == 2 else [1, num_features, 1, 1]
        self.num_dims, self.eps, self.momentum = num_dims, eps, momentum
        self.gamma = self.create_parameter(shape, default_initializer=nn.initializer.Constant(1.0))
        self.beta = self.create_parameter(shape, is_bias=True, default_initializer=nn.initializer.Constant(0.0))
        self.register_buffer("moving_mean", paddle.zeros(shape))
        self.register_buffer("moving_var", paddle.ones(shape))

    def forward(self, x):
        if len(x.shape) != self.num_dims:
            raise ValueError(f"BatchNorm(num_dims={self.num_dims}) got input of shape {list(x.shape)}")
        y, moving_mean, moving_var = batch_norm(x, self.gamma, self.beta, self.moving_mean, self.moving_var,
                                                self.eps, self.momentum, self.training)
        if self.training:
            # Write in place so the buffers stay the same tensors that state_dict() hands out.
            paddle.assign(moving_mean, self.moving_mean)
            paddle.assign(moving_var, self.moving_var)
        return y


def _norm(kind: str, num_features: int, num_dims: int) -> nn.Layer:
    if kind == "scratch":
        return BatchNorm(num_features, num_dims)
    return nn.BatchNorm2D(num_features) if num_dims == 4 else nn.BatchNorm1D(num_features)


class BNLeNet(Classifier):
    """d2l's LeNet with batch normalization between every conv/linear layer and its sigmoid.

    ``norm="scratch"`` uses :class:`BatchNorm` above, ``norm="paddle"`` Paddle's layers.

    >>> list(BNLeNet()(paddle.zeros([2, 1, 28, 28])).shape)
    [2, 10]
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 norm: str = "scratch", name: str = "lenet_bn_scratch"):
        super().__init__(name, MIN_SIZE, input_size, num_classes)
        if norm not in ("scratch", "paddle"):
            raise ValueError(f"norm must be 'scratch' or 'paddle', got {norm!r}")
        layers, channels, side = [], in_channels, input_size
        for out_channels, kernel in CONV_ARCH:
            layers += [nn.Conv2D(channels, out_channels, kernel), _norm(norm, out_channels, 4), nn.Sigmoid(),
                       nn.AvgPool2D(2, 2)]
            channels, side = out_channels, out_size(out_size(side, kernel), 2, 2)  # 28 -> 12 -> 4
        self.features = nn.Sequential(*layers)  # [N, 1, 28, 28] -> [N, 16, 4, 4]
        if not num_classes:
            return
        layers, width = [nn.Flatten()], channels * side * side  # 256 at 28x28
        for hidden in FC_ARCH:
            layers += [nn.Linear(width, hidden), _norm(norm, hidden, 2), nn.Sigmoid()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)  # -> [N, num_classes]



_TITLE = ("Batch normalization", "批量规范化")
# d2l trains both versions with lr 1.0, batch 256, 10 epochs: BN lets sigmoid take a step that large.
# amp off: 28 px steps are launch-bound on a GPU, and the scratch BatchNorm's statistics want fp32.
_COURSE = dict(resize=28, epochs=10, batch_size=256, lr=1.0, optimizer="sgd", init="xavier", amp="off")
# 20 epochs with a cosine decay from lr 1.0 for both implementations, so their curves compare epoch by epoch.
_CPU = dict(resize=28, epochs=20, batch_size=256, lr=1.0, optimizer="sgd", schedule="cosine", init="xavier", nproc=2)


@register(section="batchnorm", title=_TITLE, min_size=MIN_SIZE, profiles=dict(
    course=_COURSE,
    # 20 epochs with a cosine decay: the schedule of lenet_bn and of LeNet's cpu profile, so the three
    # curves compare epoch by epoch. The decay removes the epoch-to-epoch noise in test accuracy that
    # lr 1.0 leaves in d2l's run. Our BatchNorm is several small ops, slower than Paddle's fused kernel.
    # Two processes of one thread each: 3,891 vs 2,189 ex/s in one process (`python -m benchmarks.parallel`).
    cpu=_CPU,
))
def lenet_bn_scratch(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> BNLeNet:
    """BN-LeNet with the from-scratch :class:`BatchNorm` (the section's first half).

    >>> list(lenet_bn_scratch()(paddle.zeros([2, 1, 28, 28])).shape)
    [2, 10]
    """
    return BNLeNet(num_classes, in_channels, input_size, norm="scratch", name="lenet_bn_scratch")


@register(section="batchnorm", title=_TITLE, min_size=MIN_SIZE, profiles=dict(
    course=_COURSE,
    # lenet_bn_scratch's schedule (20 epochs, cosine decay from lr 1.0), Paddle's fused BatchNorm.
    # Two processes of one thread each: 23,553 vs 20,288 ex/s in one process (rounds overlap) (`python -m benchmarks.parallel`).
    cpu=_CPU,
))
def lenet_bn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> BNLeNet:
    """BN-LeNet with Paddle's ``nn.BatchNorm2D`` / ``nn.BatchNorm1D`` (the concise implementation).

    >>> list(lenet_bn()(paddle.zeros([2, 1, 28, 28])).shape)
    [2, 10]
    """
    return BNLeNet(num_classes, in_channels, input_size, norm="paddle", name="lenet_bn")
