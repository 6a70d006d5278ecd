"""Scaffold of exercise dense_bottleneck (densenet section): what exercises.scaffold() hands out."""


def my_dense_bottleneck(in_channels, growth_rate):
    """DenseNet-B's conv block: a 1x1 bottleneck before the 3x3 convolution.

    BatchNorm2D -> ReLU -> 1x1 conv to 4 * growth_rate channels -> BatchNorm2D -> ReLU
    -> 3x3 conv (padding 1) to growth_rate channels.
    Returns an nn.Sequential: [N, in_channels, H, W] -> [N, growth_rate, H, W].
    """
    raise NotImplementedError
