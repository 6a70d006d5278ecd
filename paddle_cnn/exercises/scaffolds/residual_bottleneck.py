"""Scaffold of exercise residual_bottleneck (resnet section): what exercises.scaffold() hands out."""
from paddle import nn


class MyBottleneck(nn.Layer):
    """The bottleneck residual block of ResNet-50: 1x1 conv to mid_channels -> BN -> ReLU
    -> 3x3 conv (stride, padding 1) to mid_channels -> BN -> ReLU -> 1x1 conv to out_channels -> BN,
    plus the shortcut, -> ReLU.

    The shortcut is the input itself when in_channels == out_channels and stride == 1, otherwise a
    1x1 convolution to out_channels with the same stride followed by BN.
    Define the layers in the order they run, the shortcut's last.
    """

    def __init__(self, in_channels, mid_channels, out_channels, stride=1):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
