"""Scaffold of exercise vgg_block (vgg section): what exercises.scaffold() hands out."""


def my_vgg_block(num_convs, in_channels, out_channels):
    """num_convs 3x3 convolutions (padding 1), each followed by ReLU, then a 2x2 max-pool with stride 2.

    Returns an nn.Sequential: [N, in_channels, H, W] -> [N, out_channels, H/2, W/2].
    """
    raise NotImplementedError
