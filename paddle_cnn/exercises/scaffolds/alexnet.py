"""Scaffold of exercise alexnet (alexnet section): what exercises.scaffold() hands out."""
from paddle import nn


class MyAlexNet(nn.Layer):
    """AlexNet for in_channels x input_size x input_size images (d2l's version).

    Convolutions, each followed by ReLU: 96 11x11 (stride 4, padding 1), then a 3x3 max-pool with
    stride 2; 256 5x5 (padding 2), max-pool; 384, 384 and 256 3x3 (padding 1), max-pool.
    Then flatten, Linear -> 4096, ReLU, Dropout(0.5), Linear -> 4096, ReLU, Dropout(0.5),
    Linear -> num_classes. The first Linear's input size follows from input_size.
    Define the layers in the order they run.
    """

    def __init__(self, num_classes=10, in_channels=1, input_size=224):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError
