"""Block diagrams of the chapter's architectures, drawn with matplotlib into ``notebooks/figures/``.

    python tools/diagrams.py            # regenerate every figure
    python tools/diagrams.py --out DIR  # write them somewhere else (the test does this)

The figures are SVG with text kept as text (``svg.fonttype = "none"``), so the
browser (or Jupyter) renders the labels, which are Simplified Chinese with
d2l-zh's terms. matplotlib lays the text out with DejaVu Sans only (it ships
with matplotlib, so every machine draws the same bytes; it has no Chinese
glyphs, hence the silenced "missing glyph" warnings); every label is drawn
one line per text element, centred by the SVG ``text-anchor`` rather than by
matplotlib's width estimate, and the written ``font-family`` adds CJK faces
after DejaVu Sans (``CJK_FONTS``) so the reader's browser picks one it has.
Output is deterministic: no date, no creator string, a fixed hash salt for
element ids, so ``tests/test_diagrams.py`` can compare bytes and fail when a
committed figure is stale (each file names the matplotlib major.minor that
drew it; the test compares only under that version). Each figure is one
function below; the numbers written into the boxes are the course settings
of the package's models.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks" / "figures"
RC = {"svg.fonttype": "none", "svg.hashsalt": "paddle-cnn", "font.family": "DejaVu Sans", "font.size": 9,
      "path.simplify": False}
# Written after DejaVu Sans into every text element's font-family: the browser takes Latin glyphs from the
# first face it has and each Chinese glyph from the first CJK face it has (Linux, macOS, Windows names).
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei",
             "sans-serif")
# The drawing library's major.minor goes into the file: other versions may lay out the same figure
# differently, and the staleness test only compares bytes drawn by the same version.
DRAWN_WITH = "matplotlib " + ".".join(matplotlib.__version__.split(".")[:2])
METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None, "Description": DRAWN_WITH}
UNIT = 0.22  # inches per drawing unit
LINE = 1.25 / (UNIT * 72)  # drawing units per point of font size: the distance between two lines of a label

# One colour per kind of layer, the same in every figure.
COLORS = {"conv": "#cfe3f7", "pool": "#f9dfc4", "fc": "#d9ecd0", "norm": "#efe0f3", "io": "#eeeeee",
          "op": "#fff3b0", "act": "#f6d2d2"}
GREY = "#555555"


def canvas(width: float, height: float):
    fig = plt.figure(figsize=(width * UNIT, height * UNIT))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def label(ax, x, y, text, size=8, **kw):
    """Text at (x, y), one text element per line so that the SVG's text-anchor, not matplotlib's estimate of
    the width of glyphs DejaVu Sans does not have, centres (or right-aligns) each line."""
    ha, va = kw.pop("ha", "center"), kw.pop("va", "center")
    lines = text.split("\n")
    step = LINE * size
    if va == "top":
        first = y - step / 2
    elif va == "bottom":
        first = y + step / 2 + (len(lines) - 1) * step
    else:
        first = y + (len(lines) - 1) * step / 2
    for i, line in enumerate(lines):
        ax.text(x, first - i * step, line, ha=ha, va="center", fontsize=size, **kw)


def box(ax, x, y, w, h, text, kind="conv", size=8, weight="normal"):
    """A rounded box centred at (x, y) with its label; returns (top, bottom, left, right) anchor points."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.25",
                                facecolor=COLORS[kind], edgecolor="#333333", linewidth=0.8))
    label(ax, x, y, text, size, fontweight=weight)
    return {"top": (x, y + h / 2), "bottom": (x, y - h / 2), "left": (x - w / 2, y), "right": (x + w / 2, y)}


def arrow(ax, start, end, color="#333333", style="-|>", rad=0.0, lw=0.9, dashed=False):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=8, color=color, linewidth=lw,
                                 connectionstyle=f"arc3,rad={rad}", linestyle="--" if dashed else "-",
                                 shrinkA=0, shrinkB=0))


def line(ax, xs, ys, color="#333333", lw=0.9):
    ax.plot(xs, ys, color=color, lw=lw, solid_capstyle="butt")


def column(ax, x, top, layers, w=9.0, h=1.6, gap=0.8, size=8):
    """A vertical stack of (text, kind) boxes from ``top`` down, joined by arrows; returns the anchors."""
    anchors, y = [], top
    for text, kind in layers:
        a = box(ax, x, y, w, h, text, kind, size=size)
        if anchors:
            arrow(ax, anchors[-1]["bottom"], a["top"])
        anchors.append(a)
        y -= h + gap
    return anchors


