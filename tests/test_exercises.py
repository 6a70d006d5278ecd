"""Exercises: the check passes a right student version and fails a wrong one in one line, never a traceback.

The student-style solutions live here, not in the package or the notebooks.
Each exercise gets four candidates: a right one written the way a student
might (loops, d2l's layer order, functional ReLUs), a wrong-shape one, a
wrong-value one and one that raises. Each wrong candidate names the line it
must fail with.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from paddle_cnn import exercises
from paddle_cnn.tasks.detection import DIST_NORM, GRAY_CELLS, POS_RADIUS


# --------------------------------------------------------------------------- corr2d (LeNet)
def corr2d_right(X, K):
    h, w = K.shape
    rows = []
    for i in range(X.shape[0] - h + 1):
        rows.append(paddle.stack([(X[i:i + h, j:j + w] * K).sum() for j in range(X.shape[1] - w + 1)]))
    return paddle.stack(rows)


def corr2d_wrong_shape(X, K):            # off by one: misses the last row and column
    h, w = K.shape
    Y = paddle.zeros([X.shape[0] - h, X.shape[1] - w])
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


def corr2d_wrong_value(X, K):            # a true convolution: the kernel flipped
    return corr2d_right(X, K.flip([0, 1]))


def corr2d_raising(X, K):
    return paddle.matmul(X, K)           # [6, 8] @ [2, 2]


# --------------------------------------------------------------------------- AlexNet
class AlexNetRight(nn.Layer):
    def __init__(self, num_classes=10, in_channels=1, input_size=224, relu_after=(0, 1, 2, 3, 4), flatten=True):
        super().__init__()
        convs = [(96, 11, 4, 1, True), (256, 5, 1, 2, True), (384, 3, 1, 1, False), (384, 3, 1, 1, False),
                 (256, 3, 1, 1, True)]
        layers, c = [], in_channels
        for k, (out, kernel, stride, padding, pool) in enumerate(convs):
            layers.append(nn.Conv2D(c, out, kernel, stride=stride, padding=padding))
            if k in relu_after:
                layers.append(nn.ReLU())
            if pool:
                layers.append(nn.MaxPool2D(kernel_size=3, stride=2))
            c = out
        self.features = nn.Sequential(*layers)
        with paddle.no_grad():   # the flatten size, measured instead of computed
            n = int(np.prod(self.features(paddle.zeros([1, in_channels, input_size, input_size])).shape))
        self.flatten = nn.Flatten() if flatten else nn.Identity()
        self.fc = nn.Sequential(nn.Linear(n, 4096), nn.ReLU(), nn.Dropout(0.5),
                                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.fc(self.flatten(self.features(x)))


def alexnet_wrong_shape(num_classes=10, in_channels=1, input_size=224):
    net = AlexNetRight(num_classes, in_channels, 224)   # the flatten size of 224-pixel inputs, whatever the input
    return net


def alexnet_wrong_value(num_classes=10, in_channels=1, input_size=224):
    return AlexNetRight(num_classes, in_channels, input_size, relu_after=(0, 1, 3, 4))   # no ReLU after conv 3


def alexnet_raising(num_classes=10, in_channels=1, input_size=224):
    return AlexNetRight(num_classes, in_channels, input_size, flatten=False)   # Linear on [N, 256, 1, 1]


# --------------------------------------------------------------------------- VGG block
def vgg_block_right(num_convs, in_channels, out_channels):
    net = nn.Sequential()
    for i in range(num_convs):
        net.add_sublayer(f"conv{i}", nn.Conv2D(in_channels if i == 0 else out_channels, out_channels, 3,
                                               padding="same"))
        net.add_sublayer(f"relu{i}", nn.ReLU())
    net.add_sublayer("pool", nn.MaxPool2D(kernel_size=2, stride=2))
    return net


def vgg_block_wrong_shape(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2D(in_channels, out_channels, 3, padding=1), nn.ReLU()]
        in_channels = out_channels
    return nn.Sequential(*layers, nn.MaxPool2D(2, stride=1))   # stride 1: the side barely shrinks


def vgg_block_wrong_value(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2D(in_channels, out_channels, 3, padding=1))
        in_channels = out_channels
    return nn.Sequential(*layers, nn.ReLU(), nn.MaxPool2D(2, 2))   # one ReLU after all the convolutions


def vgg_block_raising(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2D(in_channels, out_channels, 3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2D(2, 2))
    return nn.Sequential(layers)   # a list, not *layers


# --------------------------------------------------------------------------- NiN block
def nin_block_right(in_channels, out_channels, kernel, stride, padding):
    return nn.Sequential(
        nn.Conv2D(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=padding), nn.ReLU(),
        *[layer for _ in range(2) for layer in (nn.Conv2D(out_channels, out_channels, kernel_size=1), nn.ReLU())])


def nin_block_wrong_shape(in_channels, out_channels, kernel, stride, padding):
    return nin_block_right(in_channels, out_channels, kernel, 1, padding)   # the stride forgotten


def nin_block_wrong_value(in_channels, out_channels, kernel, stride, padding):
    return nn.Sequential(nn.Conv2D(in_channels, out_channels, kernel, stride, padding), nn.ReLU(),
                         nn.Conv2D(out_channels, out_channels, 1), nn.Conv2D(out_channels, out_channels, 1),
                         nn.ReLU())   # no ReLU between the 1x1 convolutions: they collapse into one


def nin_block_raising(in_channels, out_channels, kernel, stride, padding):
    return nn.Sequential(nn.Conv2D(in_channels, out_channels, kernel, stride, padding), nn.ReLU,   # the class
                         nn.Conv2D(out_channels, out_channels, 1), nn.ReLU(),
                         nn.Conv2D(out_channels, out_channels, 1), nn.ReLU())


# --------------------------------------------------------------------------- Inception
class InceptionRight(nn.Layer):
    """d2l's layout: one attribute per convolution, ReLU in forward."""

    def __init__(self, in_channels, c1, c2, c3, c4, pool="max", pad5=2, paths=4):
        super().__init__()
        self.p1_1 = nn.Conv2D(in_channels, c1, 1)
        self.p2_1 = nn.Conv2D(in_channels, c2[0], 1)
        self.p2_2 = nn.Conv2D(c2[0], c2[1], 3, padding=1)
        self.p3_1 = nn.Conv2D(in_channels, c3[0], 1)
        self.p3_2 = nn.Conv2D(c3[0], c3[1], 5, padding=pad5)
        self.p4_1 = (nn.MaxPool2D if pool == "max" else nn.AvgPool2D)(3, stride=1, padding=1)
        self.p4_2 = nn.Conv2D(in_channels, c4, 1)
        self.paths = paths

    def forward(self, x):
        p1 = F.relu(self.p1_1(x))
        p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        p4 = F.relu(self.p4_2(self.p4_1(x)))
        return paddle.concat([p1, p2, p3, p4][:self.paths], axis=1)


