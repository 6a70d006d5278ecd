"""Network in Network, the "NiN" section: 1x1 convolutions instead of a fully connected head.

Lin et al. (2013). Each NiN block is a convolution followed by 1x1
convolutions (:func:`paddle_cnn.blocks.nin_block`). The last block outputs
one channel per class and global average pooling turns each channel into a
logit, so there are no fully connected layers and any input of at least
``MIN_SIZE`` works.
"""
from __future__ import annotations

from paddle import nn

from ..blocks import Classifier, nin_block
from .registry import ADAMW_ONECYCLE, register

# (out_channels, kernel, stride, padding) of the NiN blocks, each followed by a 3x3/2 max-pool.
NIN_ARCH = ((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1))
# The classifier block: out_channels = num_classes, then global average pooling.
HEAD_BLOCK = (3, 1, 1)
DROPOUT = 0.5
# Working back from the last pool's 1 pixel: 3 <- 7 <- 15 <- conv1 (s - 11) // 4 + 1 >= 15.
MIN_SIZE = 67


class NiN(Classifier):
    """NiN with ``num_1x1`` 1x1 convolutions per block (2 in the paper and the course).

    >>> list(NiN()(paddle.zeros([2, 1, 224, 224])).shape)
    [2, 10]
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 224,
                 num_1x1: int = 2, name: str = "nin", block=None):
        # Fully convolutional: input_size is only checked, the layers do not depend on it.
        super().__init__(name, MIN_SIZE, input_size, num_classes, fixed_input=False)
        # block: a function with nin_block's first five arguments (the exercise's), replacing every NiN block
        make = (lambda *args: nin_block(*args, num_1x1)) if block is None else block
        layers, channels = [], in_channels
        for out_channels, kernel, stride, padding in NIN_ARCH:
            layers += [make(channels, out_channels, kernel, stride, padding),
                       nn.MaxPool2D(3, stride=2)]  # 224: 54 -> 26, 26 -> 12, 12 -> 5
            channels = out_channels
        if num_classes:  # the last NiN block has one output channel per class
            layers += [nn.Dropout(DROPOUT), make(channels, num_classes, *HEAD_BLOCK)]
            self.head = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Flatten())  # -> [N, num_classes]
        self.features = nn.Sequential(*layers)  # [N, 1, 224, 224] -> [N, num_classes, 5, 5]



_TITLE = ("Network in network (NiN)", "网络中的网络（NiN）")
# d2l: resize 224, lr 0.1, batch 128, 10 epochs.
_COURSE = dict(resize=224, epochs=10, batch_size=128, lr=0.1, optimizer="sgd", init="xavier")
# 67 px, the smallest side NiN takes: the last NiN block works on a 1x1 map (112 px would give 2x2 at 3x
# the cost). Four epochs of all 60k images, the same for nin and nin_one_1x1, so the pair differs only in
# the second 1x1 convolution. AdamW to get off NiN's long initial plateau.
_CPU = dict(resize=MIN_SIZE, epochs=4, batch_size=128, nproc=2, **ADAMW_ONECYCLE)


@register(section="nin", title=_TITLE, min_size=MIN_SIZE, profiles=dict(
    course=_COURSE,
    # nproc=2: two one-thread processes 1,017 vs 931 ex/s in one process (`python -m benchmarks.parallel`).
    cpu=_CPU,
))
def nin(num_classes: int = 10, in_channels: int = 1, input_size: int = 224) -> NiN:
    """NiN as in the course: two 1x1 convolutions per block.

    >>> list(nin()(paddle.zeros([1, 1, 224, 224])).shape)
    [1, 10]
    """
    return NiN(num_classes, in_channels, input_size, num_1x1=2, name="nin")


@register(section="nin", title=_TITLE, min_size=MIN_SIZE, profiles=dict(
    course=_COURSE,
    # Two processes 1,168 ex/s vs 1,133 in one (noise: rounds overlap) (`python -m benchmarks.parallel`).
    cpu=_CPU,
))
def nin_one_1x1(num_classes: int = 10, in_channels: int = 1, input_size: int = 224) -> NiN:
    """The course exercise: NiN with one 1x1 convolution per block instead of two.

    >>> list(nin_one_1x1()(paddle.zeros([1, 1, 224, 224])).shape)
    [1, 10]
    """
    return NiN(num_classes, in_channels, input_size, num_1x1=1, name="nin_one_1x1")
