"""VGG, the "networks using blocks" section: a stack of identical conv blocks, then AlexNet's head.

Simonyan and Zisserman (2014). Each block is a few 3x3 convolutions and a
2x2/2 max-pool (see :func:`paddle_cnn.blocks.vgg_block`), so the whole
network is described by one table of (number of convolutions, channels).
"""
from __future__ import annotations

from paddle import nn

from ..blocks import Classifier, mlp_head, vgg_block
from .registry import ADAMW_ONECYCLE, register

# (num_convs, out_channels) per block: VGG-11 has 8 convolutions and 3 fully connected layers.
VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
# d2l trains a version with a quarter of the channels on Fashion-MNIST: 1/16 of the conv work.
SMALL_RATIO = 4
FC_ARCH = (4096, 4096)
DROPOUT = 0.5
MIN_SIZE = 32  # five 2x2/2 pools: 32 -> 16 -> 8 -> 4 -> 2 -> 1


class VGG(Classifier):
    """VGG built from ``conv_arch`` for ``input_size`` x ``input_size`` images.

    >>> list(VGG(VGG11_ARCH)(paddle.zeros([2, 1, 224, 224])).shape)
    [2, 10]
    """

    def __init__(self, conv_arch=VGG11_ARCH, num_classes: int = 10, in_channels: int = 1,
                 input_size: int = 224, name: str = "vgg", block=None):
        super().__init__(name, MIN_SIZE, input_size, num_classes)
        blocks, channels, side = [], in_channels, input_size
        for num_convs, out_channels in conv_arch:
            # block: a function with vgg_block's arguments (the section's exercise trains its own)
            blocks.append((block or vgg_block)(num_convs, channels, out_channels))
            channels, side = out_channels, side // 2
        self.features = nn.Sequential(*blocks)  # [N, 1, 224, 224] -> [N, 512, 7, 7]
        if num_classes:
            self.head = mlp_head(channels * side * side, num_classes, FC_ARCH, DROPOUT)  # 25088 -> ... -> classes



_TITLE = ("Networks using blocks (VGG)", "使用块的网络（VGG）")
# d2l's setting for both widths: resize 224, lr 0.05, batch 128, 10 epochs, plain SGD.
_COURSE = dict(resize=224, epochs=10, batch_size=128, lr=0.05, optimizer="sgd", init="xavier")


@register(section="vgg", title=_TITLE, min_size=MIN_SIZE, profiles=dict(
    # The full-width network at d2l's setting; d2l itself only trains the small one.
    course=_COURSE,
    # 16x the small network's convolution work: 258 vs 774 ex/s at 32 px in one process of two threads
    # (`python -m benchmarks.parallel`), so it gets one pass over the 60k images where vgg11_small
    # gets seven; 32 px leaves the fifth pool a 1x1 map, as for vgg11_small.
    cpu=dict(resize=32, epochs=1, batch_size=128, **ADAMW_ONECYCLE),
))
def vgg11(num_classes: int = 10, in_channels: int = 1, input_size: int = 224) -> VGG:
    """VGG-11 with the original channel widths.

    >>> list(vgg11()(paddle.zeros([1, 1, 224, 224])).shape)
    [1, 10]
    """
    return VGG(VGG11_ARCH, num_classes, in_channels, input_size, name="vgg11")


@register(section="vgg", title=_TITLE, min_size=MIN_SIZE, profiles=dict(
    # d2l: small_conv_arch (channels / 4), resize 224, lr 0.05, batch 128, 10 epochs.
    course=_COURSE,
    # 32 px (five pools leave a 1x1 map; 64 px would give 2x2 at 4x the cost) and 7 epochs: 4 epochs
    # reached 0.916 before the accelerator, short of d2l's 0.920. AdamW because SGD stays at loss 2.30
    # for the first 80 steps (a 1-minute probe, 2026-11-25), as d2l's VGG does.
    cpu=dict(resize=32, epochs=7, batch_size=128, **ADAMW_ONECYCLE),
    # Both cores in one process (the default): 775 vs 519 ex/s on one thread and 479 in two processes
    # (`python -m benchmarks.parallel`; before the accelerator one thread was faster).
))
def vgg11_small(num_classes: int = 10, in_channels: int = 1, input_size: int = 224) -> VGG:
    """VGG-11 with a quarter of the channels, the version d2l trains on Fashion-MNIST.

    >>> list(vgg11_small()(paddle.zeros([1, 1, 224, 224])).shape)
    [1, 10]
    """
    small_arch = tuple((num_convs, channels // SMALL_RATIO) for num_convs, channels in VGG11_ARCH)
    return VGG(small_arch, num_classes, in_channels, input_size, name="vgg11_small")
