"""The chapter put together: a residual network sized for 28-pixel Fashion-MNIST (the best-model section).

What it takes from the chapter:

* residual blocks with batch normalization (ResNet, BN sections): depth that
  trains at a high learning rate in few epochs;
* a 3x3 stem at full resolution instead of ResNet's 7x7/2 convolution and
  max-pool: at 28 px that stem leaves ResNet-18 a 7x7 map after two layers
  and a 1x1 map at its last stage; here three stages work on 28x28, 14x14 and
  7x7 maps;
* channels double whenever the side halves (VGG's rule), so each stage costs
  about the same;
* global average pooling and a single linear layer as the head (NiN), so the
  parameters sit in the convolutions.

The tricks that are not architecture (crop and flip, random erasing, label
smoothing, the one-cycle schedule, weight averaging, flip at test time) are
TrainConfig fields, set in the profiles below; ``homework/best`` measures
what each adds.
"""
from __future__ import annotations

from paddle import nn

from ..blocks import Classifier, Residual
from .registry import register

WIDTH = 32                 # channels of the first stage; the stages have WIDTH, 2 WIDTH, 4 WIDTH
BLOCKS = (2, 2, 2)         # residual blocks per stage: 1 + 2 * 6 + 1 = 14 weight layers
# Every conv pads enough that a 1x1 input stays 1x1 (ceil(H/2) at each stride): no lower bound, as in ResNet.
MIN_SIZE = 1


class FashionResNet(Classifier):
    """Three residual stages at full, half and quarter resolution, then average pooling and one linear layer.

    >>> net = FashionResNet()
    >>> list(net(paddle.zeros([2, 1, 28, 28])).shape)
    [2, 10]
    >>> list(FashionResNet(num_classes=0)(paddle.zeros([2, 1, 28, 28])).shape)   # backbone: the 7x7 map
    [2, 128, 7, 7]
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, width: int = WIDTH,
                 blocks=BLOCKS, dropout: float = 0.0, name: str = "fashion_resnet"):
        super().__init__(name, MIN_SIZE, input_size, num_classes, fixed_input=False)
        self.stem = nn.Sequential(nn.Conv2D(in_channels, width, 3, padding=1),   # [N, 1, 28, 28] -> [N, w, 28, 28]
                                  nn.BatchNorm2D(width), nn.ReLU())
        stages, channels = [], width
        for i, count in enumerate(blocks):
            out_channels = width * 2 ** i
            downsample = i > 0
            first = Residual(channels, out_channels, use_1x1conv=downsample, stride=2 if downsample else 1)
            stages.append(nn.Sequential(first, *[Residual(out_channels, out_channels) for _ in range(count - 1)]))
            channels = out_channels
        self.stages = nn.Sequential(*stages)  # 28 px: [N, w, 28, 28] -> [N, 2w, 14, 14] -> [N, 4w, 7, 7]
        if num_classes:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Flatten(),     # -> [N, 4w]
                                      nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward_features(self, x):
        return self.stages(self.stem(x))


@register(section="best", title=("Putting the chapter together: the best model", "综合：本章最好的模型"),
          min_size=MIN_SIZE, profiles=dict(
              # For a GPU (not run here, so its accuracy is unknown; the issue aims at 0.955): twice the width,
              # three blocks per stage (20 weight layers), 60 epochs; amp auto (fp16 on a V100, bf16 on an A100):
              # unlike LeNet's, 64-256-channel 3x3 convolutions at batch 256 are large enough for tensor cores.
              course=dict(resize=28, epochs=60, batch_size=256, lr=0.2, optimizer="sgd", momentum=0.9,
                          weight_decay=5e-4, schedule="onecycle", label_smoothing=0.1, augment="crop+flip",
                          erase=0.5, ema=0.999, tta="flip", model_args={"width": 64, "blocks": [3, 3, 3]}),
              # The 2-core CPU's recipe. Two one-thread processes train 589 ex/s, one process on both cores
              # 546, one thread 333 (`python -m benchmarks.parallel --cases fashion_resnet:28:128 --rounds 1`).
              # An epoch of this profile took 143.6 s of wall time, 40 of them evaluating (the weight average
              # and both mirror views, 20k forward passes on one thread per process): 22 epochs fit 60 minutes.
              cpu=dict(resize=28, epochs=22, batch_size=128, lr=0.1, optimizer="sgd", momentum=0.9,
                       weight_decay=5e-4, schedule="onecycle", label_smoothing=0.1, augment="crop+flip",
                       erase=0.5, ema=0.999, tta="flip", nproc=2),
          ))
def fashion_resnet(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, width: int = WIDTH,
                   blocks=BLOCKS, dropout: float = 0.0) -> FashionResNet:
    """The best-model section's network: a 14-layer ResNet for 28-pixel inputs (about 0.7 M parameters).

    >>> list(fashion_resnet()(paddle.zeros([1, 1, 28, 28])).shape)
    [1, 10]
    """
    return FashionResNet(num_classes, in_channels, input_size, width, tuple(blocks), dropout)