def bracket(ax, x, top, bottom, text, size=8, side="left"):
    """A square bracket spanning ``top``..``bottom`` at ``x`` with its label beside it (stage names)."""
    d = 0.4 if side == "left" else -0.4
    line(ax, [x + d, x, x, x + d], [top, top, bottom, bottom], color=GREY, lw=0.8)
    label(ax, x - 0.3 if side == "left" else x + 0.3, (top + bottom) / 2, text, size,
          ha="right" if side == "left" else "left", color=GREY)


# --- the figures ------------------------------------------------------------------------------------------

def alexnet_lenet(ax=None):
    """LeNet (28x28) beside AlexNet (224x224 ImageNet): depth, width, the 5 conv + 3 FC of AlexNet."""
    fig, ax = canvas(26, 31)
    lenet = [("图像 28×28×1", "io"), ("5×5 卷积, 6, 填充 2, sigmoid", "conv"), ("2×2 平均汇聚层, 步幅 2", "pool"),
             ("5×5 卷积, 16, sigmoid", "conv"), ("2×2 平均汇聚层, 步幅 2", "pool"), ("全连接 120, sigmoid", "fc"),
             ("全连接 84, sigmoid", "fc"), ("全连接 10", "fc")]
    alex = [("图像 224×224×3", "io"), ("11×11 卷积, 96, 步幅 4, ReLU", "conv"),
            ("3×3 最大汇聚层, 步幅 2", "pool"), ("5×5 卷积, 256, 填充 2, ReLU", "conv"),
            ("3×3 最大汇聚层, 步幅 2", "pool"), ("3×3 卷积, 384, 填充 1, ReLU", "conv"),
            ("3×3 卷积, 384, 填充 1, ReLU", "conv"), ("3×3 卷积, 256, 填充 1, ReLU", "conv"),
            ("3×3 最大汇聚层, 步幅 2", "pool"), ("全连接 4096, ReLU, 暂退法", "fc"),
            ("全连接 4096, ReLU, 暂退法", "fc"), ("全连接 1000", "fc")]
    label(ax, 6.5, 30, "LeNet", 11, fontweight="bold")
    label(ax, 19, 30, "AlexNet", 11, fontweight="bold")
    column(ax, 6.5, 28.3, lenet, w=11.5, h=1.5, gap=0.8)
    column(ax, 19, 28.3, alex, w=12.5, h=1.5, gap=0.8)
    label(ax, 6.5, 7.5, "2 个卷积层 + 3 个全连接层\n卷积层通道数 6、16", 8, color=GREY)
    label(ax, 6.5, 4.2, "AlexNet：5 个卷积层 + 3 个全连接层\n= 8 层；卷积层通道数 96–384\n（LeNet 的 16–24 倍）", 8,
          color=GREY)
    return fig


VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))   # paddle_cnn/models/vgg.py


def vgg(ax=None):
    """A VGG block (left) and VGG-11 built from five of them, as the course trains it (224x224, 1 channel)."""
    fig, ax = canvas(32, 25)
    label(ax, 7, 24, "VGG 块", 11, fontweight="bold")
    block = column(ax, 7, 20.8, [("3×3 卷积, 填充 1", "conv"), ("ReLU", "act"), ("2×2 最大汇聚层, 步幅 2", "pool")],
                   w=11, h=1.5, gap=0.9)
    top, bottom = block[0]["top"][1] + 0.5, block[1]["bottom"][1] - 0.45
    ax.add_patch(Rectangle((0.8, bottom), 12.4, top - bottom, fill=False, linestyle="--", edgecolor="#777777"))
    label(ax, 7, top + 0.6, "虚线框内重复 num_convs 次", 7, color=GREY)
    label(ax, 7, 11.0, "卷积保持高宽，只改变通道数；\n块末的汇聚层把高宽减半。\n\nVGG-11 的架构表\n"
                       "((1, 64), (1, 128), (2, 256),\n (2, 512), (2, 512))\n每行是 (卷积层数, 输出通道数)", 8, color=GREY)
    label(ax, 22.5, 24, "VGG-11", 11, fontweight="bold")
    layers, side = [("图像 224×224×1", "io")], 224
    for i, (convs, channels) in enumerate(VGG11_ARCH, 1):
        side //= 2
        layers.append((f"VGG 块 {i}：{convs} 个卷积, {channels}\n→ {channels}×{side}×{side}", "conv"))
    layers += [("全连接 4096, ReLU, 暂退法", "fc"), ("全连接 4096, ReLU, 暂退法", "fc"), ("全连接 10", "fc")]
    column(ax, 22.5, 22.2, layers, w=13, h=1.6, gap=0.7)
    label(ax, 22.5, 1.2, "8 个卷积层 + 3 个全连接层 = 11 层", 8, color=GREY)
    return fig