def inception_wrong_shape(in_channels, c1, c2, c3, c4):
    return InceptionRight(in_channels, c1, c2, c3, c4, paths=3)   # the pooling path left out of the concat


def inception_wrong_value(in_channels, c1, c2, c3, c4):
    return InceptionRight(in_channels, c1, c2, c3, c4, pool="avg")


def inception_raising(in_channels, c1, c2, c3, c4):
    return InceptionRight(in_channels, c1, c2, c3, c4, pad5=0)   # the 5x5 path shrinks: concat fails


# --------------------------------------------------------------------------- batch_norm
def batch_norm_right(X, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    if training:
        # Per channel: move C last and flatten everything else into rows.
        rows = X if len(X.shape) == 2 else X.transpose([0, 2, 3, 1]).reshape([-1, X.shape[1]])
        mean = rows.mean(axis=0).reshape(moving_mean.shape)
        var = rows.var(axis=0, unbiased=False).reshape(moving_var.shape)
        moving_mean = momentum * moving_mean + (1 - momentum) * mean
        moving_var = momentum * moving_var + (1 - momentum) * var
    else:
        mean, var = moving_mean, moving_var
    return gamma * (X - mean) / paddle.sqrt(var + eps) + beta, moving_mean, moving_var


def _bn_wrong(X, gamma, beta, moving_mean, moving_var, eps, momentum, training, unbiased=False, keepdim=True):
    if not training:
        return gamma * (X - moving_mean) / paddle.sqrt(moving_var + eps) + beta, moving_mean, moving_var
    axes = [0] if len(X.shape) == 2 else [0, 2, 3]
    mean = X.mean(axis=axes, keepdim=keepdim)
    var = X.var(axis=axes, unbiased=unbiased, keepdim=keepdim)
    Y = gamma * (X - mean) / paddle.sqrt(var + eps) + beta
    return Y, momentum * moving_mean + (1 - momentum) * mean, momentum * moving_var + (1 - momentum) * var


def batch_norm_wrong_shape(X, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    mean = X.mean(axis=[0] if len(X.shape) == 2 else [0, 2, 3])          # [C]: right for X_hat once reshaped,
    shape = [1, X.shape[1]] + [1] * (len(X.shape) - 2)                   # but the moving statistics broadcast
    var = ((X - mean.reshape(shape)) ** 2).mean(axis=[0] if len(X.shape) == 2 else [0, 2, 3])
    Y = gamma * (X - mean.reshape(shape)) / paddle.sqrt(var.reshape(shape) + eps) + beta
    return Y, momentum * moving_mean + (1 - momentum) * mean, momentum * moving_var + (1 - momentum) * var


def batch_norm_wrong_value(*args):
    return _bn_wrong(*args, unbiased=True)   # divides by m - 1, as PyTorch's running variance does


def batch_norm_raising(*args):
    return _bn_wrong(*args, keepdim=False)   # [4, 3, 5, 5] - [3]: the shapes do not broadcast


# --------------------------------------------------------------------------- Residual
class ResidualRight(nn.Layer):
    """d2l's order: the three convolutions, then the two batch norms."""

    def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1, relu_first=False,
                 shortcut_stride=True, conv_stride=True):
        super().__init__()
        s = stride if conv_stride else 1
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, padding=1, stride=s)
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1)
        self.conv3 = (nn.Conv2D(in_channels, out_channels, 1, stride=s if shortcut_stride else 1)
                      if use_1x1conv else None)
        self.bn1 = nn.BatchNorm2D(out_channels)
        self.bn2 = nn.BatchNorm2D(out_channels)
        self.relu_first = relu_first

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.relu_first:
            Y = F.relu(Y)
        if self.conv3 is not None:
            X = self.conv3(X)
        return F.relu(Y + X)


