"""Scaffold of exercise unet_up_crop (unet section): what exercises.scaffold() hands out."""
from paddle import nn


class MyUpCrop(nn.Layer):
    """One decoder step of the original U-Net: unpadded convolutions, so the skip is cropped to fit.

    forward(x, skip) with x [N, in_channels, h, w] and skip [N, skip_channels, H, W], H >= 2h, W >= 2w.
    A 2x2 transposed convolution with stride 2 to in_channels // 2 channels gives [.., 2h, 2w]; crop the
    skip to its centre 2h x 2w (first row (H - 2h) // 2, first column (W - 2w) // 2); concatenate
    [cropped skip, up-sampled x] on the channel axis (skip first); then twice a 3x3 convolution
    without padding, each followed by ReLU, to out_channels: [N, out_channels, 2h - 4, 2w - 4].
    """

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        raise NotImplementedError

    def forward(self, x, skip):
        raise NotImplementedError
