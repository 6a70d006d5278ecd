"""AlexNet, the "deep convolutional networks" section: five convolutions and a wide MLP head.

Krizhevsky et al. (2012) as d2l adapts it to one-channel Fashion-MNIST
upsampled to 224x224: ReLU instead of sigmoid, max-pooling, and dropout in
the two 4096-wide fully connected layers.
"""
from __future__ import annotations

from paddle import nn

from ..blocks import Classifier, mlp_head, out_size
from .registry import ADAMW_ONECYCLE, register

# (out_channels, kernel, stride, padding, then 3x3/2 max-pool?) of each convolution, ReLU after each.
CONV_ARCH = (
    (96, 11, 4, 1, True),   # a large stride-4 window: at 224 the first layer must shrink fast
    (256, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)
FC_ARCH = (4096, 4096)
DROPOUT = 0.5
# Working back from the last pool's 1 pixel: 3 <- 7 <- 15 <- conv1 (s + 2 - 11) // 4 + 1 >= 15.
MIN_SIZE = 65


class AlexNet(Classifier):
    """AlexNet for ``input_size`` x ``input_size`` images (224 in the course).

    >>> list(AlexNet()(paddle.zeros([2, 1, 224, 224])).shape)
    [2, 10]
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 224, name: str = "alexnet"):
        super().__init__(name, MIN_SIZE, input_size, num_classes)
        layers, channels, side = [], in_channels, input_size
        for out_channels, kernel, stride, padding, pool in CONV_ARCH:
            layers += [nn.Conv2D(channels, out_channels, kernel, stride, padding), nn.ReLU()]
            channels, side = out_channels, out_size(side, kernel, stride, padding)
            if pool:
                layers.append(nn.MaxPool2D(3, 2))
                side = out_size(side, 3, 2)
        self.features = nn.Sequential(*layers)  # [N, 1, 224, 224] -> [N, 256, 5, 5]
        if num_classes:
            self.head = mlp_head(channels * side * side, num_classes, FC_ARCH, DROPOUT)  # 6400 -> ... -> classes



@register(section="alexnet", title=("Deep convolutional networks (AlexNet)", "深度卷积神经网络（AlexNet）"),
          min_size=MIN_SIZE, profiles=dict(
              # d2l: resize 224, lr 0.01, batch 128, 10 epochs, plain SGD, Xavier init.
              course=dict(resize=224, epochs=10, batch_size=128, lr=0.01, optimizer="sgd", init="xavier"),
              # 112 px (half the course's side) leaves the last pool a 2x2 map; 65-96 px end at 1x1, so
              # the third pool and the first dense layer would see a single position (97 px is the smallest
              # side with 2x2).
              # Two epochs of all 60k images, scored on the full test set; the wall time is in
              # homework/alexnet. AdamW because plain SGD sits on the no-BN loss plateau for much of
              # such a short run. Both cores in one process (the default): 535 vs 310 ex/s on one thread
              # and 336 in two processes at 65 px (`python -m benchmarks.parallel`, oneDNN accelerator).
              cpu=dict(resize=112, epochs=2, batch_size=128, **ADAMW_ONECYCLE),
          ))
def alexnet(num_classes: int = 10, in_channels: int = 1, input_size: int = 224) -> AlexNet:
    """AlexNet as in the course (d2l's single-channel version).

    >>> list(alexnet()(paddle.zeros([1, 1, 224, 224])).shape)
    [1, 10]
    """
    return AlexNet(num_classes, in_channels, input_size)
