"""Scaffold of exercise residual (resnet section): what exercises.scaffold() hands out."""
from paddle import nn


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
