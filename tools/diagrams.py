"""Block diagrams of the chapter's architectures, drawn with matplotlib into ``notebooks/figures/``.

    python tools/diagrams.py            # regenerate every figure
    python tools/diagrams.py --out DIR  # write them somewhere else (the test does this)

The figures are SVG with text kept as text (``svg.fonttype = "none"``), so the
labels need no font at all on the machine that draws them and the browser
renders them; they are English on purpose (no CJK font ships with the
dependencies). Output is deterministic: no date, no creator string, a fixed
hash salt for element ids, so ``tests/test_diagrams.py`` can compare bytes and
fail when a committed figure is stale (each file names the matplotlib
major.minor that drew it; the test compares only under that version). Each figure is one function below; the
numbers written into the boxes are the course settings of the package's models.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks" / "figures"
RC = {"svg.fonttype": "none", "svg.hashsalt": "paddle-cnn", "font.family": "DejaVu Sans", "font.size": 9,
      "path.simplify": False}
# The drawing library's major.minor goes into the file: other versions may lay out the same figure
# differently, and the staleness test only compares bytes drawn by the same version.
DRAWN_WITH = "matplotlib " + ".".join(matplotlib.__version__.split(".")[:2])
METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None, "Description": DRAWN_WITH}
UNIT = 0.22  # inches per drawing unit

# One colour per kind of layer, the same in every figure.
COLORS = {"conv": "#cfe3f7", "pool": "#f9dfc4", "fc": "#d9ecd0", "norm": "#efe0f3", "io": "#eeeeee",
          "op": "#fff3b0", "act": "#f6d2d2"}


def canvas(width: float, height: float):
    fig = plt.figure(figsize=(width * UNIT, height * UNIT))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def box(ax, x, y, w, h, text, kind="conv", size=8, weight="normal"):
    """A rounded box centred at (x, y) with its label; returns (top, bottom, left, right) anchor points."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.25",
                                facecolor=COLORS[kind], edgecolor="#333333", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, fontweight=weight)
    return {"top": (x, y + h / 2), "bottom": (x, y - h / 2), "left": (x - w / 2, y), "right": (x + w / 2, y)}


def arrow(ax, start, end, color="#333333", style="-|>", rad=0.0, lw=0.9, dashed=False):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=8, color=color, linewidth=lw,
                                 connectionstyle=f"arc3,rad={rad}", linestyle="--" if dashed else "-",
                                 shrinkA=0, shrinkB=0))


def label(ax, x, y, text, size=8, **kw):
    ax.text(x, y, text, ha=kw.pop("ha", "center"), va=kw.pop("va", "center"), fontsize=size, **kw)


def column(ax, x, top, layers, w=9.0, h=1.6, gap=0.8):
    """A vertical stack of (text, kind) boxes from ``top`` down, joined by arrows; returns the anchors."""
    anchors, y = [], top
    for text, kind in layers:
        a = box(ax, x, y, w, h, text, kind)
        if anchors:
            arrow(ax, anchors[-1]["bottom"], a["top"])
        anchors.append(a)
        y -= h + gap
    return anchors


# --- the figures ------------------------------------------------------------------------------------------

def alexnet_lenet(ax=None):
    """LeNet (28x28) beside AlexNet (224x224 ImageNet): depth, width, the 5 conv + 3 FC of AlexNet."""
    fig, ax = canvas(26, 31)
    lenet = [("image 28x28x1", "io"), ("5x5 conv, 6, pad 2, sigmoid", "conv"), ("2x2 avg pool, stride 2", "pool"),
             ("5x5 conv, 16, sigmoid", "conv"), ("2x2 avg pool, stride 2", "pool"), ("FC 120, sigmoid", "fc"),
             ("FC 84, sigmoid", "fc"), ("FC 10", "fc")]
    alex = [("image 224x224x3", "io"), ("11x11 conv, 96, stride 4, ReLU", "conv"),
            ("3x3 max pool, stride 2", "pool"), ("5x5 conv, 256, pad 2, ReLU", "conv"),
            ("3x3 max pool, stride 2", "pool"), ("3x3 conv, 384, pad 1, ReLU", "conv"),
            ("3x3 conv, 384, pad 1, ReLU", "conv"), ("3x3 conv, 256, pad 1, ReLU", "conv"),
            ("3x3 max pool, stride 2", "pool"), ("FC 4096, ReLU, dropout", "fc"), ("FC 4096, ReLU, dropout", "fc"),
            ("FC 1000", "fc")]
    label(ax, 6.5, 30, "LeNet", 11, fontweight="bold")
    label(ax, 19, 30, "AlexNet", 11, fontweight="bold")
    column(ax, 6.5, 28.3, lenet, w=11, h=1.5, gap=0.8)
    column(ax, 19, 28.3, alex, w=12, h=1.5, gap=0.8)
    label(ax, 6.5, 7.5, "2 conv + 3 FC layers\nconv channels 6, 16", 8, color="#555555")
    label(ax, 6.5, 4.5, "AlexNet: 5 conv + 3 FC = 8 layers\nconv channels 96-384\n(16-24x LeNet's)", 8,
          color="#555555")
    return fig


