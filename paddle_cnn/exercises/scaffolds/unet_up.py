"""Scaffold of exercise unet_up (unet section): what exercises.scaffold() hands out."""
from paddle import nn


class MyUp(nn.Layer):
    """One U-Net decoder step: forward(x, skip) with x [N, in_channels, h, w], skip [N, skip_channels, 2h, 2w].

    A 2x2 transposed convolution with stride 2 halves the channels (in_channels // 2) and doubles
    the side; concatenate [skip, up-sampled x] on the channel axis (skip first); then twice:
    3x3 conv (padding 1, bias_attr=False) -> BatchNorm2D -> ReLU, to out_channels.
    """

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        raise NotImplementedError

    def forward(self, x, skip):
        raise NotImplementedError
