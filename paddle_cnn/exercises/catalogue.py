"""The catalogue: what each exercise is checked against and with which argument sets.

An :class:`Exercise` names the package's ``reference``, whether it is a layer
(``reference(*args)`` builds an ``nn.Layer``) or a function (``reference(*inputs)``
computes), the argument sets (:class:`Case`) and where its scaffold lives
(``scaffolds/<name>.py``). ``notebook=True`` marks the exercises a section's
notebook checks. ``variant_of`` marks the variants (issue 37): what a notebook
explains but never prints, so that a printed cell cannot be retyped to pass.
LeNet, VGG, NiN, GoogLeNet, ResNet and DenseNet check their variant; the blocks their
notebooks print (``vgg_block``, ``nin_block``, ``Inception``, ``Residual``,
``DenseBlock``) stay in the catalogue for practice and ``python -m paddle_cnn.exercises``,
out of the notebooks.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..blocks import DenseBlock, Inception, Residual, nin_block, transition, vgg_block
from ..models.alexnet import AlexNet
from ..models.batchnorm import batch_norm
from ..models.unet import Up
from ..tasks.detection import encode_boxes
from . import references as R

SCAFFOLDS = Path(__file__).resolve().parent / "scaffolds"


@dataclass(frozen=True)
class Rand:
    """A random float32 input of ``shape``: normal * scale + offset (``positive``: uniform in [0.5, 2))."""
    shape: tuple
    grad: bool = True
    scale: float = 1.0
    offset: float = 0.0
    positive: bool = False

    def draw(self, rng) -> np.ndarray:
        if self.positive:
            return rng.uniform(0.5, 2.0, self.shape).astype(np.float32)
        return (rng.standard_normal(self.shape) * self.scale + self.offset).astype(np.float32)


@dataclass(frozen=True)
class Case:
    """One argument set: constructor ``args``/``kwargs`` (layers) and the inputs of the call.

    ``inputs`` is a list whose :class:`Rand` entries become tensors (the same
    numbers for both versions); a callable ``inputs`` takes a NumPy generator
    and returns the list (NumPy arrays are passed as they are).
    """
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    inputs: object = ()


@dataclass(frozen=True)
class Exercise:
    """An exercise: the package's ``reference``, what ``kind`` of object it is, and the argument sets."""
    name: str
    section: str
    reference: Callable
    kind: str                  # "layer": reference(*args) is an nn.Layer; "function": reference(*inputs) computes
    cases: tuple
    train: bool = True         # layer mode during the comparison (eval for dropout, whose masks are random)
    outputs: tuple = ()        # names of the returned values when there are several (shown to the student)
    grad_outputs: tuple = (0,)  # outputs whose gradients are compared (the reference's differentiable ones)
    parts: Optional[Callable] = None  # output -> [(label, array)] compared one line each
    notebook: bool = True      # checked in the section's notebook today (section_exercises lists these)
    variant_of: str = ""       # the notebook exercise this one varies
    paths: Optional[Callable] = None        # reference leaf-layer name -> part label ("路径 3"), or ""
    channel_parts: Optional[Callable] = None  # case -> [(label, first channel, end)] of the output
    explain: Optional[Callable] = None        # (reference outputs, yours) -> the part that differs, or ''

    @property
    def scaffold_path(self) -> Path:
        return SCAFFOLDS / f"{self.name}.py"

    def scaffold(self) -> str:
        """The scaffold file from its first ``def``/``class`` line on: what a notebook cell holds."""
        return cell_text(self.scaffold_path)