def nin_vgg(ax=None):
    """A VGG block and VGG's fully connected head beside a NiN block and NiN's global average pooling."""
    fig, ax = canvas(30, 27)
    label(ax, 7.5, 26, "VGG", 11, fontweight="bold")
    label(ax, 22.5, 26, "NiN", 11, fontweight="bold")
    vgg = column(ax, 7.5, 24, [("3x3 conv, ReLU", "conv"), ("3x3 conv, ReLU", "conv"),
                               ("2x2 max pool, stride 2", "pool")], w=11, h=1.5, gap=0.7)
    nin = column(ax, 22.5, 24, [("conv (11x11 / 5x5 / 3x3), ReLU", "conv"), ("1x1 conv, ReLU", "conv"),
                                ("1x1 conv, ReLU", "conv")], w=12, h=1.5, gap=0.7)
    for anchors, x, name in ((vgg, 7.5, "VGG block  (x num_convs)"), (nin, 22.5, "NiN block")):
        top, bottom = anchors[0]["top"][1] + 0.6, anchors[-1]["bottom"][1] - 0.6
        ax.add_patch(Rectangle((x - 7, bottom), 14, top - bottom, fill=False, linestyle="--", edgecolor="#777777"))
        label(ax, x, bottom - 0.8, name, 8, color="#555555")
    column(ax, 7.5, 14, [("VGG block x 5", "conv"), ("FC 4096, ReLU, dropout", "fc"),
                         ("FC 4096, ReLU, dropout", "fc"), ("FC 1000", "fc")], w=11, h=1.5, gap=0.7)
    column(ax, 22.5, 14, [("NiN block x 3, each + 3x3 max pool", "conv"), ("dropout 0.5", "act"),
                          ("NiN block, classes channels", "conv"), ("global average pool", "pool")],
           w=13, h=1.5, gap=0.7)
    label(ax, 7.5, 4.2, "flatten -> wide FC layers\n(most of the parameters)", 8, color="#555555")
    label(ax, 22.5, 4.2, "one channel per class,\naveraged to one score: no FC layer", 8, color="#555555")
    return fig


def inception(ax=None):
    """The Inception block: four paths, every one keeping H x W, concatenated on channels (first b3 block)."""
    fig, ax = canvas(34, 17)
    inp = box(ax, 17, 15, 12, 1.5, "input  [192, H, W]", "io")
    xs = (4.5, 13, 21.5, 30)
    paths = [[("1x1 conv, 64", "conv")],
             [("1x1 conv, 96", "conv"), ("3x3 conv, 128, pad 1", "conv")],
             [("1x1 conv, 16", "conv"), ("5x5 conv, 32, pad 2", "conv")],
             [("3x3 max pool, stride 1", "pool"), ("1x1 conv, 32", "conv")]]
    out = box(ax, 17, 2.2, 16, 1.5, "concatenate on channels  [256, H, W]", "op")
    for x, layers in zip(xs, paths):
        anchors = column(ax, x, 10.5 if len(layers) == 2 else 7.0, layers, w=7.5, h=1.5, gap=2.0)
        arrow(ax, inp["bottom"], anchors[0]["top"])
        arrow(ax, anchors[-1]["bottom"], (x * 0.35 + 17 * 0.65, out["top"][1]))
        channels = layers[-1][0].split(", ")[1]
        label(ax, x, anchors[-1]["bottom"][1] - 0.6, f"[{channels}, H, W]", 7, color="#555555", va="top")
    label(ax, 17, 0.5, "64 + 128 + 32 + 32 = 256 channels; ReLU after every conv", 8, color="#555555")
    return fig


