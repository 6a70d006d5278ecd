"""Scaffold of exercise inception_3x3 (googlenet section): what exercises.scaffold() hands out."""
from paddle import nn


class MyInception3x3(nn.Layer):
    """Inception with the 5x5 path factorised into two 3x3 convolutions (same receptive field, fewer weights).

    Four parallel paths, concatenated on the channel axis in this order; ReLU after every convolution.
    path 1: 1x1 conv -> c1; path 2: 1x1 conv -> c2[0], 3x3 conv (padding 1) -> c2[1];
    path 3: 1x1 conv -> c3[0], 3x3 conv (padding 1) -> c3[1], 3x3 conv (padding 1) -> c3[1];
    path 4: 3x3 max-pool (stride 1, padding 1), 1x1 conv -> c4.
    Output: [N, c1 + c2[1] + c3[1] + c4, H, W]. Define the layers in the order above.
    """

    def __init__(self, in_channels, c1, c2, c3, c4):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
