"""Scaffold of exercise dense_block (densenet section): what exercises.scaffold() hands out."""
from paddle import nn


class MyDenseBlock(nn.Layer):
    """num_convs conv blocks (BatchNorm2D -> ReLU -> 3x3 conv with padding 1 -> growth_rate channels).

    Each block sees all earlier outputs: x = concat([x, block(x)]) on the channel axis, x first,
    so the output has in_channels + num_convs * growth_rate channels.
    """

    def __init__(self, num_convs, in_channels, growth_rate):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