def function_classes(ax=None):
    """Nested function classes F1 in F2 in ... (left) versus classes that do not nest (right)."""
    fig, ax = canvas(30, 14)
    star = dict(marker="*", markersize=11, color="#c0392b", linestyle="none")
    for i in range(4):                        # each class contains the previous one and grows towards f*
        cx, cy, w, h = 5 + i * 1.0, 6 + i * 0.5, 3 + 2.5 * i, 2.2 + 1.8 * i
        ax.add_patch(Ellipse((cx, cy), w, h, fill=False, edgecolor="#1f5f99", linewidth=1.0))
        label(ax, cx + 0.35 * w, cy + 0.36 * h + 0.35, f"F{i + 1}", 8, color="#1f5f99")
    ax.plot([13.5], [10.5], **star)
    label(ax, 14.3, 11.2, "f*", 9, color="#c0392b")
    label(ax, 7.5, 0.6, "nested: F1 in F2 in F3 in F4,\na larger class only gets closer to f*", 8)
    centres = ((19.5, 5.5), (21.5, 7.5), (23, 5.5), (20.5, 8.2))
    for i, ((cx, cy), (w, h)) in enumerate(zip(centres, ((4, 3), (6, 4.5), (8, 6), (9.5, 4)))):
        ax.add_patch(Ellipse((cx, cy), w, h, angle=20 * i, fill=False, edgecolor="#8e44ad", linewidth=1.0))
        label(ax, cx, cy + h / 2 - 0.6, f"F{i + 1}", 8, color="#8e44ad")
    ax.plot([27.5], [9.5], **star)
    label(ax, 28.3, 10.2, "f*", 9, color="#c0392b")
    label(ax, 22.5, 0.6, "not nested: a larger class\ncan end up farther from f*", 8)
    return fig


def residual(ax=None):
    """The residual block f(x) = x + g(x), without and with the 1x1 convolution on the shortcut."""
    fig, ax = canvas(31, 20)
    for x, shortcut, title in ((7, None, "Residual(c, c)"), (22, "1x1 conv,\nstride s", "Residual(c_in, c_out,\n"
                                                                                 "use_1x1conv=True, stride=s)")):
        label(ax, x, 19, title, 9, fontweight="bold")
        first = "3x3 conv, stride s" if shortcut else "3x3 conv"
        a = column(ax, x - 1.5, 16.5, [("x", "io"), (first, "conv"), ("batch norm", "norm"),
                                       ("ReLU", "act"), ("3x3 conv", "conv"), ("batch norm", "norm")],
                   w=8, h=1.3, gap=0.55)
        plus = box(ax, x - 1.5, a[-1]["bottom"][1] - 1.4, 2, 1.1, "+", "op", size=11, weight="bold")
        arrow(ax, a[-1]["bottom"], plus["top"])
        relu = box(ax, x - 1.5, plus["bottom"][1] - 1.3, 8, 1.3, "ReLU", "act")
        arrow(ax, plus["bottom"], relu["top"])
        right = x + 5.2
        ax.plot([a[0]["right"][0], right], [a[0]["right"][1]] * 2, color="#333333", lw=0.9)
        if shortcut:
            sc = box(ax, right, 9.5, 3.4, 2.0, shortcut, "conv", size=7)
            ax.plot([right, right], [a[0]["right"][1], sc["top"][1]], color="#333333", lw=0.9)
            ax.plot([right, right], [sc["bottom"][1], plus["right"][1]], color="#333333", lw=0.9)
        else:
            ax.plot([right, right], [a[0]["right"][1], plus["right"][1]], color="#333333", lw=0.9)
            label(ax, right + 0.4, 9.5, "identity", 7, ha="left", color="#555555")
        arrow(ax, (right, plus["right"][1]), plus["right"])
        label(ax, x - 1.5, 0.5, "g(x): the weight layers learn the residual", 7, color="#555555")
    return fig