def nin_vgg(ax=None):
    """A VGG block and VGG's fully connected head beside a NiN block and NiN's global average pooling."""
    fig, ax = canvas(30, 27)
    label(ax, 7.5, 26, "VGG", 11, fontweight="bold")
    label(ax, 22.5, 26, "NiN", 11, fontweight="bold")
    vgg_block = column(ax, 7.5, 24, [("3×3 卷积, ReLU", "conv"), ("3×3 卷积, ReLU", "conv"),
                                     ("2×2 最大汇聚层, 步幅 2", "pool")], w=11, h=1.5, gap=0.7)
    nin = column(ax, 22.5, 24, [("卷积（11×11 / 5×5 / 3×3）, ReLU", "conv"), ("1×1 卷积, ReLU", "conv"),
                                ("1×1 卷积, ReLU", "conv")], w=12.5, h=1.5, gap=0.7)
    for anchors, x, name in ((vgg_block, 7.5, "VGG 块（卷积重复 num_convs 次）"), (nin, 22.5, "NiN 块")):
        top, bottom = anchors[0]["top"][1] + 0.6, anchors[-1]["bottom"][1] - 0.6
        ax.add_patch(Rectangle((x - 7, bottom), 14, top - bottom, fill=False, linestyle="--", edgecolor="#777777"))
        label(ax, x, bottom - 0.8, name, 8, color=GREY)
    column(ax, 7.5, 14, [("VGG 块 × 5", "conv"), ("全连接 4096, ReLU, 暂退法", "fc"),
                         ("全连接 4096, ReLU, 暂退法", "fc"), ("全连接 1000", "fc")], w=11.5, h=1.5, gap=0.7)
    column(ax, 22.5, 14, [("NiN 块 × 3, 各接 3×3 最大汇聚层", "conv"), ("暂退法 0.5", "act"),
                          ("NiN 块, 输出通道数 = 类别数", "conv"), ("全局平均汇聚层", "pool")],
           w=13.5, h=1.5, gap=0.7)
    label(ax, 7.5, 4.2, "展平 → 很宽的全连接层\n（绝大部分参数在这里）", 8, color=GREY)
    label(ax, 22.5, 4.2, "每个类别一个通道，\n平均成一个得分：没有全连接层", 8, color=GREY)
    return fig


def inception(ax=None):
    """The Inception block: four paths, every one keeping H x W, concatenated on channels (first b3 block).

    The input feeds a horizontal bus above the paths and every path drops straight down from it, so no line
    passes behind a box of another path; the shape labels sit beside the vertical arrows, not on them.
    """
    fig, ax = canvas(36, 18)
    inp = box(ax, 18, 16.3, 12, 1.5, "输入  [192, H, W]", "io")
    xs = (4.5, 13.5, 22.5, 31.5)
    paths = [[("1×1 卷积, 64", "conv")],
             [("1×1 卷积, 96", "conv"), ("3×3 卷积, 128, 填充 1", "conv")],
             [("1×1 卷积, 16", "conv"), ("5×5 卷积, 32, 填充 2", "conv")],
             [("3×3 最大汇聚层, 步幅 1", "pool"), ("1×1 卷积, 32", "conv")]]
    shapes = ("[64, H, W]", "[128, H, W]", "[32, H, W]", "[32, H, W]")
    bus, rows = 14.0, (11.5, 8.0)            # the bus height; centres of the first and second row of boxes
    line(ax, [18, 18], [inp["bottom"][1], bus])
    line(ax, [xs[0], xs[-1]], [bus, bus])
    out = box(ax, 18, 2.6, 33, 1.5, "在通道维上连结  [256, H, W]", "op")
    for x, layers, shape in zip(xs, paths, shapes):
        first = rows[0] if len(layers) == 2 else rows[1]
        anchors = column(ax, x, first, layers, w=8, h=1.5, gap=rows[0] - rows[1] - 1.5)
        arrow(ax, (x, bus), anchors[0]["top"])
        arrow(ax, anchors[-1]["bottom"], (x, out["top"][1]))
        label(ax, x + 0.4, (anchors[-1]["bottom"][1] + out["top"][1]) / 2, shape, 7, color=GREY, ha="left")
    label(ax, 18, 0.8, "64 + 128 + 32 + 32 = 256 个通道；每个卷积之后都有 ReLU", 8, color=GREY)
    return fig