def residual_wrong_shape(in_channels, out_channels, use_1x1conv=False, stride=1):
    return ResidualRight(in_channels, out_channels, use_1x1conv, stride, conv_stride=False)   # never halves


def residual_wrong_value(in_channels, out_channels, use_1x1conv=False, stride=1):
    return ResidualRight(in_channels, out_channels, use_1x1conv, stride, relu_first=True)   # ReLU before the add


def residual_raising(in_channels, out_channels, use_1x1conv=False, stride=1):
    return ResidualRight(in_channels, out_channels, use_1x1conv, stride, shortcut_stride=False)


# --------------------------------------------------------------------------- DenseBlock
def conv_block(in_channels, out_channels):
    return nn.Sequential(nn.BatchNorm2D(in_channels), nn.ReLU(), nn.Conv2D(in_channels, out_channels, 3, padding=1))


class DenseBlockRight(nn.Layer):
    def __init__(self, num_convs, in_channels, growth_rate, mode="right"):
        super().__init__()
        self.net = nn.Sequential(*[conv_block(in_channels + i * growth_rate, growth_rate) for i in range(num_convs)])
        self.mode = mode

    def forward(self, X):
        for blk in self.net:
            Y = blk(X)
            if self.mode == "raise":
                X = paddle.concat(X, Y, axis=1)   # the list forgotten
            elif self.mode == "swap":
                X = paddle.concat([Y, X], axis=1)
            else:
                X = paddle.concat([X, Y], axis=1)
        return Y if self.mode == "last" else X


def dense_block_wrong_shape(num_convs, in_channels, growth_rate):
    return DenseBlockRight(num_convs, in_channels, growth_rate, mode="last")   # returns only the last block's output


def dense_block_wrong_value(num_convs, in_channels, growth_rate):
    return DenseBlockRight(num_convs, in_channels, growth_rate, mode="swap")   # new channels first


def dense_block_raising(num_convs, in_channels, growth_rate):
    return DenseBlockRight(num_convs, in_channels, growth_rate, mode="raise")


# --------------------------------------------------------------------------- transition
def transition_right(in_channels, out_channels):
    return nn.Sequential(nn.BatchNorm2D(in_channels), nn.ReLU(), nn.Conv2D(in_channels, out_channels, kernel_size=1),
                         nn.AvgPool2D(kernel_size=2, stride=2))


def transition_wrong_shape(in_channels, out_channels):
    return nn.Sequential(nn.BatchNorm2D(in_channels), nn.ReLU(), nn.Conv2D(in_channels, out_channels, 1))   # no pool