def densenet(ax=None):
    """ResNet adds, DenseNet concatenates: a dense block's channels grow by the growth rate, a transition cuts."""
    fig, ax = canvas(34, 23)
    label(ax, 6, 22.2, "ResNet: add", 10, fontweight="bold")
    x = box(ax, 2.5, 16.5, 3, 1.5, "x", "io")
    g = box(ax, 7, 16.5, 3.5, 1.5, "g(x)", "conv")
    plus = box(ax, 7, 13, 1.6, 1.2, "+", "op", size=11, weight="bold")
    arrow(ax, x["right"], g["left"])
    arrow(ax, x["bottom"], plus["left"], rad=0.3)
    arrow(ax, g["bottom"], plus["top"])
    label(ax, 7, 11.3, "x + g(x): same channels", 7, color="#555555")
    label(ax, 23, 22.2, "DenseNet: concatenate", 10, fontweight="bold")
    names = ("x", "f1", "f2", "f3")
    for i, name in enumerate(names):
        box(ax, 16 + i * 3.2, 16.5, 2.8, 1.5, name, "io" if i == 0 else "conv")
    label(ax, 22, 14.6, "[x, f1(x), f2([x, f1]), f3([x, f1, f2])]: every layer sees all earlier maps", 7,
          color="#555555")
    for i in range(1, 4):
        for j in range(i):
            arrow(ax, (16 + j * 3.2, 17.3), (16 + i * 3.2, 17.3), rad=-0.35 - 0.1 * (i - j), lw=0.7)
    # channel growth inside one dense block of the course model: 64 in, 4 conv blocks, growth 32, then a transition
    label(ax, 17, 10, "DenseNet's first dense block (4 conv blocks, growth rate 32) and transition", 8,
          fontweight="bold")
    widths, left = (64, 96, 128, 160, 192), 2.0
    for i, c in enumerate(widths):
        h = c / 32
        ax.add_patch(Rectangle((left + i * 5.0, 2.5), 3.2, h, facecolor=COLORS["conv"], edgecolor="#333333",
                               linewidth=0.8))
        ax.add_patch(Rectangle((left + i * 5.0, 2.5), 3.2, 2.0, facecolor="#a9c8e8", edgecolor="#333333",
                               linewidth=0.8))
        label(ax, left + i * 5.0 + 1.6, 2.5 + h + 0.6, f"{c} ch", 7)
        if i:
            arrow(ax, (left + i * 5.0 - 1.7, 4.0), (left + i * 5.0 - 0.1, 4.0))
            label(ax, left + i * 5.0 - 0.9, 1.6, "+32", 7, color="#555555")
    tr = box(ax, 28, 4.0, 4.6, 2.4, "transition\nBN, ReLU,\n1x1 conv, 2x2 avg", "pool", size=6.5)
    arrow(ax, (left + 4 * 5.0 + 3.3, 4.0), tr["left"])
    ax.add_patch(Rectangle((31.2, 2.5), 1.6, 3.0, facecolor=COLORS["conv"], edgecolor="#333333", linewidth=0.8))
    arrow(ax, tr["right"], (31.2, 4.0))
    label(ax, 32, 6.3, "96 ch\nH/2", 7)
    label(ax, 17, 0.6, "first 64 channels = the block's input, kept unchanged; each conv block "
                       "(BN, ReLU, 3x3 conv) adds 32", 7, color="#555555")
    return fig


def unet(ax=None):
    """The U: an encoder halving the side and doubling the width, a decoder back up, skips across."""
    fig, ax = canvas(40, 21)
    widths, side = (16, 32, 64, 128, 256), 64
    levels = len(widths)
    enc_x, dec_x, level_y = (lambda i: 7 + i * 2.6), (lambda i: 33 - i * 2.6), (lambda i: 17 - i * 3.6)
    decoders = {}
    for i in reversed(range(levels - 1)):       # decoder levels from the bottom up
        w, s = widths[i], side // 2 ** i
        decoders[i] = box(ax, dec_x(i), level_y(i), 7, 1.6, f"concat {w}+{w}, DoubleConv {w}\n{s}x{s}", "conv",
                          size=6.5)
    for i, w in enumerate(widths):
        s = side // 2 ** i
        x = enc_x(i) if i < levels - 1 else 20
        enc = box(ax, x, level_y(i), 6, 1.6, f"DoubleConv {w}\n{s}x{s}", "conv", size=7)
        if i:
            arrow(ax, (enc_x(i - 1), level_y(i - 1) - 0.8), enc["top"], color="#c0392b")
        if i < levels - 1:
            arrow(ax, enc["right"], decoders[i]["left"], color="#1f5f99", dashed=True)
        if i == levels - 1:
            arrow(ax, enc["right"], decoders[i - 1]["bottom"], color="#27ae60")
        elif i:
            arrow(ax, decoders[i]["top"], decoders[i - 1]["bottom"], color="#27ae60")
    label(ax, enc_x(0) - 3.4, level_y(0) - 1.9, "2x2 max pool", 6.5, color="#c0392b", ha="right")
    label(ax, 37, level_y(0) - 1.9, "2x2 transposed conv", 6.5, color="#27ae60")
    inp = box(ax, 2.2, level_y(0) + 2.2, 3.6, 1.1, "image 64x64", "io", size=7)
    arrow(ax, inp["bottom"], (enc_x(0) - 3, level_y(0)), rad=0.3)
    out = box(ax, 37.8, level_y(0) + 2.2, 3.6, 1.1, "1x1 conv, 11", "fc", size=7)
    arrow(ax, decoders[0]["right"], out["bottom"], rad=0.3)
    label(ax, 20, 1.0, "red: down (side / 2, width x 2)   green: up (side x 2, width / 2)   "
                       "blue dashed: skip connection (concatenate)", 7, color="#555555")
    label(ax, 20, 20.3, "U-Net (course widths, base 16, depth 4, 64x64 scene)", 9, fontweight="bold")
    return fig