def cell_text(path: Path) -> str:
    """A ``.py`` file from its first top-level ``def``/``class`` line on: the part a notebook cell holds
    (scaffolds here; the course's sample answers, which ``homework grade`` hashes)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(("def ", "class ")))
    return "".join(lines[start:])


def _scenes(rng, n: int, canvas: int, K: int, overlap: bool) -> list:
    """Padded box arrays of ``n`` scenes as a scene generator makes them (integer pixel edges)."""
    boxes = np.zeros((n, K, 4), np.float32)
    labels = np.zeros((n, K), np.int64)
    counts = np.array([1 + i % K for i in range(n)], np.int64)
    for i in range(n):
        for j in range(counts[i]):
            w, h = rng.randint(8, canvas // 2, size=2)
            if overlap and j:   # next to the previous box, so that some cells are claimed twice
                x1 = min(canvas - w, int(boxes[i, j - 1, 0]) + rng.randint(2, 6))
                y1 = min(canvas - h, int(boxes[i, j - 1, 1]) + rng.randint(2, 6))
            else:
                x1, y1 = rng.randint(0, canvas - w + 1), rng.randint(0, canvas - h + 1)
            boxes[i, j] = (x1, y1, x1 + w, y1 + h)
            labels[i, j] = rng.randint(0, 10)
    return [boxes, labels, counts, canvas, 4]


def _target_parts(t) -> list:
    return [("置信度（通道 0）", t[:, 0]), ("有效掩码（通道 1）", t[:, 1]),
            ("到四边的距离（通道 2-5）", t[:, 2:6]), ("类别（通道 6）", t[:, 6])]


def _bn_inputs(shape, training: bool) -> list:
    c = [1, shape[1]] + [1] * (len(shape) - 2)
    return [Rand(shape, scale=2.0, offset=1.0), Rand(tuple(c), scale=0.3, offset=1.0), Rand(tuple(c), scale=0.5),
            Rand(tuple(c), grad=False), Rand(tuple(c), grad=False, positive=True), 1e-5, 0.9, training]


def _explain_boxes(ref: list, mine: list) -> str:
    """densebox_boxes: which scene, which box and which edge differ, in the student's terms."""
    if len(mine) != 3 or any(np.ndim(m) == 0 for m in mine):
        return ""
    r_counts, m_counts = np.asarray(ref[2]).reshape(-1), np.asarray(mine[2]).reshape(-1)
    if r_counts.shape == m_counts.shape and (r_counts != m_counts).any():
        i = int(np.argmax(r_counts != m_counts))
        r_set = {tuple(b) for b in np.asarray(ref[0])[i, :r_counts[i]].tolist()}
        m_set = {tuple(b) for b in np.asarray(mine[0])[i, :max(int(m_counts[i]), 0)].tolist()}
        if not r_set & m_set:
            hint = "你的框没有一个与参考实现的相同：检查距离的换算（乘以 16，从格子中心算起）"
        elif m_counts[i] > r_counts[i]:
            hint = "是否没有去掉重复的框？"
        else:
            hint = "是否漏掉了一些正格子，或把不同的框合并了？"
        return f"第 {i + 1} 个场景的框数：你的 {int(m_counts[i])}，应为 {int(r_counts[i])}（{hint}）"
    r_boxes, m_boxes = np.asarray(ref[0]), np.asarray(mine[0])
    if r_boxes.shape == m_boxes.shape:
        diff = np.abs(r_boxes.astype(np.float64) - m_boxes.astype(np.float64)) > 0.5
        if diff.any():
            i, j, e = (int(v[0]) for v in np.nonzero(diff))
            edge = ("x1（左边）", "y1（上边）", "x2（右边）", "y2（下边）")[e]
            return (f"第 {i + 1} 个场景第 {j + 1} 个框的 {edge}：你的 {m_boxes[i, j, e]:.4g}，应为 "
                    f"{r_boxes[i, j, e]:.4g}（距离要乘以 16，从格子中心算起；框按 x1、y1、x2、y2 排序）")
    return ""


def _inception_paths(name: str) -> str:
    return f"路径 {int(name[1])}" if name[:1] == "p" and name[1:2].isdigit() else ""


def _inception_channels(case: Case) -> list:
    _, c1, c2, c3, c4 = case.args
    widths = [("路径 1", c1), ("路径 2", c2[1]), ("路径 3", c3[1]), ("路径 4", c4)]
    out, start = [], 0
    for label, width in widths:
        out.append((label, start, start + width))
        start += width
    return out


