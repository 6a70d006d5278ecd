"""LeNet, the warm-up section: two conv + pool stages and three fully connected layers.

The textbook version uses sigmoid and average pooling as LeCun et al. (1998)
did; ``lenet_relu`` swaps in ReLU and max-pooling, which train much faster.
"""
from __future__ import annotations

from paddle import nn

from ..blocks import Classifier, out_size
from .registry import register

# (out_channels, kernel, padding) of the two conv stages, each followed by a 2x2/2 pool.
CONV_ARCH = ((6, 5, 2), (16, 5, 0))
FC_ARCH = (120, 84)
MIN_SIZE = 12  # 12 -> 12 -> 6 -> 2 -> 1


class LeNet(Classifier):
    """LeNet-5 for ``input_size`` x ``input_size`` images (28 for Fashion-MNIST).

    >>> list(LeNet()(paddle.zeros([2, 1, 28, 28])).shape)
    [2, 10]
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 activation: str = "sigmoid", pool: str = "avg", name: str = "lenet"):
        super().__init__(name, MIN_SIZE, input_size, num_classes)
        act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]
        pool_layer = {"avg": nn.AvgPool2D, "max": nn.MaxPool2D}[pool]
        layers, channels, side = [], in_channels, input_size
        for out_channels, kernel, padding in CONV_ARCH:
            layers += [nn.Conv2D(channels, out_channels, kernel, padding=padding), act(), pool_layer(2, 2)]
            channels, side = out_channels, out_size(out_size(side, kernel, 1, padding), 2, 2)
        self.features = nn.Sequential(*layers)  # [N, 1, 28, 28] -> [N, 16, 5, 5]
        if not num_classes:
            return
        layers, width = [nn.Flatten()], channels * side * side  # 16 * 5 * 5 = 400 at 28x28
        for hidden in FC_ARCH:
            layers += [nn.Linear(width, hidden), act()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)  # -> [N, num_classes]


_LENET_PROFILES = dict(
    # d2l trains LeNet with lr 0.9 (sigmoid needs a large step), batch 256, 10 epochs.
    # amp off: at 28 px a step is a few tiny kernels, launch-bound on a GPU; autocast would only add casts.
    course=dict(resize=28, epochs=10, batch_size=256, lr=0.9, optimizer="sgd", amp="off"),
    # Two one-thread processes: 20,517 ex/s vs 18,742 in one process on both cores and 15,928 on one
    # (`python -m benchmarks.parallel`, with the oneDNN accelerator).
    # The textbook setting with twice the epochs (sigmoid LeNet needs them to leave its early plateau)
    # and a cosine decay: the schedule of the batch-norm section's cpu profiles, so that LeNet and
    # BN-LeNet differ only in the normalisation layers and d2l's learning rates (0.9 vs 1.0).
    cpu=dict(resize=28, epochs=20, batch_size=256, lr=0.9, optimizer="sgd", schedule="cosine", nproc=2),
)


@register(section="lenet", title=("LeNet (warm-up)", "卷积神经网络（LeNet）"), min_size=MIN_SIZE,
          profiles=_LENET_PROFILES)
def lenet(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> LeNet:
    """The textbook LeNet (sigmoid, average pooling).

    >>> list(lenet()(paddle.zeros([1, 1, 28, 28])).shape)
    [1, 10]
    """
    return LeNet(num_classes, in_channels, input_size, "sigmoid", "avg", name="lenet")


@register(section="lenet", title=("LeNet (warm-up)", "卷积神经网络（LeNet）"), min_size=MIN_SIZE,
          profiles=dict(
              course=dict(resize=28, epochs=10, batch_size=256, lr=0.1, optimizer="sgd", momentum=0.9, amp="off"),
              # ReLU + max-pool converges in a few epochs; 15 epochs of 60k images at ~4,300
              # examples/sec (measured 2026-11-25, 2-core EPYC) take about 4 minutes.
              # Batch 64 (not 256) gives 4x the updates per epoch at the same speed.
              cpu=dict(resize=28, epochs=15, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9,
                       schedule="cosine", cpu_threads=1),
              # One thread: 16,914 ex/s vs 15,635 on two and 11,007 in two processes (`python -m benchmarks.parallel`).
          ))
def lenet_relu(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> LeNet:
    """LeNet with ReLU and max-pooling, the exercise variant.

    >>> list(lenet_relu()(paddle.zeros([1, 1, 28, 28])).shape)
    [1, 10]
    """
    return LeNet(num_classes, in_channels, input_size, "relu", "max", name="lenet_relu")
