"""Scaffold of exercise lenet_relu (lenet section): what exercises.scaffold() hands out."""
from paddle import nn


class MyLeNetReLU(nn.Layer):
    """LeNet-5 with ReLU and max-pooling instead of sigmoid and average pooling.

    conv 6 5x5 (padding 2) -> ReLU -> 2x2 max-pool (stride 2) -> conv 16 5x5 (no padding) -> ReLU
    -> 2x2 max-pool (stride 2) -> flatten -> Linear to 120 -> ReLU -> Linear to 84 -> ReLU
    -> Linear to num_classes. For input_size 28 the flatten gives 16 * 5 * 5 = 400 values.
    Define the layers in the order they run; use only paddle.nn layers, not the package's LeNet.
    """

    def __init__(self, num_classes=10, in_channels=1, input_size=28):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