def googlenet(ax=None):
    """GoogLeNet as the course trains it (96x96, 1 channel): stages b1-b5, nine Inception blocks, the shapes."""
    stages = [("b1", [("7×7 卷积, 64, 步幅 2", "conv"), ("3×3 最大汇聚层, 步幅 2", "pool")], "64×24×24"),
              ("b2", [("1×1 卷积, 64", "conv"), ("3×3 卷积, 192, 填充 1", "conv"),
                      ("3×3 最大汇聚层, 步幅 2", "pool")], "192×12×12"),
              ("b3", [("Inception 块 → 256", "op"), ("Inception 块 → 480", "op"),
                      ("3×3 最大汇聚层, 步幅 2", "pool")], "480×6×6"),
              ("b4", [(f"Inception 块 → {c}", "op") for c in (512, 512, 512, 528, 832)]
               + [("3×3 最大汇聚层, 步幅 2", "pool")], "832×3×3"),
              ("b5", [("Inception 块 → 832", "op"), ("Inception 块 → 1024", "op"),
                      ("全局平均汇聚层", "pool")], "1024×1×1")]
    h, gap = 1.1, 0.42
    rows = 2 + sum(len(layers) for _, layers, _ in stages)
    height = rows * (h + gap) + 3.2
    fig, ax = canvas(30, height)
    label(ax, 15, height - 0.8, "GoogLeNet（教材设置：输入 96×96×1）", 10, fontweight="bold")
    layers = [("图像 96×96×1", "io")] + [layer for _, ls, _ in stages for layer in ls] + [("全连接 10", "fc")]
    anchors = column(ax, 15, height - 2.4, layers, w=11, h=h, gap=gap, size=7.5)
    i = 1
    for name, ls, shape in stages:
        top, bottom = anchors[i]["top"][1] + 0.1, anchors[i + len(ls) - 1]["bottom"][1] - 0.1
        bracket(ax, 8.8, top, bottom, name, 9)
        label(ax, 21.3, anchors[i + len(ls) - 1]["right"][1], f"→ {shape}", 7.5, color=GREY, ha="left")
        i += len(ls)
    label(ax, 15, 0.7, "黄色：Inception 块（四条路径在通道维上连结），箭头右边是各阶段的输出形状", 7, color=GREY)
    return fig


def function_classes(ax=None):
    """Nested function classes F1 in F2 in ... (left) versus classes that do not nest (right)."""
    fig, ax = canvas(30, 14)
    star = dict(marker="*", markersize=11, color="#c0392b", linestyle="none")
    for i in range(4):                        # each class contains the previous one and grows towards f*
        cx, cy, w, h = 5 + i * 1.0, 6 + i * 0.5, 3 + 2.5 * i, 2.2 + 1.8 * i
        ax.add_patch(Ellipse((cx, cy), w, h, fill=False, edgecolor="#1f5f99", linewidth=1.0))
        label(ax, cx, cy + h / 2 - 0.55, f"F{i + 1}", 8, color="#1f5f99")
    ax.plot([13.5], [10.5], **star)
    label(ax, 14.3, 11.2, "f*", 9, color="#c0392b")
    label(ax, 7.5, 0.9, "嵌套：F1 ⊆ F2 ⊆ F3 ⊆ F4，\n函数类越大，离 f* 只会越近", 8)
    # (centre, (width, height), angle, where the name goes: just outside the ellipse, clear of the others)
    classes = (((18.4, 4.6), (4.0, 2.8), 0, (15.7, 4.6)), ((21.2, 6.6), (6.0, 3.6), 25, (18.2, 8.2)),
               ((24.0, 4.6), (6.5, 3.8), -20, (27.9, 3.2)), ((21.4, 10.0), (8.5, 3.0), 5, (21.4, 12.2)))
    for i, ((cx, cy), (w, h), angle, (lx, ly)) in enumerate(classes):
        ax.add_patch(Ellipse((cx, cy), w, h, angle=angle, fill=False, edgecolor="#8e44ad", linewidth=1.0))
        label(ax, lx, ly, f"F{i + 1}", 8, color="#8e44ad")
    ax.plot([27.5], [11.0], **star)
    label(ax, 28.3, 11.7, "f*", 9, color="#c0392b")
    label(ax, 22.5, 0.9, "不嵌套：函数类更大，\n却可能离 f* 更远", 8)
    return fig


