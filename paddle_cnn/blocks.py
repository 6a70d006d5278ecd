"""Reusable pieces shared by several model files.

Each block names the course section that introduces it.
"""
from __future__ import annotations

import paddle
from paddle import nn


def out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a conv or pool layer: floor((size + 2p - k) / s) + 1 (LeNet section)."""
    return (size + 2 * padding - kernel) // stride + 1


def check_input(x, model: str, min_size: int, expected: int | None = None) -> None:
    """Raise one clear error when an image batch cannot go through ``model``.

    ``expected`` is the side a model with a fully connected head was built for
    (its flatten size depends on it); fully convolutional models pass None.
    """
    if len(x.shape) != 4:
        raise ValueError(f"{model} expects a batch of images [N, C, H, W], got shape {list(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {h}x{w}; "
            f"resize to {min_size} or more (e.g. --resize {min_size})"
        )
    if expected is not None and (h, w) != (expected, expected):
        raise ValueError(
            f"{model} was built for {expected}x{expected} inputs (its flatten size depends on it) "
            f"but got {h}x{w}; build it with input_size={h} or resize the images to {expected}"
        )


class Classifier(nn.Layer):
    """Base of the course's classifiers: ``features`` then ``head``, split as in timm.

    A subclass builds ``self.features`` and ``self.head`` (or overrides
    ``forward_features``). ``input_size`` is the side a fully connected head was
    built for (``fixed_input=True``); models with global pooling take any side
    from ``min_size`` up. The constructor rejects an ``input_size`` below
    ``min_size``, and ``forward`` checks every batch, so a wrong size fails with
    one clear message. ``num_classes=0`` makes a backbone: the subclass builds
    no head and ``forward`` returns the feature map ``[N, C, H', W']``, as
    ``paddle.vision`` models do.
    """

    def __init__(self, name: str, min_size: int, input_size: int | None = None, num_classes: int = 10,
                 fixed_input: bool = True):
        super().__init__()
        if input_size is not None and input_size < min_size:
            raise ValueError(f"{name} needs inputs of at least {min_size}x{min_size} pixels, got {input_size} "
                             f"(use --resize {min_size} or more)")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = backbone without a head), got {num_classes}")
        self.name, self.min_size, self.num_classes = name, min_size, num_classes
        self.input_size = input_size if fixed_input else None
        self.head = None

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.head(x)

    def forward(self, x):
        check_input(x, self.name, self.min_size, self.input_size)
        x = self.forward_features(x)
        return x if self.head is None else self.forward_head(x)  # [N, num_classes] (or features)


def mlp_head(in_features: int, num_classes: int, hidden=(4096, 4096), dropout: float = 0.5) -> nn.Sequential:
    """Flatten, then hidden fully connected layers with ReLU and dropout, then the output layer.

    AlexNet section (VGG reuses it): the two 4096-wide layers hold most of
    the parameters, and dropout is what keeps them from over-fitting.
    """
    layers, width = [nn.Flatten()], in_features  # [N, C, H, W] -> [N, C*H*W]
    for out_features in hidden:
        layers += [nn.Linear(width, out_features), nn.ReLU(), nn.Dropout(dropout)]
        width = out_features
    layers.append(nn.Linear(width, num_classes))  # [N, num_classes]
    return nn.Sequential(*layers)


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """``num_convs`` 3x3 convolutions (padding 1, ReLU) and a 2x2/2 max-pool (VGG section).

    The convolutions keep the side, so only the pool halves it: H x W -> H/2 x W/2.
    """
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2D(in_channels, out_channels, 3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2D(2, 2))  # [N, out, H, W] -> [N, out, H/2, W/2]
    return nn.Sequential(*layers)


def nin_block(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
              num_1x1: int = 2) -> nn.Sequential:
    """One convolution followed by ``num_1x1`` 1x1 convolutions, each with ReLU (NiN section).

    The 1x1 convolutions act as a small fully connected network applied at
    every pixel, which is where "network in network" gets its name.
    """
    layers = [nn.Conv2D(in_channels, out_channels, kernel, stride, padding), nn.ReLU()]
    for _ in range(num_1x1):
        layers += [nn.Conv2D(out_channels, out_channels, 1), nn.ReLU()]
    return nn.Sequential(*layers)


class Inception(nn.Layer):
    """Four parallel paths concatenated on channels (GoogLeNet section).

    ``c1``: 1x1 conv; ``c2 = (reduce, out)``: 1x1 then 3x3; ``c3 = (reduce, out)``:
    1x1 then 5x5; ``c4``: 3x3/1 max-pool then 1x1. Every path keeps H x W, so
    the output is ``[N, c1 + c2[1] + c3[1] + c4, H, W]``. The 1x1 reductions
    before the 3x3 and 5x5 convolutions are what keep the block cheap.
    """

    def __init__(self, in_channels: int, c1: int, c2, c3, c4: int):
        super().__init__()
        self.p1 = nn.Sequential(nn.Conv2D(in_channels, c1, 1), nn.ReLU())
        self.p2 = nn.Sequential(nn.Conv2D(in_channels, c2[0], 1), nn.ReLU(),
                                nn.Conv2D(c2[0], c2[1], 3, padding=1), nn.ReLU())
        self.p3 = nn.Sequential(nn.Conv2D(in_channels, c3[0], 1), nn.ReLU(),
                                nn.Conv2D(c3[0], c3[1], 5, padding=2), nn.ReLU())
        self.p4 = nn.Sequential(nn.MaxPool2D(3, 1, 1), nn.Conv2D(in_channels, c4, 1), nn.ReLU())
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x):
        paths = [self.p1(x), self.p2(x), self.p3(x), self.p4(x)]
        return paddle.concat(paths, axis=1)  # [N, in, H, W] -> [N, out_channels, H, W]


class Residual(nn.Layer):
    """Two 3x3 convolutions with batch norm, plus the input added back (ResNet section).

    The first convolution carries the stride. When it changes the side or the
    channel count, the shortcut needs ``use_1x1conv=True``: a 1x1 convolution
    with the same stride makes the input the same shape as the output.

    ``residual=False`` drops the shortcut (and its 1x1 convolution): the same
    two convolutions as a plain block, for the section's plain-vs-residual
    experiment at equal depth.
    """

    def __init__(self, in_channels: int, out_channels: int, use_1x1conv: bool = False, stride: int = 1,
                 residual: bool = True):
        super().__init__()
        if residual and not use_1x1conv and (stride != 1 or in_channels != out_channels):
            raise ValueError(
                f"Residual({in_channels}, {out_channels}, stride={stride}) changes the shape, "
                "so the shortcut needs use_1x1conv=True"
            )
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2D(out_channels)
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2D(out_channels)
        self.conv3 = nn.Conv2D(in_channels, out_channels, 1, stride=stride) if use_1x1conv and residual else None
        self.relu = nn.ReLU()
        self.out_channels, self.residual = out_channels, residual

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))  # [N, in, H, W] -> [N, out, H/s, W/s]
        y = self.bn2(self.conv2(y))
        if not self.residual:                   # plain block: nothing to fall back on but g(x)
            return self.relu(y)
        shortcut = x if self.conv3 is None else self.conv3(x)  # -> [N, out, H/s, W/s]
        return self.relu(y + shortcut)


def resnet_stem(in_channels: int, out_channels: int = 64) -> nn.Sequential:
    """7x7/2 convolution, batch norm, ReLU, 3x3/2 max-pool: H -> H/4 (ResNet section; DenseNet reuses it)."""
    return nn.Sequential(
        nn.Conv2D(in_channels, out_channels, 7, stride=2, padding=3),  # H -> ceil(H/2)
        nn.BatchNorm2D(out_channels),
        nn.ReLU(),
        nn.MaxPool2D(3, stride=2, padding=1),  # -> ceil(H/4)
    )


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Batch norm, ReLU, then a 3x3 convolution (DenseNet section: the pre-activation order)."""
    return nn.Sequential(nn.BatchNorm2D(in_channels), nn.ReLU(), nn.Conv2D(in_channels, out_channels, 3, padding=1))


