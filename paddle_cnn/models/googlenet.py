"""GoogLeNet, the "networks with parallel concatenations" section: stages of Inception blocks.

Szegedy et al. (2015), as d2l simplifies it (no auxiliary classifiers, no
local response normalization). Five stages b1..b5; every stage but the last
ends with a 3x3/2 max-pool, so the side shrinks by 32 overall (96 -> 3).
"""
from __future__ import annotations

from paddle import nn

from ..blocks import Classifier, Inception
from .registry import ADAMW_ONECYCLE, register

# b1, b2: plain convolutions (out_channels, kernel, stride, padding), ReLU after each.
STEM_ARCH = (
    ((64, 7, 2, 3),),                  # b1: 64 x H/2
    ((64, 1, 1, 0), (192, 3, 1, 1)),   # b2: 192 x H/8 after the pools
)
# b3, b4, b5: Inception(c1, (c2 reduce, c2), (c3 reduce, c3), c4); in_channels follow from the previous block.
INCEPTION_ARCH = (
    ((64, (96, 128), (16, 32), 32),      # b3: 192 -> 256
     (128, (128, 192), (32, 96), 64)),   #     256 -> 480
    ((192, (96, 208), (16, 48), 64),     # b4: 480 -> 512
     (160, (112, 224), (24, 64), 64),    #     512 -> 512
     (128, (128, 256), (24, 64), 64),    #     512 -> 512
     (112, (144, 288), (32, 64), 64),    #     512 -> 528
     (256, (160, 320), (32, 128), 128)),  #    528 -> 832
    ((256, (160, 320), (32, 128), 128),  # b5: 832 -> 832
     (384, (192, 384), (48, 128), 128)),  #    832 -> 1024
)
# Every conv and pool on the way pads enough that a 1x1 input stays 1x1: no lower bound.
MIN_SIZE = 1


def _pool():
    # Padding 1 makes the pool ceil(H/2) rather than floor((H-1)/2): 96 -> 48 -> 24 -> 12 -> 6 -> 3.
    return nn.MaxPool2D(3, stride=2, padding=1)


class GoogLeNet(Classifier):
    """GoogLeNet; fully convolutional until global average pooling, so any input side works.

    >>> list(GoogLeNet()(paddle.zeros([2, 1, 96, 96])).shape)
    [2, 10]
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 96,
                 name: str = "googlenet", block=None):
        super().__init__(name, MIN_SIZE, input_size, num_classes, fixed_input=False)
        stages, channels = [], in_channels
        for convs in STEM_ARCH:
            layers = []
            for out_channels, kernel, stride, padding in convs:
                layers += [nn.Conv2D(channels, out_channels, kernel, stride, padding), nn.ReLU()]
                channels = out_channels
            stages.append(nn.Sequential(*layers, _pool()))  # 96: b1 -> 64 x 24 x 24, b2 -> 192 x 12 x 12
        for i, blocks in enumerate(INCEPTION_ARCH):
            layers = []
            for c1, c2, c3, c4 in blocks:
                # block: a class with Inception's arguments (the section's exercise trains its own)
                layers.append((block or Inception)(channels, c1, c2, c3, c4))
                channels = c1 + c2[1] + c3[1] + c4
            last = i == len(INCEPTION_ARCH) - 1
            stages.append(nn.Sequential(*layers, *([] if last else [_pool()])))  # b3 480x6x6, b4 832x3x3, b5 1024x3x3
        self.features = nn.Sequential(*stages)  # [N, 1, 96, 96] -> [N, 1024, 3, 3]
        if num_classes:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Flatten(),  # -> [N, 1024]
                                      nn.Linear(channels, num_classes))  # -> [N, num_classes]



@register(section="googlenet", title=("Networks with parallel concatenations (GoogLeNet)", "含并行连结的网络（GoogLeNet）"),
          min_size=MIN_SIZE, profiles=dict(
              # d2l: resize 96, lr 0.1, batch 128, 10 epochs.
              course=dict(resize=96, epochs=10, batch_size=128, lr=0.1, optimizer="sgd", init="xavier"),
              # 32 px: b4's inception blocks see 2x2, b5's 1x1 (96 px, d2l's side, gives 3x3 at 9x the
              # cost). Four epochs of all 60k images; AdamW because 22 layers without BN start slowly
              # under SGD.
              cpu=dict(resize=32, epochs=4, batch_size=128, nproc=2, **ADAMW_ONECYCLE),
              # nproc=2: two one-thread processes 890 vs 739 ex/s in one process (`python -m benchmarks.parallel`).
          ))
def googlenet(num_classes: int = 10, in_channels: int = 1, input_size: int = 96) -> GoogLeNet:
    """GoogLeNet as in the course (d2l's version, trained at 96x96).

    >>> list(googlenet()(paddle.zeros([1, 1, 96, 96])).shape)
    [1, 10]
    """
    return GoogLeNet(num_classes, in_channels, input_size)