def residual(ax=None):
    """The residual block f(x) = x + g(x), without and with the 1x1 convolution on the shortcut."""
    fig, ax = canvas(31, 20)
    for x, shortcut, title in ((7, None, "Residual(c, c)"), (22, "1×1 卷积,\n步幅 s", "Residual(c_in, c_out,\n"
                                                                                "use_1x1conv=True, stride=s)")):
        label(ax, x, 19, title, 9, fontweight="bold")
        first = "3×3 卷积, 步幅 s" if shortcut else "3×3 卷积"
        a = column(ax, x - 1.5, 16.5, [("x", "io"), (first, "conv"), ("批量规范化", "norm"),
                                       ("ReLU", "act"), ("3×3 卷积", "conv"), ("批量规范化", "norm")],
                   w=8, h=1.3, gap=0.55)
        plus = box(ax, x - 1.5, a[-1]["bottom"][1] - 1.4, 2, 1.1, "+", "op", size=11, weight="bold")
        arrow(ax, a[-1]["bottom"], plus["top"])
        relu = box(ax, x - 1.5, plus["bottom"][1] - 1.3, 8, 1.3, "ReLU", "act")
        arrow(ax, plus["bottom"], relu["top"])
        right = x + 5.2
        line(ax, [a[0]["right"][0], right], [a[0]["right"][1]] * 2)
        if shortcut:
            sc = box(ax, right, 9.5, 3.6, 2.0, shortcut, "conv", size=7)
            line(ax, [right, right], [a[0]["right"][1], sc["top"][1]])
            line(ax, [right, right], [sc["bottom"][1], plus["right"][1]])
        else:
            line(ax, [right, right], [a[0]["right"][1], plus["right"][1]])
            label(ax, right + 0.4, 9.5, "恒等映射", 7, ha="left", color=GREY)
        arrow(ax, (right, plus["right"][1]), plus["right"])
        label(ax, x - 1.5, 0.5, "g(x)：权重层学习的是残差", 7, color=GREY)
    return fig


def resnet18(ax=None):
    """ResNet-18 as the course trains it (96x96, 1 channel): the stem, four stages of two residual blocks."""
    stages = [("阶段 1", 64, False, "64×24×24"), ("阶段 2", 128, True, "128×12×12"),
              ("阶段 3", 256, True, "256×6×6"), ("阶段 4", 512, True, "512×3×3")]
    layers = [("图像 96×96×1", "io"), ("7×7 卷积, 64, 步幅 2, 填充 3", "conv"), ("批量规范化, ReLU", "norm"),
              ("3×3 最大汇聚层, 步幅 2", "pool")]
    for _, c, down, _ in stages:
        first = f"残差块 {c}, 步幅 2（捷径 1×1 卷积）" if down else f"残差块 {c}"
        layers += [(first, "conv"), (f"残差块 {c}", "conv")]
    layers += [("全局平均汇聚层", "pool"), ("全连接 10", "fc")]
    h, gap = 1.2, 0.5
    height = len(layers) * (h + gap) + 3.0
    fig, ax = canvas(32, height)
    label(ax, 16, height - 0.8, "ResNet-18（教材设置：输入 96×96×1）", 10, fontweight="bold")
    anchors = column(ax, 16, height - 2.4, layers, w=13, h=h, gap=gap, size=7.5)
    bracket(ax, 9.0, anchors[1]["top"][1] + 0.1, anchors[3]["bottom"][1] - 0.1, "开头", 9)
    label(ax, 22.8, anchors[3]["right"][1], "→ 64×24×24", 7.5, color=GREY, ha="left")
    for k, (name, _, _, shape) in enumerate(stages):
        a, b = anchors[4 + 2 * k], anchors[5 + 2 * k]
        bracket(ax, 9.0, a["top"][1] + 0.1, b["bottom"][1] - 0.1, name, 9)
        label(ax, 22.8, b["right"][1], f"→ {shape}", 7.5, color=GREY, ha="left")
    label(ax, 16, 0.7, "每个残差块：两个 3×3 卷积（各接批量规范化）加上捷径；\n1 + 4×2×2 + 1 = 18 个带权重的层（不计捷径上的 1×1 卷积）",
          7, color=GREY)
    return fig


