"""Scaffold of exercise vgg_block_bn (vgg section): what exercises.scaffold() hands out."""


def my_vgg_block_bn(num_convs, in_channels, out_channels):
    """A VGG block with batch normalization: num_convs times (3x3 conv with padding 1 -> BatchNorm2D -> ReLU),
    then a 2x2 max-pool with stride 2.

    Returns an nn.Sequential: [N, in_channels, H, W] -> [N, out_channels, H/2, W/2].
    """
    raise NotImplementedError
