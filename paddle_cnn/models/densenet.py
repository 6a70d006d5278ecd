"""DenseNet, the "densely connected networks" section: dense blocks joined by transition layers.

Huang et al. (2017). Where a residual block adds its input to its output, a
:class:`paddle_cnn.blocks.DenseBlock` concatenates them, so every conv sees
all earlier feature maps; :func:`paddle_cnn.blocks.transition` then halves
the channels and the side to keep the growth in check.
"""
from __future__ import annotations

from paddle import nn

from ..blocks import Classifier, DenseBlock, resnet_stem, transition
from .registry import SGD_ONECYCLE, register

STEM_CHANNELS = 64
GROWTH_RATE = 32
# Conv blocks per dense block. Channels: 64 -> 192 -> 96 -> 224 -> 112 -> 240 -> 120 -> 248.
NUM_CONVS_IN_DENSE_BLOCKS = (4, 4, 4, 4)
# The stem gives ceil(H/4) and each of the three transitions' 2x2/2 average pools floors a halving:
# ceil(H/4) >= 8 so that 8 -> 4 -> 2 -> 1, hence H >= 29.
MIN_SIZE = 29


class DenseNet(Classifier):
    """DenseNet from ``num_convs`` per dense block; global average pooling before the classifier.

    >>> list(DenseNet()(paddle.zeros([2, 1, 96, 96])).shape)
    [2, 10]
    """

    def __init__(self, num_convs=NUM_CONVS_IN_DENSE_BLOCKS, growth_rate: int = GROWTH_RATE,
                 num_classes: int = 10, in_channels: int = 1, input_size: int = 96, name: str = "densenet",
                 block=None, conv=None):
        super().__init__(name, MIN_SIZE, input_size, num_classes, fixed_input=False)
        self.stem = resnet_stem(in_channels, STEM_CHANNELS)  # [N, 1, 96, 96] -> [N, 64, 24, 24]
        blocks, channels = [], STEM_CHANNELS
        for i, n in enumerate(num_convs):
            # block: a class with DenseBlock's arguments; conv: a function with conv_block's, used inside
            # the package's DenseBlock (the section's exercises train either)
            blocks.append(block(n, channels, growth_rate) if block else DenseBlock(n, channels, growth_rate, conv))
            channels += n * growth_rate
            if i < len(num_convs) - 1:
                blocks.append(transition(channels, channels // 2))  # halves channels and side
                channels //= 2
        self.blocks = nn.Sequential(*blocks)  # 96: -> [N, 248, 3, 3]
        # Pre-activation blocks leave the last output un-normalised: one more BN + ReLU ends the features.
        self.norm = nn.Sequential(nn.BatchNorm2D(channels), nn.ReLU())
        if num_classes:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Flatten(),  # -> [N, 248]
                                      nn.Linear(channels, num_classes))  # -> [N, num_classes]
        self.num_features = channels

    def forward_features(self, x):
        return self.norm(self.blocks(self.stem(x)))



@register(section="densenet", title=("Densely connected networks (DenseNet)", "稠密连接网络（DenseNet）"),
          min_size=MIN_SIZE, profiles=dict(
              # d2l: resize 96, lr 0.1, batch 256, 10 epochs.
              course=dict(resize=96, epochs=10, batch_size=256, lr=0.1, optimizer="sgd", init="xavier"),
              # 32 px, just above the minimum 29: the last dense block works on a 1x1 map (64 px would
              # give 2x2 at 4x the cost). Five epochs of all 60k images; batch norm lets momentum SGD
              # with a one-cycle schedule run fast.
              cpu=dict(resize=32, epochs=5, batch_size=128, nproc=2, **SGD_ONECYCLE),
              # nproc=2: two one-thread processes 2,204 vs 1,709 ex/s in one process (`python -m benchmarks.parallel`).
          ))
def densenet(num_classes: int = 10, in_channels: int = 1, input_size: int = 96,
             num_convs=NUM_CONVS_IN_DENSE_BLOCKS, growth_rate: int = GROWTH_RATE) -> DenseNet:
    """DenseNet as in the course (d2l's version: 4 dense blocks of 4 convs, growth rate 32).

    ``num_convs`` and ``growth_rate`` train other versions through the same profile,
    e.g. ``model_args={"num_convs": (6, 12, 24, 16)}`` (DenseNet-121's block sizes).

    >>> list(densenet()(paddle.zeros([1, 1, 96, 96])).shape)
    [1, 10]
    """
    return DenseNet(tuple(num_convs), growth_rate, num_classes, in_channels, input_size)
