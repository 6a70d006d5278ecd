"""The variants the notebooks explain but never print (issue 37): each passes a student's right version,
refuses the package's own, and names the part a typical mistake got wrong, in Chinese, without a traceback.

The student-style solutions live here, not in the package or the notebooks.
"""
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from paddle_cnn import exercises


# --------------------------------------------------------------------------- LeNet with ReLU and max-pooling
class LeNetReLU(nn.Layer):
    def __init__(self, num_classes=10, in_channels=1, input_size=28, pad=2):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, 6, 5, padding=pad)
        self.conv2 = nn.Conv2D(6, 16, 5)
        side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * side * side, 120), nn.Linear(120, 84), nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = paddle.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def lenet_no_padding(num_classes=10, in_channels=1, input_size=28):
    return LeNetReLU(num_classes, in_channels, input_size, pad=0)


# --------------------------------------------------------------------------- VGG block with batch norm
def vgg_block_bn_right(num_convs, in_channels, out_channels, bn_every=True, relu_first=False):
    layers = []
    for i in range(num_convs):
        layers.append(nn.Conv2D(in_channels, out_channels, 3, padding=1))
        in_channels = out_channels
        act = [nn.ReLU(), nn.BatchNorm2D(out_channels)] if relu_first else [nn.BatchNorm2D(out_channels), nn.ReLU()]
        if bn_every or i == num_convs - 1:
            layers += act
        else:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.MaxPool2D(2, 2))


def vgg_block_bn_last_only(num_convs, in_channels, out_channels):   # BN after the last convolution only
    return vgg_block_bn_right(num_convs, in_channels, out_channels, bn_every=False)


def vgg_block_bn_relu_first(num_convs, in_channels, out_channels):  # ReLU, then BN
    return vgg_block_bn_right(num_convs, in_channels, out_channels, relu_first=True)


# --------------------------------------------------------------------------- NiN block with batch norm
def nin_block_bn_right(in_channels, out_channels, kernel, stride, padding, bn_1x1=True):
    layers = [nn.Conv2D(in_channels, out_channels, kernel, stride, padding), nn.BatchNorm2D(out_channels), nn.ReLU()]
    for _ in range(2):
        layers.append(nn.Conv2D(out_channels, out_channels, 1))
        layers += [nn.BatchNorm2D(out_channels), nn.ReLU()] if bn_1x1 else [nn.ReLU()]
    return nn.Sequential(*layers)


def nin_block_bn_first_only(in_channels, out_channels, kernel, stride, padding):
    return nin_block_bn_right(in_channels, out_channels, kernel, stride, padding, bn_1x1=False)


# --------------------------------------------------------------------------- Inception with two 3x3
class Inception3x3Right(nn.Layer):
    def __init__(self, in_channels, c1, c2, c3, c4, order=(0, 1, 2, 3), five=False):
        super().__init__()
        self.b1 = nn.Conv2D(in_channels, c1, 1)
        self.b2_1 = nn.Conv2D(in_channels, c2[0], 1)
        self.b2_2 = nn.Conv2D(c2[0], c2[1], 3, padding=1)
        self.b3_1 = nn.Conv2D(in_channels, c3[0], 1)
        if five:
            self.b3_2 = nn.Conv2D(c3[0], c3[1], 5, padding=2)
        else:
            self.b3_2 = nn.Conv2D(c3[0], c3[1], 3, padding=1)
            self.b3_3 = nn.Conv2D(c3[1], c3[1], 3, padding=1)
        self.b4_1 = nn.MaxPool2D(3, 1, 1)
        self.b4_2 = nn.Conv2D(in_channels, c4, 1)
        self.order, self.five = order, five

    def forward(self, x):
        p3 = F.relu(self.b3_2(F.relu(self.b3_1(x))))
        if not self.five:
            p3 = F.relu(self.b3_3(p3))
        paths = [F.relu(self.b1(x)), F.relu(self.b2_2(F.relu(self.b2_1(x)))), p3, F.relu(self.b4_2(self.b4_1(x)))]
        return paddle.concat([paths[i] for i in self.order], axis=1)


def inception_3x3_swapped(*args):        # paths 2 and 3 concatenated the other way round
    return Inception3x3Right(*args, order=(0, 2, 1, 3))


def inception_3x3_kept_5x5(*args):       # the textbook's 5x5 path, not the factorised one
    return Inception3x3Right(*args, five=True)


# --------------------------------------------------------------------------- batch norm, unbiased moving variance
def batch_norm_unbiased_right(X, gamma, beta, moving_mean, moving_var, eps, momentum, training, unbiased=True):
    if not training:
        return gamma * (X - moving_mean) / paddle.sqrt(moving_var + eps) + beta, moving_mean, moving_var
    axes = [0] if len(X.shape) == 2 else [0, 2, 3]
    mean = X.mean(axis=axes, keepdim=True)
    var = X.var(axis=axes, unbiased=False, keepdim=True)
    tracked = X.var(axis=axes, unbiased=unbiased, keepdim=True)
    Y = gamma * (X - mean) / paddle.sqrt(var + eps) + beta
    return Y, momentum * moving_mean + (1 - momentum) * mean.detach(), \
        momentum * moving_var + (1 - momentum) * tracked.detach()


def batch_norm_biased_tracking(*args):   # the notebook's version: tracks the biased variance
    return batch_norm_unbiased_right(*args, unbiased=False)


# --------------------------------------------------------------------------- pre-activation residual block
class PreActRight(nn.Layer):
    def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1, relu_after=False):
        super().__init__()
        self.bn1 = nn.BatchNorm2D(in_channels)
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2D(out_channels)
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1)
        self.conv3 = nn.Conv2D(in_channels, out_channels, 1, stride=stride) if use_1x1conv else None
        self.relu_after = relu_after

    def forward(self, x):
        y = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        y = y + (self.conv3(x) if self.conv3 is not None else x)
        return F.relu(y) if self.relu_after else y


def preact_relu_after_add(in_channels, out_channels, use_1x1conv=False, stride=1):   # the post-activation habit
    return PreActRight(in_channels, out_channels, use_1x1conv, stride, relu_after=True)