def transition_wrong_value(in_channels, out_channels):
    return nn.Sequential(nn.BatchNorm2D(in_channels), nn.ReLU(), nn.Conv2D(in_channels, out_channels, 1),
                         nn.MaxPool2D(2, 2))


def transition_raising(in_channels, out_channels):
    layers = [nn.AvgPool2D(2, 2), nn.Conv2D(in_channels, out_channels, 1), nn.ReLU(), nn.BatchNorm2D(in_channels)]
    return nn.Sequential(*layers.reverse())   # reverse() returns None


# --------------------------------------------------------------------------- U-Net up-step
class UpRight(nn.Layer):
    def __init__(self, in_channels, skip_channels, out_channels, halve=True, bn_first=True, stride=2):
        super().__init__()
        up = in_channels // 2 if halve else in_channels
        self.up = nn.Conv2DTranspose(in_channels, up, 2, stride=stride)
        self.conv_a = nn.Conv2D(up + skip_channels, out_channels, 3, padding=1, bias_attr=False)
        self.bn_a = nn.BatchNorm2D(out_channels)
        self.conv_b = nn.Conv2D(out_channels, out_channels, 3, padding=1, bias_attr=False)
        self.bn_b = nn.BatchNorm2D(out_channels)
        self.bn_first = bn_first

    def _step(self, conv, bn, x):
        return F.relu(bn(conv(x))) if self.bn_first else bn(F.relu(conv(x)))

    def forward(self, x, skip):
        x = paddle.concat([skip, self.up(x)], axis=1)
        return self._step(self.conv_b, self.bn_b, self._step(self.conv_a, self.bn_a, x))


def unet_up_wrong_shape(in_channels, skip_channels, out_channels):
    return UpRight(in_channels, skip_channels, out_channels, halve=False)   # the up-sampling keeps the channels


def unet_up_wrong_value(in_channels, skip_channels, out_channels):
    return UpRight(in_channels, skip_channels, out_channels, bn_first=False)   # ReLU before batch norm


def unet_up_raising(in_channels, skip_channels, out_channels):
    return UpRight(in_channels, skip_channels, out_channels, stride=1)   # h + 1 pixels, not 2h: concat fails


# --------------------------------------------------------------------------- DenseBox targets
def densebox_targets_right(boxes, labels, counts, canvas, stride=4, norm=DIST_NORM, extra=0):
    """Cell by cell, box by box: the rules of the docstring as loops."""
    G = canvas // stride
    out = np.zeros((len(boxes), 7, G + extra, G), np.float32)
    for i in range(len(boxes)):
        for r in range(G + extra):
            for c in range(G):
                cx, cy = (c + 0.5) * stride, (r + 0.5) * stride
                owner, best, near = None, None, False
                for j in range(counts[i]):
                    x1, y1, x2, y2 = (float(v) for v in boxes[i, j])
                    bx, by = (x1 + x2) / 2, (y1 + y2) / 2
                    radius = np.float32(POS_RADIUS) * np.sqrt(np.float32((x2 - x1) * (y2 - y1)))
                    d = np.sqrt((cx - bx) ** 2 + (cy - by) ** 2)
                    home = r == by // stride and c == bx // stride
                    near |= d <= radius + GRAY_CELLS * stride
                    if (d <= radius or home) and (best is None or d < best):
                        owner, best = j, d
                if owner is None:
                    out[i, 1, r, c] = 0.0 if near else 1.0
                    out[i, 6, r, c] = -1
                    continue
                x1, y1, x2, y2 = boxes[i, owner]
                out[i, :, r, c] = [1, 1, (cx - x1) / norm, (cy - y1) / norm, (x2 - cx) / norm, (y2 - cy) / norm,
                                   labels[i, owner]]
    return out


def densebox_targets_wrong_shape(boxes, labels, counts, canvas, stride=4):
    return densebox_targets_right(boxes, labels, counts, canvas, stride, extra=1)   # one row too many


def densebox_targets_wrong_value(boxes, labels, counts, canvas, stride=4):
    return densebox_targets_right(boxes, labels, counts, canvas, stride, norm=1.0)   # distances not normalised


def densebox_targets_raising(boxes, labels, counts, canvas, stride=4):
    t = densebox_targets_right(boxes, labels, counts, canvas, stride)
    return t[:, :, :, canvas]   # a pixel index into a cell axis