def batchnorm_axes(ax=None):
    """Which axes batch norm averages over: N for a fully connected layer, N, H and W for a convolution."""
    fig, ax = canvas(35, 16)
    label(ax, 8, 15, "fully connected: X is [N, C]", 9, fontweight="bold")
    n, c = 6, 5
    for i in range(n):
        for j in range(c):
            hot = j == 2
            ax.add_patch(Rectangle((3 + j * 1.6, 3 + i * 1.5), 1.6, 1.5, facecolor="#f4b183" if hot else "white",
                                   edgecolor="#333333", linewidth=0.6))
    label(ax, 7, 13, "C features ->", 8)
    label(ax, 1.8, 7.5, "N samples", 8, rotation=90)
    label(ax, 7, 1.5, "one mean and variance per feature,\ntaken down the column (over N)", 8)
    label(ax, 25, 15, "convolutional: X is [N, C, H, W]", 9, fontweight="bold")
    for s in range(3):                       # three samples, each a stack of 4 channel planes
        x0 = 18 + s * 5.6
        for ch in range(4):
            hot = ch == 1
            ax.add_patch(Rectangle((x0 + ch * 0.55, 5 + ch * 1.3), 3.2, 3.2,
                                   facecolor="#f4b183" if hot else "white", edgecolor="#333333", linewidth=0.6))
        label(ax, x0 + 2.4, 4.2, f"sample {s + 1}", 7)
    label(ax, 26.5, 12.5, "channel 2 of every sample, all H x W positions", 7, color="#a04000")
    label(ax, 25.5, 1.5, "one mean and variance per channel,\ntaken over N, H and W", 8)
    return fig


def densebox_output(ax=None):
    """DenseBox's output map: stride 4, at each cell a confidence and four distances to the box's sides."""
    fig, ax = canvas(30, 16)
    label(ax, 6.5, 15, "input S x S", 9, fontweight="bold")
    ax.add_patch(Rectangle((1, 2), 11, 11, facecolor="#f2f2f2", edgecolor="#333333"))
    ax.add_patch(Rectangle((3.5, 4.5), 5.5, 6.5, fill=False, edgecolor="#c0392b", linewidth=1.2))
    label(ax, 6.25, 11.6, "box (x1, y1, x2, y2)", 7, color="#c0392b")
    cx, cy = 6.0, 7.2
    ax.plot([cx], [cy], marker="o", color="#1f5f99", markersize=4)
    for end, name, pos in (((3.5, cy), "d1", (4.7, cy + 0.5)), ((cx, 11.0), "d2", (cx + 0.5, 9.8)),
                           ((9.0, cy), "d3", (7.6, cy + 0.5)), ((cx, 4.5), "d4", (cx + 0.5, 5.6))):
        arrow(ax, (cx, cy), end, color="#1f5f99", lw=0.8)
        label(ax, *pos, name, 7, color="#1f5f99")
    label(ax, 6.5, 1.0, "cell centre (cx, cy): d1 = cx - x1, d2 = cy - y1,\nd3 = x2 - cx, d4 = y2 - cy", 7)
    arrow(ax, (12.8, 7.5), (15.2, 7.5))
    label(ax, 14, 8.3, "FCN, stride 4", 7)
    label(ax, 23, 15, "output maps S/4 x S/4", 9, fontweight="bold")
    for k, (name, kind) in enumerate((("conf (1)", "op"), ("dist (4)", "conv"), ("cls (10)", "fc"))):
        x0 = 16.5 + k * 4.4
        for g in range(5):
            for h in range(5):
                ax.add_patch(Rectangle((x0 + g * 0.7, 5 + h * 0.7), 0.7, 0.7, facecolor=COLORS[kind],
                                       edgecolor="#777777", linewidth=0.4))
        label(ax, x0 + 1.75, 4.2, name, 7)
    label(ax, 23, 2.2, "per cell: is an item's centre near? how far\nto its four sides? which class?", 7)
    return fig


FIGURES = {"alexnet_lenet": alexnet_lenet, "nin_vgg": nin_vgg, "inception": inception,
           "function_classes": function_classes, "residual": residual, "densenet": densenet, "unet": unet,
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


def generate(out: Path = OUT) -> list:
    """Draw every figure into ``out`` as ``<name>.svg``; returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context(RC):
        for name, draw in FIGURES.items():
            fig = draw()
            path = out / f"{name}.svg"
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata=METADATA)
            plt.close(fig)
            path.write_text(_stable_ids(buf.getvalue()), encoding="utf-8")
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
