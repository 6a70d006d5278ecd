"""Scaffold of exercise transition (densenet section): what exercises.scaffold() hands out."""


def my_transition(in_channels, out_channels):
    """BatchNorm2D -> ReLU -> 1x1 conv to out_channels -> 2x2 average pool with stride 2.

    Returns an nn.Sequential: [N, in_channels, H, W] -> [N, out_channels, H/2, W/2].
    """
    raise NotImplementedError