# --------------------------------------------------------------------------- the table
# name -> (right, [(wrong candidate, the line it must fail with), ...])
CANDIDATES = {
    "corr2d": (corr2d_right, [(corr2d_wrong_shape, "✗ 输出形状：你的 (4, 6)，应为 (5, 7)"),
                              (corr2d_wrong_value, "✗ 输出值：你的相差最多"),
                              (corr2d_raising, "✗ 你的函数出错：ValueError")]),
    "alexnet": (AlexNetRight, [(alexnet_wrong_shape, "✗ 参数量：你的 46,764,746，应为 21,598,922"),
                               (alexnet_wrong_value, "✗ 输出值：你的相差最多"),
                               (alexnet_raising, "✗ 前向计算出错：ValueError")]),
    "vgg_block": (vgg_block_right, [(vgg_block_wrong_shape, "✗ 输出形状：你的 (2, 8, 15, 15)，应为 (2, 8, 8, 8)"),
                                    (vgg_block_wrong_value, "✗ 输出值：你的相差最多"),
                                    (vgg_block_raising, "✗ 构建时出错：")]),
    "nin_block": (nin_block_right, [(nin_block_wrong_shape, "✗ 输出形状：你的 (2, 8, 15, 15)，应为 (2, 8, 8, 8)"),
                                    (nin_block_wrong_value, "✗ 输出值：你的相差最多"),
                                    (nin_block_raising, "✗ 构建时出错：")]),
    "inception": (InceptionRight, [(inception_wrong_shape, "✗ 输出形状：你的 (2, 15, 9, 9)，应为 (2, 22, 9, 9)"),
                                   (inception_wrong_value, "✗ 输出值：你的相差最多"),
                                   (inception_raising, "✗ 前向计算出错：ValueError")]),
    "batch_norm": (batch_norm_right, [
        (batch_norm_wrong_shape, "✗ 输出形状：你的 (4, 3, 5, 5), (1, 3, 1, 3), (1, 3, 1, 3)，"
                                 "应为 (4, 3, 5, 5), (1, 3, 1, 1), (1, 3, 1, 1)"),
        (batch_norm_wrong_value, "✗ Y：你的相差最多"),
        (batch_norm_raising, "✗ 你的函数出错：ValueError")]),
    "residual": (ResidualRight, [(residual_wrong_shape, "✗ 输出形状：你的 (2, 6, 7, 7)，应为 (2, 6, 4, 4)"),
                                 (residual_wrong_value, "✗ 输出值：你的相差最多"),
                                 (residual_raising, "✗ 前向计算出错：ValueError")]),
    "dense_block": (DenseBlockRight, [(dense_block_wrong_shape, "✗ 输出形状：你的 (2, 4, 5, 5)，应为 (2, 11, 5, 5)"),
                                      (dense_block_wrong_value, "✗ 输出值：你的相差最多"),
                                      (dense_block_raising, "✗ 前向计算出错：TypeError")]),
    "transition": (transition_right, [(transition_wrong_shape, "✗ 输出形状：你的 (2, 3, 6, 6)，应为 (2, 3, 3, 3)"),
                                      (transition_wrong_value, "✗ 输出值：你的相差最多"),
                                      (transition_raising, "✗ 构建时出错：TypeError")]),
    "unet_up": (UpRight, [(unet_up_wrong_shape, "✗ 参数量：你的 856，应为 580"),
                          (unet_up_wrong_value, "✗ 输出值：你的相差最多"),
                          (unet_up_raising, "✗ 前向计算出错：ValueError")]),
    "densebox_targets": (densebox_targets_right, [
        (densebox_targets_wrong_shape, "✗ 输出形状：你的 (3, 7, 9, 8)，应为 (3, 7, 8, 8)"),
        (densebox_targets_wrong_value, "✗ 到四边的距离（通道 2-5）：你的相差最多"),
        (densebox_targets_raising, "✗ 你的函数出错：IndexError")]),
}


