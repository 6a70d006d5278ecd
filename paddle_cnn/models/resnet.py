"""ResNet, the "residual networks" section: stages of residual blocks after a 7x7 stem.

He et al. (2016). Each :class:`paddle_cnn.blocks.Residual` learns
``f(x) - x`` instead of ``f(x)``, which is what lets 18 (and 152) layers train.
The stem is GoogLeNet's plus batch norm; the first residual of every stage
after the first halves the side and doubles the channels.
"""
from __future__ import annotations

from paddle import nn

from ..blocks import Classifier, Residual, resnet_stem
from .registry import SGD_ONECYCLE, register

STEM_CHANNELS = 64
# (out_channels, num_residuals) per stage; 2 convs per residual: 1 + 4 * 2 * 2 + 1 = 18 layers.
RESNET18_ARCH = ((64, 2), (128, 2), (256, 2), (512, 2))
# Every conv and pool pads enough that a 1x1 input stays 1x1 (ceil(H/2) at each stride): no lower bound.
MIN_SIZE = 1


class ResNet(Classifier):
    """ResNet from a table of stages; global average pooling makes any input side work.

    >>> list(ResNet()(paddle.zeros([2, 1, 96, 96])).shape)
    [2, 10]
    """

    def __init__(self, stage_arch=RESNET18_ARCH, num_classes: int = 10, in_channels: int = 1,
                 input_size: int = 96, name: str = "resnet", residual: bool = True, block=None):
        super().__init__(name, MIN_SIZE, input_size, num_classes, fixed_input=False)
        self.stem = resnet_stem(in_channels, STEM_CHANNELS)  # [N, 1, 96, 96] -> [N, 64, 24, 24]
        stages, channels = [], STEM_CHANNELS
        for i, (out_channels, num_residuals) in enumerate(stage_arch):
            # The stem has already pooled, so the first stage keeps the side.
            stages.append(self._make_stage(channels, out_channels, num_residuals, downsample=i > 0,
                                           residual=residual, block=block))
            channels = out_channels
        self.stages = nn.Sequential(*stages)  # 96: 64x24x24, 128x12x12, 256x6x6, 512x3x3
        if num_classes:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Flatten(),  # -> [N, 512]
                                      nn.Linear(channels, num_classes))  # -> [N, num_classes]

    @staticmethod
    def _make_stage(in_channels: int, out_channels: int, num_residuals: int, downsample: bool,
                    residual: bool = True, block=None) -> nn.Sequential:
        # block: a class with Residual's four arguments (the section's exercise trains its own)
        make = (lambda *a, **k: Residual(*a, **k, residual=residual)) if block is None else block
        first = make(in_channels, out_channels, use_1x1conv=downsample, stride=2 if downsample else 1)
        rest = [make(out_channels, out_channels) for _ in range(num_residuals - 1)]
        return nn.Sequential(first, *rest)

    def forward_features(self, x):
        return self.stages(self.stem(x))



@register(section="resnet", title=("Residual networks (ResNet)", "残差网络（ResNet）"), min_size=MIN_SIZE,
          profiles=dict(
              # d2l: resize 96, lr 0.05, batch 256, 10 epochs.
              course=dict(resize=96, epochs=10, batch_size=256, lr=0.05, optimizer="sgd", init="xavier"),
              # Native 28 px: no resize blur; the last stage works on a 1x1 map (48 px would give 2x2
              # at 3x the cost). Four epochs of all 60k images; batch norm lets momentum SGD with a
              # one-cycle schedule run fast.
              cpu=dict(resize=28, epochs=4, batch_size=128, **SGD_ONECYCLE),
              # Both cores in one process (the default): 1,082 vs 720 ex/s on one thread and 757 in two
              # processes (`python -m benchmarks.parallel`; before the accelerator one thread was faster).
          ))
def resnet18(num_classes: int = 10, in_channels: int = 1, input_size: int = 96,
             stage_arch=RESNET18_ARCH, residual: bool = True) -> ResNet:
    """ResNet-18 as in the course (d2l's version, trained at 96x96).

    ``stage_arch`` trains another depth through the same profile, e.g. ResNet-34 with
    ``model_args={"stage_arch": ((64, 3), (128, 4), (256, 6), (512, 3))}``. ``residual=False``
    removes every shortcut: a plain network of the same depth, for the section's comparison.

    >>> list(resnet18()(paddle.zeros([1, 1, 96, 96])).shape)
    [1, 10]
    """
    return ResNet(tuple(map(tuple, stage_arch)), num_classes, in_channels, input_size, name="resnet18",
                  residual=residual)
