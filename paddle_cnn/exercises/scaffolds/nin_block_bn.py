"""Scaffold of exercise nin_block_bn (nin section): what exercises.scaffold() hands out."""


def my_nin_block_bn(in_channels, out_channels, kernel, stride, padding):
    """A NiN block with batch normalization: each convolution is followed by BatchNorm2D, then ReLU.

    conv kernel x kernel (stride, padding) -> BN -> ReLU, then twice: 1x1 conv (out_channels) -> BN -> ReLU.
    Returns an nn.Sequential.
    """
    raise NotImplementedError