# (name, index of the wrong candidate) -> the line after its failure that names the part
PARTS = {
    ("alexnet", 0): "→ 第 1 个全连接层：输入通道数是 6400，应为 256",
    ("alexnet", 1): "→ 第 4 个卷积层的输入不同，而第 3 个卷积层的输出一致",
    ("nin_block", 0): "→ 第 1 个卷积层：步幅是 1，应为 2",
    ("inception", 1): "→ 路径 4 的输出（第 16-22 个通道）与参考实现不同",
    ("dense_block", 1): "→ 第 2 个批量规范化层的输入不同，而第 1 个卷积层的输出一致",
    ("transition", 1): "→ 第 1 个平均汇聚层的位置上你用的是最大汇聚层",
    ("unet_up", 0): "→ 第 1 个转置卷积层：输出通道数是 8，应为 4",
    ("unet_up", 1): "→ 第 1 个批量规范化层的输入不同，而第 1 个卷积层的输出一致",
}


def test_every_notebook_exercise_has_candidates():
    """The exercises that are not variants (tests/test_exercise_variants.py has those)."""
    assert list(CANDIDATES) == [n for n, e in exercises.EXERCISES.items() if not e.variant_of]


def test_every_section_has_an_exercise():
    from paddle_cnn.models import REGISTRY

    sections = {spec.section for spec in REGISTRY.values()} - {"best"}   # the chapter's wrap-up: no new block
    assert sections <= set(exercises.SECTION_EXERCISE)
    for section, name in exercises.SECTION_EXERCISE.items():
        assert exercises.EXERCISES[name].section == section
    # A notebook checks the variant it explains but never prints, not the block it prints (issue 37).
    assert exercises.section_exercises("densenet") == ["transition", "dense_bottleneck"]
    assert exercises.SECTION_EXERCISE["resnet"] == "residual_preact" and "residual" not in \
        exercises.section_exercises("resnet")


def _lines(capsys):
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return out.splitlines()


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_right_candidate_and_the_reference_pass(name, capsys):
    right, _ = CANDIDATES[name]
    journal = exercises.Journal()
    assert exercises.check(name, right, journal=journal) is True
    lines = _lines(capsys)
    assert lines[-1] == f"✓ 练习 {name}：通过（{len(exercises.EXERCISES[name].cases)} 组参数）"
    assert not any(line.lstrip().startswith("✗") for line in lines)
    assert any("的梯度" in line for line in lines) or name == "densebox_targets"
    assert exercises.last_results(journal) == {name: "passed"}
    if name != "alexnet":   # two 25 M-parameter networks per argument set: once is enough
        assert exercises.self_check([name], emit=lambda line: None)


@pytest.mark.parametrize("name, index", [(n, i) for n in CANDIDATES for i in range(3)],
                         ids=[f"{n}-{kind}" for n in CANDIDATES for kind in ("wrong_shape", "wrong_value", "raising")])
def test_wrong_candidate_fails_in_one_line(name, index, capsys):
    candidate, expected = CANDIDATES[name][1][index]
    verdict = exercises.run(name, candidate, journal=exercises.Journal())
    assert verdict.status == "failed"
    lines = _lines(capsys)
    assert lines == verdict.lines
    failures = [line.strip() for line in lines if line.lstrip().startswith("✗")]
    assert len(failures) == 2, lines                       # the property, then the exercise's verdict
    assert failures[0].startswith(expected), lines
    assert failures[1] == f"✗ 练习 {name}：尚未通过（见上面第一个 ✗）"
    arrows = [line.strip() for line in lines if line.strip().startswith("→")]
    if (name, index) in PARTS:
        assert len(arrows) == 1 and arrows[0].startswith(PARTS[name, index]), arrows


def test_layers_defined_in_another_order_are_no_structural_difference(capsys):
    """d2l's Residual defines conv1, conv2, conv3, then bn1, bn2: the layers are compared in the order they run."""
    assert exercises.check("residual", residual_wrong_value, journal=exercises.Journal()) is False
    lines = _lines(capsys)
    assert not any("层的种类或顺序不对" in line for line in lines), lines