def _exercises() -> "OrderedDict[str, Exercise]":
    E = OrderedDict()

    def add(ex: Exercise) -> None:
        E[ex.name] = ex

    add(Exercise("corr2d", "lenet", R.corr2d, "function", (
        Case(inputs=[Rand((6, 8)), Rand((2, 2))]),
        Case(inputs=[Rand((5, 7)), Rand((1, 2))]),
        Case(inputs=[Rand((4, 5)), Rand((3, 3))]),
    )))
    add(Exercise("alexnet", "alexnet", AlexNet, "layer", (
        Case((10, 1, 65), inputs=[Rand((2, 1, 65, 65))]),       # the smallest side: 1x1 after the last pool
        Case((5, 3, 112), inputs=[Rand((2, 3, 112, 112))]),     # 2x2 after the last pool: 1024 inputs to the MLP
    ), train=False))
    vgg_cases = (
        Case((2, 3, 8), inputs=[Rand((2, 3, 16, 16))]),
        Case((1, 4, 6), inputs=[Rand((2, 4, 10, 10))]),
        Case((3, 2, 5), inputs=[Rand((2, 2, 7, 7))]),           # odd side: the pool floors 7 to 3
    )
    add(Exercise("vgg_block", "vgg", vgg_block, "layer", vgg_cases, notebook=False))
    nin_cases = (
        Case((3, 8, 5, 2, 1), inputs=[Rand((2, 3, 17, 17))]),
        Case((1, 6, 3, 1, 1), inputs=[Rand((2, 1, 9, 9))]),
    )
    add(Exercise("nin_block", "nin", nin_block, "layer", nin_cases, notebook=False))
    # Channel counts all different, so every layer's shapes are its own.
    inception_cases = (
        Case((6, 4, (3, 5), (2, 6), 7), inputs=[Rand((2, 6, 9, 9))]),
        Case((5, 2, (4, 6), (1, 3), 8), inputs=[Rand((2, 5, 6, 6))]),
    )
    add(Exercise("inception", "googlenet", Inception, "layer", inception_cases, paths=_inception_paths,
                 channel_parts=_inception_channels, notebook=False))
    add(Exercise("batch_norm", "batchnorm", batch_norm, "function", (
        Case(inputs=_bn_inputs((4, 3, 5, 5), True)),
        Case(inputs=_bn_inputs((8, 5), True)),
        Case(inputs=_bn_inputs((4, 3, 5, 5), False)),
    ), outputs=("Y", "moving_mean", "moving_var")))
    residual_cases = (
        Case((3, 3), inputs=[Rand((2, 3, 6, 6))]),
        Case((3, 6), dict(use_1x1conv=True, stride=2), inputs=[Rand((2, 3, 7, 7))]),
        Case((4, 5), dict(use_1x1conv=True), inputs=[Rand((2, 4, 5, 5))]),
    )
    add(Exercise("residual", "resnet", Residual, "layer", residual_cases, notebook=False))
    add(Exercise("dense_block", "densenet", DenseBlock, "layer", (
        Case((2, 3, 4), inputs=[Rand((2, 3, 5, 5))]),
        Case((3, 2, 3), inputs=[Rand((2, 2, 4, 4))]),
    ), notebook=False))
    add(Exercise("transition", "densenet", transition, "layer", (
        Case((6, 3), inputs=[Rand((2, 6, 6, 6))]),
        Case((4, 5), inputs=[Rand((2, 4, 5, 5))]),
    )))
    add(Exercise("unet_up", "unet", Up, "layer", (
        Case((8, 4, 4), inputs=[Rand((2, 8, 3, 3)), Rand((2, 4, 6, 6))]),
        Case((6, 5, 3), inputs=[Rand((2, 6, 4, 4)), Rand((2, 5, 8, 8))]),
    )))
    add(Exercise("densebox_targets", "densebox", encode_boxes, "function", (
        Case(inputs=lambda rng: _scenes(rng, 3, 32, 3, overlap=False)),
        Case(inputs=lambda rng: _scenes(rng, 4, 48, 3, overlap=True)),
    ), parts=_target_parts, grad_outputs=()))

    # ---- variants the notebooks explain but never print (issue 37): references in references.py;
    # notebook=False for those whose section's notebook does not check them yet
    add(Exercise("lenet_relu", "lenet", R.lenet_relu, "layer", (
        Case((10, 1, 28), inputs=[Rand((2, 1, 28, 28))]),
        Case((5, 3, 32), inputs=[Rand((2, 3, 32, 32))]),
    ), variant_of="corr2d"))
    add(Exercise("vgg_block_bn", "vgg", R.vgg_block_bn, "layer", vgg_cases, variant_of="vgg_block"))
    add(Exercise("nin_block_bn", "nin", R.nin_block_bn, "layer", nin_cases, variant_of="nin_block"))
    add(Exercise("inception_3x3", "googlenet", R.Inception3x3, "layer", inception_cases,
                 variant_of="inception", paths=_inception_paths, channel_parts=_inception_channels))
    add(Exercise("batch_norm_unbiased", "batchnorm", R.batch_norm_unbiased, "function", (
        Case(inputs=_bn_inputs((4, 3, 5, 5), True)),
        Case(inputs=_bn_inputs((8, 5), True)),
        Case(inputs=_bn_inputs((4, 3, 5, 5), False)),
    ), outputs=("Y", "moving_mean", "moving_var"), notebook=False, variant_of="batch_norm"))
    add(Exercise("residual_preact", "resnet", R.PreActResidual, "layer", residual_cases, variant_of="residual"))
    add(Exercise("residual_bottleneck", "resnet", R.BottleneckResidual, "layer", (
        Case((8, 3, 8), inputs=[Rand((2, 8, 6, 6))]),
        Case((4, 3, 10), dict(stride=2), inputs=[Rand((2, 4, 7, 7))]),
        Case((5, 2, 7), inputs=[Rand((2, 5, 5, 5))]),
    ), notebook=False, variant_of="residual"))
    add(Exercise("dense_bottleneck", "densenet", R.dense_bottleneck, "layer", (
        Case((6, 3), inputs=[Rand((2, 6, 5, 5))]),
        Case((5, 2), inputs=[Rand((2, 5, 4, 4))]),
    ), variant_of="dense_block"))
    add(Exercise("densebox_boxes", "densebox", R.densebox_boxes, "function", (
        Case(inputs=lambda rng: [encode_boxes(*_scenes(rng, 3, 32, 3, overlap=False)[:4]), 4]),
        Case(inputs=lambda rng: [encode_boxes(*_scenes(rng, 4, 48, 3, overlap=True)[:4]), 4]),
    ), outputs=("boxes", "labels", "counts"), grad_outputs=(), notebook=False, variant_of="densebox_targets",
        explain=_explain_boxes))
    add(Exercise("unet_up_crop", "unet", R.UpCrop, "layer", (
        Case((8, 4, 5), inputs=[Rand((2, 8, 5, 5)), Rand((2, 4, 14, 14))]),
        Case((6, 5, 3), inputs=[Rand((2, 6, 6, 6)), Rand((2, 5, 17, 17))]),   # odd margin: floor on top/left
    ), notebook=False, variant_of="unet_up"))
    return E