def fashion_resnet(ax=None):
    """The best model's network (28x28, 1 channel): a 3x3 stem and three residual stages at full resolution."""
    layers = [("图像 28×28×1", "io"), ("3×3 卷积, 32, 填充 1", "conv"), ("批量规范化, ReLU", "norm"),
              ("残差块 32", "conv"), ("残差块 32", "conv"),
              ("残差块 64, 步幅 2（捷径 1×1 卷积）", "conv"), ("残差块 64", "conv"),
              ("残差块 128, 步幅 2（捷径 1×1 卷积）", "conv"), ("残差块 128", "conv"),
              ("全局平均汇聚层", "pool"), ("暂退法", "act"), ("全连接 10", "fc")]
    h, gap = 1.2, 0.5
    height = len(layers) * (h + gap) + 3.0
    fig, ax = canvas(32, height)
    label(ax, 16, height - 0.8, "FashionResNet（本章最好的模型，cpu 配置档）", 10, fontweight="bold")
    anchors = column(ax, 16, height - 2.4, layers, w=13, h=h, gap=gap, size=7.5)
    for k, (a, b, name, shape) in enumerate(((1, 2, "开头", "32×28×28"), (3, 4, "阶段 1", "32×28×28"),
                                             (5, 6, "阶段 2", "64×14×14"), (7, 8, "阶段 3", "128×7×7"))):
        bracket(ax, 9.0, anchors[a]["top"][1] + 0.1, anchors[b]["bottom"][1] - 0.1, name, 9)
        label(ax, 22.8, anchors[b]["right"][1], f"→ {shape}", 7.5, color=GREY, ha="left")
    label(ax, 16, 0.7, "没有 7×7 卷积和最大汇聚层：28×28 的分辨率一直保留到第一个阶段结束", 7, color=GREY)
    return fig


def densenet(ax=None):
    """ResNet adds, DenseNet concatenates: a dense block's channels grow by the growth rate, a transition cuts."""
    fig, ax = canvas(34, 23)
    label(ax, 6, 22.2, "ResNet：相加", 10, fontweight="bold")
    x = box(ax, 2.5, 16.5, 3, 1.5, "x", "io")
    g = box(ax, 7, 16.5, 3.5, 1.5, "g(x)", "conv")
    plus = box(ax, 7, 13, 1.6, 1.2, "+", "op", size=11, weight="bold")
    arrow(ax, x["right"], g["left"])
    arrow(ax, x["bottom"], plus["left"], rad=0.3)
    arrow(ax, g["bottom"], plus["top"])
    label(ax, 7, 11.3, "x + g(x)：通道数不变", 7, color=GREY)
    label(ax, 23, 22.2, "DenseNet：连结", 10, fontweight="bold")
    names = ("x", "f1", "f2", "f3")
    for i, name in enumerate(names):
        box(ax, 16 + i * 3.2, 16.5, 2.8, 1.5, name, "io" if i == 0 else "conv")
    label(ax, 21, 14.6, "[x, f1(x), f2([x, f1]), f3([x, f1, f2])]：每一层都看得到前面所有层的输出", 7,
          color=GREY)
    for i in range(1, 4):
        for j in range(i):
            arrow(ax, (16 + j * 3.2, 17.3), (16 + i * 3.2, 17.3), rad=-0.35 - 0.1 * (i - j), lw=0.7)
    # channel growth inside one dense block of the course model: 64 in, 4 conv blocks, growth 32, then a transition
    label(ax, 17, 10, "DenseNet 的第一个稠密块（4 个卷积块，增长率 32）和过渡层", 8, fontweight="bold")
    widths, left = (64, 96, 128, 160, 192), 2.0
    for i, c in enumerate(widths):
        h = c / 32
        ax.add_patch(Rectangle((left + i * 5.0, 2.5), 3.2, h, facecolor=COLORS["conv"], edgecolor="#333333",
                               linewidth=0.8))
        ax.add_patch(Rectangle((left + i * 5.0, 2.5), 3.2, 2.0, facecolor="#a9c8e8", edgecolor="#333333",
                               linewidth=0.8))
        label(ax, left + i * 5.0 + 1.6, 2.5 + h + 0.6, f"{c} 通道", 7)
        if i:
            arrow(ax, (left + i * 5.0 - 1.7, 4.0), (left + i * 5.0 - 0.1, 4.0))
            label(ax, left + i * 5.0 - 0.9, 1.6, "+32", 7, color=GREY)
    tr = box(ax, 28, 4.0, 4.6, 2.6, "过渡层\n批量规范化, ReLU,\n1×1 卷积,\n2×2 平均汇聚", "pool", size=6)
    arrow(ax, (left + 4 * 5.0 + 3.3, 4.0), tr["left"])
    ax.add_patch(Rectangle((31.2, 2.5), 1.6, 3.0, facecolor=COLORS["conv"], edgecolor="#333333", linewidth=0.8))
    arrow(ax, tr["right"], (31.2, 4.0))
    label(ax, 32, 6.3, "96 通道\nH/2", 7)
    label(ax, 17, 0.6, "前 64 个通道是块的输入，原样保留；每个卷积块（批量规范化, ReLU, 3×3 卷积）增加 32 个通道",
          7, color=GREY)
    return fig


