"""DenseBox (Huang et al., 2015), the detection section, on Fashion-MNIST scenes.

A fully convolutional network predicts, at every cell of a map with output
stride 4, a confidence that an item's centre is near and the four distances
from the cell to its box's sides; boxes come from thresholding the confidence,
turning each location's distances into a box, and non-maximum suppression.
As in the paper, a deeper feature map (stride 8) is up-sampled and
concatenated with a shallower one (stride 4), so each cell sees both detail
and a receptive field larger than an item.

This file holds the network only; its training targets, loss and decoder
belong to the detection task (:mod:`paddle_cnn.tasks.detection`).
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from ..blocks import check_input
from .registry import register

# (convs, out_channels) of each stage; stages 2-4 start with a 2x2 max-pool.
# The paper uses VGG19's conv1-conv4 (64-512 channels); a quarter of that suits 64x64 scenes,
# and batch norm after each conv lets it train from scratch in minutes.
STAGES = ((1, 16), (2, 32), (2, 64), (2, 128))
SHALLOW = 2            # stage index whose output (stride 4) receives the up-sampled deepest map
FUSE_CHANNELS = 64     # 1x1 conv after the concatenation, shared by the heads
STRIDE = 4             # output stride: the maps are (S/4) x (S/4)
MULTIPLE = 8           # input sides must be divisible by the deepest stride



def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3) -> list:
    return [nn.Conv2D(in_channels, out_channels, kernel, padding=kernel // 2, bias_attr=False),
            nn.BatchNorm2D(out_channels), nn.ReLU()]


class DenseBox(nn.Layer):
    """VGG-style FCN with a deep-to-shallow fusion and per-cell box heads.

    ``forward`` returns a dict of maps at stride 4, for an input [N, C, H, W]:

    * ``conf``: [N, 1, H/4, W/4] confidence after the sigmoid;
    * ``dist``: [N, 4, H/4, W/4] distances to the box sides (the task's DIST_NORM units);
    * ``cls``:  [N, num_classes, H/4, W/4] class logits (only when num_classes > 0).

    >>> {k: list(v.shape) for k, v in DenseBox()(paddle.zeros([2, 1, 64, 64])).items()}
    {'conf': [2, 1, 16, 16], 'dist': [2, 4, 16, 16], 'cls': [2, 10, 16, 16]}
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int | None = None,
                 name: str = "densebox"):
        super().__init__()
        self.name, self.num_classes = name, num_classes
        if input_size is not None:
            self.check_size(input_size, input_size)
        stages, channels = [], in_channels
        for i, (convs, width) in enumerate(STAGES):
            layers = [nn.MaxPool2D(2, 2)] if i else []
            for _ in range(convs):
                layers += conv_bn_relu(channels, width)
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.LayerList(stages)      # outputs at strides 1, 2, 4, 8
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.fuse = nn.Sequential(*conv_bn_relu(STAGES[SHALLOW][1] + STAGES[-1][1], FUSE_CHANNELS, kernel=1))
        self.conf = nn.Conv2D(FUSE_CHANNELS, 1, 1)
        self.dist = nn.Conv2D(FUSE_CHANNELS, 4, 1)
        self.cls = nn.Conv2D(FUSE_CHANNELS, num_classes, 1) if num_classes > 0 else None

    def check_size(self, h: int, w: int) -> None:
        if h % MULTIPLE or w % MULTIPLE:
            raise ValueError(f"{self.name} needs input sides divisible by {MULTIPLE} (three 2x2 pools, then "
                             f"a 2x up-sampling back to stride {STRIDE}), got {h}x{w}")

    def forward(self, x):
        check_input(x, self.name, 2 * MULTIPLE)
        self.check_size(int(x.shape[-2]), int(x.shape[-1]))
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == SHALLOW:
                shallow = x                                       # [N, 64, H/4, W/4]
        x = paddle.concat([shallow, self.up(x)], axis=1)          # [N, 64 + 128, H/4, W/4]
        x = self.fuse(x)                                          # [N, 64, H/4, W/4]
        out = {"conf": F.sigmoid(self.conf(x)), "dist": self.dist(x)}
        if self.cls is not None:
            out["cls"] = self.cls(x)
        return out


@register(section="densebox", title=("DenseBox (object detection)", "DenseBox（目标检测）"),
          task="detection", min_size=2 * MULTIPLE,
          profiles=dict(
              # For a GPU: 20k scenes x 30 epochs of 64x64, Adam with a cosine decay.
              # amp off: 64 px scenes at batch 32 are small, launch-bound kernels on a GPU (not measured).
              course=dict(resize=64, epochs=30, batch_size=32, lr=1e-3, optimizer="adam", schedule="cosine", amp="off",
                          task_args=dict(num_train_scenes=20000, num_test_scenes=2000)),
              # 20k scenes x 6 epochs: AP50 settles after ~3 epochs, the later ones mostly train the class
              # head (homework/densebox: the measured curve, wall time and scenes/s with the accelerator).
              cpu=dict(resize=64, epochs=6, batch_size=32, lr=3e-3, optimizer="adam", schedule="cosine",
                       task_args=dict(num_train_scenes=20000, num_test_scenes=1000), nproc=2),
              # nproc=2: two one-thread processes 647 vs 511 scenes/s in one process (`python -m benchmarks.parallel`).
          ))
def densebox(num_classes: int = 10, in_channels: int = 1, input_size: int = 64) -> DenseBox:
    """DenseBox with the optional class head on (num_classes=0 leaves it off).

    >>> list(densebox()(paddle.zeros([1, 1, 64, 64]))["dist"].shape)
    [1, 4, 16, 16]
    """
    return DenseBox(num_classes, in_channels, input_size, name="densebox")