def test_raising_candidate_names_the_students_line(capsys):
    exercises.check("inception", inception_raising, journal=exercises.Journal())
    line = next(line for line in _lines(capsys) if "出错" in line)
    assert "（你的代码第" in line and "forward：`return paddle.concat([p1, p2, p3, p4][:self.paths], axis=1)`" in line
    exercises.check("transition", transition_raising, journal=exercises.Journal())
    line = next(line for line in _lines(capsys) if "出错" in line)
    assert "transition_raising：`return nn.Sequential(*layers.reverse())" in line


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_scaffold_and_none_are_not_attempted(name, capsys):
    namespace = {"paddle": paddle, "nn": nn, "np": np}
    exec(exercises.scaffold(name), namespace)
    (candidate,) = [v for k, v in namespace.items() if k.startswith(("my_", "My"))]
    assert "raise NotImplementedError" in exercises.scaffold(name)
    journal = exercises.Journal()
    for c in (candidate, None):
        assert exercises.check(name, c, journal=journal) is False
        assert _lines(capsys) == [f"exercise {name}: not attempted yet (fill in the cell above)"]
        assert exercises.last_results(journal)[name] == "not attempted"


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_scaffolds_are_modules_whose_text_the_notebooks_hold(name):
    """Each scaffold is an importable module; a notebook's exercise cell starts with the same text."""
    import importlib
    import json
    from pathlib import Path

    module = importlib.import_module(f"paddle_cnn.exercises.scaffolds.{name}")
    text = exercises.scaffold(name)
    assert text.split("(")[0].split()[-1] in vars(module)
    ex = exercises.EXERCISES[name]
    if not ex.notebook:
        return
    notebook = next((Path(__file__).resolve().parents[1] / "notebooks").glob(f"*_{ex.section}.ipynb"))
    cells = ["".join(c["source"]) for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    assert any(cell.startswith(text) and f'exercises.check("{name}"' in cell for cell in cells), notebook.name


def test_check_leaves_paddles_random_state_alone(capsys):
    paddle.seed(123)
    expected = paddle.rand([3]).numpy()
    paddle.seed(123)
    exercises.check("vgg_block", vgg_block_right, journal=exercises.Journal())
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected)
    _lines(capsys)


def test_not_a_callable_and_unknown_name(capsys):
    assert exercises.check("vgg_block", 3, journal=exercises.Journal()) is False
    assert _lines(capsys) == ["✗ 练习 vgg_block：应传入一个类或函数，你传入的是 int"]
    with pytest.raises(KeyError, match="no exercise 'vgg'; the exercises are: corr2d"):
        exercises.check("vgg", vgg_block_right)


@pytest.mark.parametrize("name", ["residual", "vgg_block", "corr2d"])
def test_the_packages_own_version_is_refused(name, capsys):
    assert exercises.check(name, exercises.reference(name), journal=exercises.Journal()) is False
    lines = _lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"✗ 练习 {name}：你传入的是包里的 paddle_cnn."), lines


def test_a_subclass_of_the_packages_class_is_refused(capsys):
    from paddle_cnn.blocks import Residual

    class Mine(Residual):
        pass

    assert exercises.check("residual", Mine, journal=exercises.Journal()) is False
    assert _lines(capsys) == ["✗ 练习 residual：你传入的是包里的 paddle_cnn.blocks.Residual（或它的子类），"
                              "不是你自己的实现；请在上面的单元格里自己写出来"]


def test_a_block_built_from_the_packages_layers_is_refused(capsys):
    from paddle_cnn.blocks import Residual

    def wrapped(*args, **kwargs):            # a function of the student's that returns the package's layer
        return nn.Sequential(Residual(*args, **kwargs))

    assert exercises.check("residual", wrapped, journal=exercises.Journal()) is False
    failures = [line.strip() for line in _lines(capsys) if line.strip().startswith("✗")]
    assert failures[0] == ("✗ 子层 0 是包里的 paddle_cnn.blocks.Residual：请只用 paddle.nn 的基本层自己搭建，"
                           "不要用包里的实现")


def test_section_results_say_what_ran(capsys):
    journal = exercises.Journal()
    assert exercises.section_results("densenet", journal) == [{"exercise": "transition", "passed": "not run"},
                                                              {"exercise": "dense_bottleneck", "passed": "not run"}]
    exercises.check("dense_block", DenseBlockRight, journal=journal)   # practice: not what the notebook checks
    exercises.check("transition", transition_wrong_value, journal=journal)
    assert exercises.section_results("densenet", journal) == [{"exercise": "transition", "passed": False},
                                                              {"exercise": "dense_bottleneck", "passed": "not run"}]
    assert exercises.section_results("best", journal) == []
    _lines(capsys)


def test_run_returns_the_verdict(capsys):
    verdict = exercises.run("vgg_block", vgg_block_right, journal=exercises.Journal())
    assert verdict.passed and verdict.exercise == "vgg_block" and verdict.section == "vgg"
    assert verdict.lines == _lines(capsys)