def unet(ax=None):
    """The U: an encoder halving the side and doubling the width, a decoder back up, skips across."""
    fig, ax = canvas(42, 22)
    widths, side = (16, 32, 64, 128, 256), 64
    levels = len(widths)
    enc_x, dec_x, level_y = (lambda i: 8 + i * 2.6), (lambda i: 34 - i * 2.6), (lambda i: 17.5 - i * 3.6)
    decoders = {}
    for i in reversed(range(levels - 1)):       # decoder levels from the bottom up
        w, s = widths[i], side // 2 ** i
        decoders[i] = box(ax, dec_x(i), level_y(i), 8.4, 1.7, f"连结 {w}+{w}, 2 个 3×3 卷积, {w}\n{s}×{s}", "conv",
                          size=6.5)
    for i, w in enumerate(widths):
        s = side // 2 ** i
        x = enc_x(i) if i < levels - 1 else 21
        enc = box(ax, x, level_y(i), 6.4, 1.7, f"2 个 3×3 卷积, {w}\n{s}×{s}", "conv", size=7)
        if i:
            arrow(ax, (enc_x(i - 1), level_y(i - 1) - 0.85), enc["top"], color="#c0392b")
        if i < levels - 1:
            arrow(ax, enc["right"], decoders[i]["left"], color="#1f5f99", dashed=True)
        if i == levels - 1:
            arrow(ax, enc["right"], decoders[i - 1]["bottom"], color="#27ae60")
        elif i:
            arrow(ax, decoders[i]["top"], decoders[i - 1]["bottom"], color="#27ae60")
    label(ax, enc_x(0) - 0.6, level_y(0) - 1.9, "2×2 最大汇聚层", 6.5, color="#c0392b", ha="right")
    label(ax, dec_x(0) + 0.6, level_y(0) - 1.9, "2×2 转置卷积", 6.5, color="#27ae60", ha="left")
    inp = box(ax, 2.6, level_y(0) + 2.3, 4.4, 1.1, "图像 64×64", "io", size=7)
    arrow(ax, inp["bottom"], (enc_x(0) - 3.2, level_y(0)), rad=0.3)
    out = box(ax, 39.2, level_y(0) + 2.3, 4.4, 1.1, "1×1 卷积, 11", "fc", size=7)
    arrow(ax, decoders[0]["right"], out["bottom"], rad=0.3)
    label(ax, 21, 1.0, "红：向下（边长 ÷2，通道 ×2）；绿：向上（边长 ×2，通道 ÷2）；"
                       "蓝色虚线：跳跃连接（连结）", 7, color=GREY)
    label(ax, 21, 21.0, "U-Net（教材宽度：基础宽度 16，深度 4，64×64 的场景）", 9, fontweight="bold")
    return fig


def batchnorm_axes(ax=None):
    """Which axes batch norm averages over: N for a fully connected layer, N, H and W for a convolution."""
    fig, ax = canvas(35, 16)
    label(ax, 8, 15, "全连接层：X 的形状是 [N, C]", 9, fontweight="bold")
    n, c = 6, 5
    for i in range(n):
        for j in range(c):
            hot = j == 2
            ax.add_patch(Rectangle((3 + j * 1.6, 3 + i * 1.5), 1.6, 1.5, facecolor="#f4b183" if hot else "white",
                                   edgecolor="#333333", linewidth=0.6))
    label(ax, 7, 13, "C 个特征 →", 8)
    label(ax, 1.8, 7.5, "N 个样本", 8, rotation=90)
    label(ax, 7, 1.5, "每个特征一个均值和方差，\n沿这一列（N）求", 8)
    label(ax, 25, 15, "卷积层：X 的形状是 [N, C, H, W]", 9, fontweight="bold")
    for s in range(3):                       # three samples, each a stack of 4 channel planes
        x0 = 18 + s * 5.6
        for ch in range(4):
            hot = ch == 1
            ax.add_patch(Rectangle((x0 + ch * 0.55, 5 + ch * 1.3), 3.2, 3.2,
                                   facecolor="#f4b183" if hot else "white", edgecolor="#333333", linewidth=0.6))
        label(ax, x0 + 2.4, 4.2, f"样本 {s + 1}", 7)
    label(ax, 26.5, 12.5, "每个样本的第 2 个通道，所有 H×W 个位置", 7, color="#a04000")
    label(ax, 25.5, 1.5, "每个通道一个均值和方差，\n沿 N、H、W 求", 8)
    return fig