EXERCISES = _exercises()
# Section (homework folder, registry section) -> its main exercise (a variant its notebook checks, else the first
# exercise it checks); section_exercises() lists all of them.
SECTION_EXERCISE: "OrderedDict[str, str]" = OrderedDict()
for _ex in sorted(EXERCISES.values(), key=lambda e: not e.variant_of):
    if _ex.notebook:
        SECTION_EXERCISE.setdefault(_ex.section, _ex.name)
SECTION_EXERCISE = OrderedDict((s, SECTION_EXERCISE[s]) for s in dict.fromkeys(e.section for e in EXERCISES.values())
                               if s in SECTION_EXERCISE)


def section_exercises(section: str) -> list:
    """Names of the exercises ``section``'s notebook checks (e.g. ``["dense_block", "transition"]``)."""
    return [e.name for e in EXERCISES.values() if e.section == section and e.notebook]


def variants(section: Optional[str] = None) -> list:
    """Names of the variants (what a notebook explains but never prints), of one section or of all."""
    return [e.name for e in EXERCISES.values() if e.variant_of and section in (None, e.section)]


def get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def case_inputs(case: Case, seed: int) -> list:
    """The raw input list of one argument set (callable inputs drawn with ``seed``)."""
    return case.inputs(np.random.RandomState(seed)) if callable(case.inputs) else list(case.inputs)
