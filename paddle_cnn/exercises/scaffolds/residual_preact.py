"""Scaffold of exercise residual_preact (resnet section): what exercises.scaffold() hands out."""
from paddle import nn


class MyPreActResidual(nn.Layer):
    """The pre-activation residual block (He et al., 2016, "Identity Mappings in Deep Residual Networks").

    bn1 (in_channels) -> ReLU -> conv1 3x3 (stride, padding 1) -> bn2 -> ReLU -> conv2 3x3 (padding 1),
    plus the shortcut; no ReLU after the addition. The shortcut is the input itself, or with
    use_1x1conv=True a 1x1 convolution conv3 with the same stride applied to the input.
    Define the layers in this order: bn1, conv1, bn2, conv2, conv3.
    """

    def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
