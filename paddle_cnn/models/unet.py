"""U-Net (Ronneberger et al., 2015), the segmentation section, on Fashion-MNIST scenes.

An encoder halves the resolution ``depth`` times and doubles the width each
time; a decoder climbs back up, and at every level the encoder's feature map
is concatenated onto the up-sampled decoder map before two more convolutions.
Those skip connections hand the decoder the fine detail the bottleneck lost,
which is the point of the section: the decoder's first convolution at each
level takes ``up_channels + skip_channels`` input channels. ``skips=False``
builds the same encoder and decoder without them (``skip_channels`` 0), for
the section's experiment.

With ``same`` padding (unlike the paper's valid convolutions) the output mask
has exactly the input's height and width, for any side divisible by 2**depth.
"""
from __future__ import annotations

import paddle
from paddle import nn

from ..blocks import check_input
from .registry import register

# Width of level i is base_width * 2**i: the paper's 64-128-256-512-1024 is
# base_width=64, depth=4; a quarter of that suits 64x64 scenes (the cpu profile halves it again).
DEPTH, BASE_WIDTH = 4, 16


def level_widths(depth: int, base_width: int) -> tuple:
    """Channels of levels 0..depth, e.g. (16, 32, 64, 128, 256) for depth 4, base 16."""
    return tuple(base_width * 2 ** i for i in range(depth + 1))


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) x 2 with padding 1, so only the pools change the size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2D(in_channels, out_channels, 3, padding=1, bias_attr=False), nn.BatchNorm2D(out_channels),
            nn.ReLU(),
            nn.Conv2D(out_channels, out_channels, 3, padding=1, bias_attr=False), nn.BatchNorm2D(out_channels),
            nn.ReLU(),
        )


class Up(nn.Layer):
    """One decoder level: 2x2 transposed conv (halves the width), concatenate the skip, DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()  # skip_channels=0: no skip connection, the decoder sees only the up-sampled map
        self.up_channels, self.skip_channels = in_channels // 2, skip_channels
        self.up = nn.Conv2DTranspose(in_channels, self.up_channels, 2, stride=2)
        self.conv = DoubleConv(self.up_channels + skip_channels, out_channels)

    def forward(self, x, skip):
        x = self.up(x)                                     # [N, C/2, 2h, 2w]
        if self.skip_channels:
            x = paddle.concat([skip, x], axis=1)           # [N, C_skip + C/2, 2h, 2w]
        return self.conv(x)


class UNet(nn.Layer):
    """Encoder-decoder with skip connections; logits [N, num_classes, H, W] for inputs [N, C, H, W].

    >>> list(UNet(depth=3, base_width=8)(paddle.zeros([2, 1, 32, 32])).shape)
    [2, 11, 32, 32]
    """

    def __init__(self, num_classes: int = 11, in_channels: int = 1, depth: int = DEPTH,
                 base_width: int = BASE_WIDTH, input_size: int | None = None, name: str = "unet",
                 skips: bool = True, block=None):
        super().__init__()
        if depth < 1 or base_width < 1:
            raise ValueError(f"{name} needs depth >= 1 and base_width >= 1, got {depth} and {base_width}")
        self.name, self.depth, self.skips = name, depth, skips
        if input_size is not None:
            self.check_size(input_size, input_size)
        widths = level_widths(depth, base_width)
        self.stem = DoubleConv(in_channels, widths[0])
        self.downs = nn.LayerList([nn.Sequential(nn.MaxPool2D(2, 2), DoubleConv(widths[i], widths[i + 1]))
                                   for i in range(depth)])
        # Decoder from the bottleneck up: level i takes widths[i + 1] channels and the level-i skip.
        # block: a class with Up's arguments (the section's exercise trains its own decoder step)
        self.ups = nn.LayerList([(block or Up)(widths[i + 1], widths[i] if skips else 0, widths[i])
                                 for i in reversed(range(depth))])
        self.head = nn.Conv2D(widths[0], num_classes, 1)

    @property
    def multiple(self) -> int:
        return 2 ** self.depth

    def check_size(self, h: int, w: int) -> None:
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"{self.name} (depth {self.depth}) needs input sides divisible by "
                             f"2**{self.depth} = {self.multiple}, got {h}x{w}; resize to a multiple of "
                             f"{self.multiple} (e.g. {max(1, round(h / self.multiple)) * self.multiple})")

    def forward(self, x):
        check_input(x, self.name, self.multiple)
        self.check_size(int(x.shape[-2]), int(x.shape[-1]))
        skips = [self.stem(x)]                     # [N, w0, H, W]
        for down in self.downs:
            skips.append(down(skips[-1]))          # level i: [N, w_i, H / 2**i, W / 2**i]
        x = skips.pop()                            # bottleneck [N, w_depth, H / 2**depth, ...]
        for up in self.ups:
            x = up(x, skips.pop())                 # back up one level
        return self.head(x)                        # [N, num_classes, H, W]


@register(section="unet", title=("U-Net (semantic segmentation)", "全卷积与 U-Net（语义分割）"),
          task="segmentation", min_size=2 ** DEPTH,
          profiles=dict(
              # For a GPU: the default widths (base 16; the paper's 64 fits too via model_args),
              # 20k scenes x 30 epochs with Adam and a cosine decay.
              # amp off: 64 px scenes at batch 32 are small, launch-bound kernels on a GPU (not measured).
              course=dict(resize=64, epochs=30, batch_size=32, lr=1e-3, optimizer="adam", schedule="cosine", amp="off",
                          task_args=dict(num_train_scenes=20000, num_test_scenes=2000)),
              # Base width 8, 16k scenes x 4 epochs (homework/unet: the measured curve, wall time and
              # scenes/s with the accelerator). Before the accelerator, probes on a busy machine put base
              # 16 at roughly 2-3x the cost of base 8 per step; not re-measured.
              cpu=dict(resize=64, epochs=4, batch_size=32, lr=3e-3, optimizer="adam", schedule="cosine",
                       model_args=dict(base_width=8), task_args=dict(num_train_scenes=16000, num_test_scenes=1000),
                       nproc=2),
              # nproc=2: two one-thread processes 468 vs 348 scenes/s in one process (`python -m benchmarks.parallel`).
              smoke=dict(resize=48),  # the smallest canvas that still holds an item at 1.5x
          ))
def unet(num_classes: int = 11, in_channels: int = 1, input_size: int = 64, depth: int = DEPTH,
         base_width: int = BASE_WIDTH, skips: bool = True) -> UNet:
    """U-Net for 11-class masks of Fashion-MNIST scenes (background + 10 classes).

    ``skips=False`` trains the same network without skip connections
    (``model_args={"skips": False}``).

    >>> list(unet()(paddle.zeros([1, 1, 64, 64])).shape)
    [1, 11, 64, 64]
    """
    return UNet(num_classes, in_channels, depth, base_width, input_size, name="unet", skips=skips)