def test_homework_record_stores_the_exercise(tmp_path, fake_data, monkeypatch, capsys):
    """A notebook checks in one cell and records in another: record reads this process's journal."""
    import json

    from paddle_cnn import homework
    from paddle_cnn import config_for
    from paddle_cnn.trainer import run

    monkeypatch.setattr(exercises, "JOURNAL", exercises.Journal())
    cfg = config_for("lenet_relu", "smoke", device="cpu", accel="off", batch_size=20)
    result = run(cfg, tmp_path / "scratch", data_dir=fake_data, progress=False, log=None)
    homework.record(result, root=tmp_path / "hw")
    doc = json.loads((tmp_path / "hw" / "lenet" / "results.json").read_text())
    assert doc["runs"]["lenet_relu"]["exercises"] == [{"exercise": "corr2d", "passed": "not run"},
                                                      {"exercise": "lenet_relu", "passed": "not run"}]
    exercises.check("corr2d", corr2d_right)
    doc = homework.record(result, root=tmp_path / "hw")
    assert doc["runs"]["lenet_relu"]["exercises"] == [{"exercise": "corr2d", "passed": True},
                                                      {"exercise": "lenet_relu", "passed": "not run"}]
    _lines(capsys)


class _Odd(nn.Layer):
    """A VGG block whose forward hands back something other than one tensor."""

    def __init__(self, num_convs, in_channels, out_channels, kind="list"):
        super().__init__()
        self.block = vgg_block_right(num_convs, in_channels, out_channels)
        self.kind = kind

    def forward(self, x):
        y = self.block(x)
        return {"list": [y, y], "numpy": y.numpy(), "text": "y"}[self.kind]


@pytest.mark.parametrize("kind, expected", [
    ("list", "✗ 输出：你的返回了 2 个值，应为一个张量"),
    ("numpy", "✗ 梯度：没有梯度到达你的输出（是否离开了 Paddle，例如用了 .numpy()？）"),
    ("text", "✗ 输出：你的返回了 str，应为 paddle.Tensor"),
])
def test_odd_outputs_fail_in_one_line(kind, expected, capsys):
    assert exercises.check("vgg_block", lambda *args: _Odd(*args, kind=kind), journal=exercises.Journal()) is False
    failures = [line.strip() for line in _lines(capsys) if line.lstrip().startswith("✗")]
    assert failures[0] == expected and len(failures) == 2


def test_weights_of_another_shape_are_named(capsys):
    def long_kernels(num_convs, in_channels, out_channels):   # 1x9 kernels: as many weights as 3x3
        layers = []
        for _ in range(num_convs):
            layers += [nn.Conv2D(in_channels, out_channels, (1, 9), padding=(0, 4)), nn.ReLU()]
            in_channels = out_channels
        return nn.Sequential(*layers, nn.MaxPool2D(2, 2))

    assert exercises.check("vgg_block", long_kernels, journal=exercises.Journal()) is False
    lines = [line.strip() for line in _lines(capsys)]
    failures = [line for line in lines if line.startswith("✗")]
    assert failures[0] == ("✗ 权重：你的参数 0.weight [8, 3, 1, 9]、2.weight [8, 8, 1, 9] 在参考实现中没有同形状的对应")
    assert "→ 第 1 个卷积层：卷积核是 1×9，应为 3×3，填充是 0×4，应为 1" in lines


def test_an_object_array_is_named_not_sent(capsys):
    def ragged(boxes, labels, counts, canvas, stride=4):   # one array per scene, packed into an object array
        t = densebox_targets_right(boxes, labels, counts, canvas, stride)
        out = np.empty(len(t), dtype=object)
        out[:] = list(t)
        return out

    assert exercises.check("densebox_targets", ragged, journal=exercises.Journal()) is False
    failures = [line.strip() for line in _lines(capsys) if line.lstrip().startswith("✗")]
    assert failures[0] == "✗ 输出：你的返回了 dtype 为 object 的 NumPy 数组，应为 NumPy 数组"


def test_the_self_check_command(tmp_path):
    """``python -m paddle_cnn.exercises NAME``: 0 when the reference passes; an unknown name is one line, exit 2."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    ok = subprocess.run([sys.executable, "-m", "paddle_cnn.exercises", "vgg_block"], capture_output=True, text=True,
                        env=env, timeout=300)
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1] == "✓ 练习 vgg_block：通过（3 组参数）"
    bad = subprocess.run([sys.executable, "-m", "paddle_cnn.exercises", "vgg"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines()[-1].startswith("no exercise 'vgg'; the exercises are: corr2d, alexnet")