def densebox_output(ax=None):
    """DenseBox's output map: stride 4, at each cell a confidence and four distances to the box's sides."""
    fig, ax = canvas(30, 16)
    label(ax, 6.5, 15, "输入 S×S", 9, fontweight="bold")
    ax.add_patch(Rectangle((1, 2), 11, 11, facecolor="#f2f2f2", edgecolor="#333333"))
    ax.add_patch(Rectangle((3.5, 4.5), 5.5, 6.5, fill=False, edgecolor="#c0392b", linewidth=1.2))
    label(ax, 6.25, 11.6, "边界框 (x1, y1, x2, y2)", 7, color="#c0392b")
    cx, cy = 6.0, 7.2
    ax.plot([cx], [cy], marker="o", color="#1f5f99", markersize=4)
    for end, name, pos in (((3.5, cy), "d1", (4.7, cy + 0.5)), ((cx, 11.0), "d2", (cx + 0.5, 9.8)),
                           ((9.0, cy), "d3", (7.6, cy + 0.5)), ((cx, 4.5), "d4", (cx + 0.5, 5.6))):
        arrow(ax, (cx, cy), end, color="#1f5f99", lw=0.8)
        label(ax, *pos, name, 7, color="#1f5f99")
    label(ax, 6.5, 0.9, "格子中心 (cx, cy)：d1 = cx − x1，d2 = cy − y1，\nd3 = x2 − cx，d4 = y2 − cy", 7)
    arrow(ax, (12.8, 7.5), (15.2, 7.5))
    label(ax, 14, 8.3, "全卷积网络, 步幅 4", 7)
    label(ax, 23, 15, "输出图 S/4 × S/4", 9, fontweight="bold")
    for k, (name, kind) in enumerate((("置信度 (1)", "op"), ("距离 (4)", "conv"), ("类别 (10)", "fc"))):
        x0 = 16.5 + k * 4.4
        for g in range(5):
            for h in range(5):
                ax.add_patch(Rectangle((x0 + g * 0.7, 5 + h * 0.7), 0.7, 0.7, facecolor=COLORS[kind],
                                       edgecolor="#777777", linewidth=0.4))
        label(ax, x0 + 1.75, 4.2, name, 7)
    label(ax, 23, 2.2, "每个格子：附近有没有物品的中心？\n到它的四条边有多远？是哪一类？", 7)
    return fig


FIGURES = {"alexnet_lenet": alexnet_lenet, "vgg": vgg, "nin_vgg": nin_vgg, "inception": inception,
           "googlenet": googlenet, "function_classes": function_classes, "residual": residual,
           "resnet18": resnet18, "fashion_resnet": fashion_resnet, "densenet": densenet, "unet": unet,
           "batchnorm_axes": batchnorm_axes, "densebox_output": densebox_output}


def _stable_ids(svg: str) -> str:
    """Number the SVG's clip-path ids in order of appearance.

    matplotlib derives them from a hash of the clip box's repr, which differs
    between NumPy 1 and 2 (``np.float64(1.0)`` against ``1.0``), so the same
    drawing would give other bytes under another NumPy.
    """
    ids = {}
    for found in re.findall(r'id="(p[0-9a-f]{10})"|url\(#(p[0-9a-f]{10})\)', svg):
        for key in found:
            if key and key not in ids:
                ids[key] = f"clip{len(ids)}"
    return re.sub(r"p[0-9a-f]{10}", lambda m: ids.get(m.group(0), m.group(0)), svg)


def _with_cjk_fonts(svg: str) -> str:
    """Every text element's font-family: DejaVu Sans (the layout font) first, then the CJK faces."""
    fallback = ", ".join(f"'{f}'" if " " in f else f for f in CJK_FONTS)
    return svg.replace("font-family: 'DejaVu Sans'", f"font-family: 'DejaVu Sans', {fallback}")


def generate(out: Path = OUT) -> list:
    """Draw every figure into ``out`` as ``<name>.svg``; returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context(RC), warnings.catch_warnings():
        # The layout font has no Chinese glyphs on purpose (see the module docstring); the browser draws them.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        for name, draw in FIGURES.items():
            fig = draw()
            path = out / f"{name}.svg"
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata=METADATA)
            plt.close(fig)
            path.write_text(_with_cjk_fonts(_stable_ids(buf.getvalue())), encoding="utf-8")
            written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the SVG files (default {OUT})")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} exists and is not a folder", file=sys.stderr)
        return 2
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