# --------------------------------------------------------------------------- bottleneck residual block
class BottleneckRight(nn.Layer):
    def __init__(self, in_channels, mid_channels, out_channels, stride=1, project_bn=True):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, mid_channels, 1)
        self.bn1 = nn.BatchNorm2D(mid_channels)
        self.conv2 = nn.Conv2D(mid_channels, mid_channels, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2D(mid_channels)
        self.conv3 = nn.Conv2D(mid_channels, out_channels, 1)
        self.bn3 = nn.BatchNorm2D(out_channels)
        self.short = None
        if stride != 1 or in_channels != out_channels:
            self.short = nn.Sequential(nn.Conv2D(in_channels, out_channels, 1, stride=stride),
                                       *([nn.BatchNorm2D(out_channels)] if project_bn else []))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


def bottleneck_no_shortcut_bn(*args, **kwargs):
    return BottleneckRight(*args, **kwargs, project_bn=False)


# --------------------------------------------------------------------------- DenseNet-B conv block
def dense_bottleneck_right(in_channels, growth_rate, width=4):
    return nn.Sequential(nn.BatchNorm2D(in_channels), nn.ReLU(), nn.Conv2D(in_channels, width * growth_rate, 1),
                         nn.BatchNorm2D(width * growth_rate), nn.ReLU(),
                         nn.Conv2D(width * growth_rate, growth_rate, 3, padding=1))


def dense_bottleneck_narrow(in_channels, growth_rate):   # the 1x1 convolution to growth_rate, not 4 * growth_rate
    return dense_bottleneck_right(in_channels, growth_rate, width=1)


# --------------------------------------------------------------------------- U-Net up-block, cropped skip
class UpCropRight(nn.Layer):
    def __init__(self, in_channels, skip_channels, out_channels, centre=True, padding=0):
        super().__init__()
        self.up = nn.Conv2DTranspose(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv1 = nn.Conv2D(in_channels // 2 + skip_channels, out_channels, 3, padding=padding)
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=padding)
        self.centre = centre

    def forward(self, x, skip):
        x = self.up(x)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        top, left = (dy // 2, dx // 2) if self.centre else (0, 0)
        skip = skip[:, :, top:top + x.shape[2], left:left + x.shape[3]]
        return F.relu(self.conv2(F.relu(self.conv1(paddle.concat([skip, x], axis=1)))))


def up_crop_corner(*args):                # crops the top-left corner instead of the centre
    return UpCropRight(*args, centre=False)


def up_crop_padded(*args):                # padding 1, as the course's U-Net: nothing to crop, wrong size
    return UpCropRight(*args, padding=1)


# --------------------------------------------------------------------------- DenseBox: boxes from targets
def densebox_boxes_right(targets, stride=4, scale=16.0, unique=True):
    n, _, G, _ = targets.shape
    per_scene = []
    for i in range(n):
        found = []
        for r in range(G):
            for c in range(G):
                if targets[i, 0, r, c] != 1:
                    continue
                cx, cy = (c + 0.5) * stride, (r + 0.5) * stride
                d = targets[i, 2:6, r, c] * scale
                row = (round(cx - d[0]), round(cy - d[1]), round(cx + d[2]), round(cy + d[3]), int(targets[i, 6, r, c]))
                if not unique or row not in found:
                    found.append(row)
        per_scene.append(sorted(found))
    K = max(len(f) for f in per_scene)
    boxes, labels = np.zeros((n, K, 4), np.float32), np.full((n, K), -1, np.int64)
    for i, f in enumerate(per_scene):
        for j, row in enumerate(f):
            boxes[i, j], labels[i, j] = row[:4], row[4]
    return boxes, labels, np.array([len(f) for f in per_scene], np.int64)


def densebox_boxes_every_cell(targets, stride=4):      # one box per positive cell, duplicates kept
    return densebox_boxes_right(targets, stride, unique=False)


def densebox_boxes_unscaled(targets, stride=4):        # distances left in units of 16 pixels
    return densebox_boxes_right(targets, stride, scale=1.0)


# --------------------------------------------------------------------------- the table
# name -> (right, [(typical mistake, its failing property, the line naming the part), ...])
VARIANTS = {
    "lenet_relu": (LeNetReLU, [
        (lenet_no_padding, "✗ 参数量：你的", "→ 第 1 个卷积层：填充是 0，应为 2")]),
    "vgg_block_bn": (vgg_block_bn_right, [
        (vgg_block_bn_last_only, "✗ 参数量：你的 824，应为 840", "→ 第 1 个卷积层后缺少批量规范化层（应为第 1 个批量规范化层）"),
        (vgg_block_bn_relu_first, "✗ 输出值：你的相差最多",
         "→ 第 1 个批量规范化层的输入不同，而第 1 个卷积层的输出一致")]),
    "nin_block_bn": (nin_block_bn_right, [
        (nin_block_bn_first_only, "✗ 参数量：你的", "→ 第 2 个卷积层后缺少批量规范化层（应为第 2 个批量规范化层）")]),
    "inception_3x3": (Inception3x3Right, [
        (inception_3x3_swapped, "✗ 输出值：你的相差最多",
         "→ 路径 2 的输出出现在第 11-15 个通道，应在第 5-9 个通道（连结的顺序不对）"),
        (inception_3x3_kept_5x5, "✗ 参数量：你的",
         "→ 路径 3 的第 2 个卷积层：卷积核是 5×5，应为 3×3，填充是 2，应为 1（参考实现在这里有 2 个带参数的层，你的有 1 个）")]),
    "batch_norm_unbiased": (batch_norm_unbiased_right, [
        (batch_norm_biased_tracking, "✗ moving_var：你的相差最多", None)]),
    "residual_preact": (PreActRight, [
        (preact_relu_after_add, "✗ 输出值：你的相差最多",
         "→ 各层的输入输出都一致：第 2 个卷积层之后的计算有误（是否少了或多了最后的 ReLU")]),
    "residual_bottleneck": (BottleneckRight, [
        (bottleneck_no_shortcut_bn, "✗ 参数量：你的", "→ 第 4 个卷积层后缺少批量规范化层（应为第 4 个批量规范化层）")]),
    "dense_bottleneck": (dense_bottleneck_right, [
        (dense_bottleneck_narrow, "✗ 参数量：你的", "→ 第 1 个卷积层：输出通道数是 3，应为 12")]),
    "densebox_boxes": (densebox_boxes_right, [
        (densebox_boxes_every_cell, "✗ 输出形状：你的", "→ 第 1 个场景的框数：你的 2，应为 1（是否没有去掉重复的框？）"),
        (densebox_boxes_unscaled, "✗ 输出形状：你的",
         "→ 第 1 个场景的框数：你的 2，应为 1（你的框没有一个与参考实现的相同：检查距离的换算（乘以 16，从格子中心算起））")]),
    "unet_up_crop": (UpCropRight, [
        (up_crop_corner, "✗ 输出值：你的相差最多",
         "→ 第 1 个卷积层的输入不同，而第 1 个转置卷积层的输出一致：两者之间的计算有误"),
        (up_crop_padded, "✗ 输出形状：你的 (2, 5, 10, 10)，应为 (2, 5, 6, 6)", "→ 第 1 个卷积层：填充是 1，应为 0")]),
}


def test_every_variant_is_tested_and_a_notebook_checks_the_variant_not_the_printed_block():
    assert sorted(VARIANTS) == sorted(exercises.variants())
    for name in VARIANTS:
        ex = exercises.EXERCISES[name]
        assert ex.variant_of in exercises.EXERCISES
        checked = exercises.section_exercises(ex.section)
        assert (name in checked) == ex.notebook
        if ex.notebook:   # the block the notebook prints is no longer its checked exercise
            assert ex.variant_of not in checked or ex.variant_of == "corr2d", (name, checked)


def _lines(capsys):
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return [line.strip() for line in out.splitlines()]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_right_version_passes(name, capsys):
    right, _ = VARIANTS[name]
    assert exercises.check(name, right, journal=exercises.Journal()) is True
    assert _lines(capsys)[-1] == f"✓ 练习 {name}：通过（{len(exercises.EXERCISES[name].cases)} 组参数）"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_reference_passes_the_self_check_and_is_refused_as_a_candidate(name, capsys):
    assert exercises.self_check([name], emit=lambda line: None)
    assert exercises.check(name, exercises.reference(name), journal=exercises.Journal()) is False
    lines = _lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"✗ 练习 {name}：你传入的是包里的 paddle_cnn.exercises."), lines


@pytest.mark.parametrize("name, index", [(n, i) for n, (_, wrong) in VARIANTS.items() for i in range(len(wrong))])
def test_a_typical_mistake_names_the_part(name, index, capsys):
    candidate, failing, part = VARIANTS[name][1][index]
    assert exercises.check(name, candidate, journal=exercises.Journal()) is False
    lines = _lines(capsys)
    failures = [line for line in lines if line.startswith("✗")]
    assert len(failures) == 2 and failures[0].startswith(failing), lines
    arrows = [line for line in lines if line.startswith("→")]
    if part is None:
        assert not arrows, lines
    else:
        assert len(arrows) == 1 and arrows[0].startswith(part), lines


def test_a_subclass_of_a_variant_reference_is_refused(capsys):
    from paddle_cnn.exercises.references import PreActResidual

    class Mine(PreActResidual):
        pass

    assert exercises.check("residual_preact", Mine, journal=exercises.Journal()) is False
    assert _lines(capsys) == ["✗ 练习 residual_preact：你传入的是包里的 paddle_cnn.exercises.references.PreActResidual"
                              "（或它的子类），不是你自己的实现；请在上面的单元格里自己写出来"]


def test_no_notebook_prints_a_variant_reference():
    """The references are held under names no notebook shows with inspect.getsource."""
    import json
    import re
    from pathlib import Path

    shown = set()
    for path in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            shown |= set(re.findall(r"getsource\(([\w.]+)\)", "".join(cell["source"])))
    names = {exercises.reference(n).__name__ for n in VARIANTS}
    assert not names & {s.split(".")[-1] for s in shown}
    text = "".join(p.read_text(encoding="utf-8") for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
    assert "exercises.references" not in text


# --------------------------------------------------------------------------- the course's sample answers
ANSWERS = Path(__file__).resolve().parents[1] / "tools" / "answers"


def _answer(name: str):
    """The object a sample answer's cell defines, run as a notebook runs it (paddle, nn and F in scope)."""
    text = (ANSWERS / f"{name}.py").read_text(encoding="utf-8")
    scope = {"paddle": paddle, "nn": nn, "F": F}
    exec(compile(text, str(ANSWERS / f"{name}.py"), "exec"), scope)
    defined = exercises.scaffold(name).split("(")[0].split()[-1]
    return scope[defined]


def test_every_checked_variant_with_a_network_has_a_sample_answer():
    """The executed chapter records a student run for each of these, from tools/answers/ (answer_key.py)."""
    from paddle_cnn.homework.student import SLOTS

    wanted = {s.exercise for s in SLOTS.values() if s.exercise in exercises.variants() and
              s.exercise in exercises.section_exercises(s.section)}
    assert wanted <= {p.stem for p in ANSWERS.glob("*.py")}


@pytest.mark.parametrize("name", sorted(p.stem for p in ANSWERS.glob("*.py")))
def test_a_sample_answer_passes_its_check(name, capsys):
    assert exercises.check(name, _answer(name), journal=exercises.Journal()), capsys.readouterr().out