class DenseBlock(nn.Layer):
    """``num_convs`` conv blocks, each seeing all earlier outputs (DenseNet section).

    Every conv block adds ``growth_rate`` channels by concatenation instead of
    addition, so ``out_channels = in_channels + num_convs * growth_rate``.
    """

    def __init__(self, num_convs: int, in_channels: int, growth_rate: int, conv=None):
        super().__init__()
        # conv: a function with conv_block's arguments (DenseNet-B's bottleneck, the section's variant)
        self.net = nn.LayerList(
            [(conv or conv_block)(in_channels + i * growth_rate, growth_rate) for i in range(num_convs)]
        )
        self.out_channels = in_channels + num_convs * growth_rate

    def forward(self, x):
        for block in self.net:
            x = paddle.concat([x, block(x)], axis=1)  # channels grow by growth_rate
        return x


def transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """Batch norm, ReLU, 1x1 convolution and 2x2/2 average pool (DenseNet section).

    Dense blocks only ever add channels; the transition cuts them (usually in
    half) and halves the side, so the next block stays affordable.
    """
    return nn.Sequential(
        nn.BatchNorm2D(in_channels), nn.ReLU(),
        nn.Conv2D(in_channels, out_channels, 1),  # [N, in, H, W] -> [N, out, H, W]
        nn.AvgPool2D(2, stride=2),  # -> [N, out, H/2, W/2]
    )
