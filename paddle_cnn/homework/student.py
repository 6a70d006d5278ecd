"""The student's side of a homework folder: who (id and seed), what they wrote (source and its hash),
and the section's network built with their block.

A student id (``student=`` or the environment variable ``PADDLE_CNN_STUDENT``)
fixes the seed of every run that student records (:func:`seed_for`), so two
honest students on the same machine type record different histories, and the
reference run of a folder is reproducible from the id alone.

The section's exercise block slots into the section's network
(:data:`SLOTS`): ``train_student("resnet", MyPreActResidual)`` builds ResNet-18 with
``MyPreActResidual`` in every stage and trains it with the shared trainer at the
section's profile; ``homework.record(result, implementation="student",
source=MyPreActResidual, exercise=passed)`` records it beside the reference run.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Callable, Optional

from ..students import STUDENT_ENV, STUDENT_ID, seed_for, student_id, student_seed  # noqa: F401 (re-exported)

SOURCE_FILE = "student_source.py"     # in the section folder: the text the recorded hash was taken of


# --------------------------------------------------------------------------- what they wrote
def source_text(source) -> str:
    """The text of ``source``: a string as it is, else the source of a class or function.

    In a notebook a class's source cannot always be found by :func:`inspect.getsource` (before
    Python 3.13 it looks for the class in ``__main__``'s file); its methods' sources are then joined
    under the class line, which holds every line the student wrote in them.
    """
    if isinstance(source, str):
        return source
    try:
        return textwrap.dedent(inspect.getsource(source))
    except (OSError, TypeError):
        pass
    if inspect.isclass(source):
        parts = []
        for value in vars(source).values():
            fn = getattr(value, "__func__", value)
            if inspect.isfunction(fn):
                try:
                    parts.append(textwrap.indent(textwrap.dedent(inspect.getsource(fn)), "    "))
                except (OSError, TypeError):
                    continue
        if parts:
            bases = ", ".join(b.__name__ for b in source.__bases__)
            return f"class {source.__name__}({bases}):\n" + "\n".join(parts)
    raise ValueError(f"the source of {getattr(source, '__name__', source)!r} cannot be found; pass its text "
                     "instead (source=\"\"\"...\"\"\", the cell's code)")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def normalised_source(text: str) -> str:
    """The code of ``text`` without layout, comments or docstrings: Python's syntax tree, dumped.

    Two sources that differ only in spaces, blank lines, comments or docstrings give the same text;
    renaming a variable does not. Text that does not parse is compared with its whitespace collapsed.

    >>> normalised_source("x = 1  # one") == normalised_source("x=1\\n\\n")
    True
    """
    try:
        tree = ast.parse(textwrap.dedent(text))
    except SyntaxError:
        return " ".join(text.split())
    return ast.dump(_without_docstrings(tree), annotate_fields=False, include_attributes=False)


def source_sha256(source) -> str:
    """SHA-256 of :func:`normalised_source` of ``source`` (text, class or function)."""
    return hashlib.sha256(normalised_source(source_text(source)).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the section's network with their block
@dataclass(frozen=True)
class Slot:
    """Where a section's exercises slot in: the network they build (``model``, a registered name), the exercises
    whose answer fits (``exercises``: the notebook's and the variants with the same arguments), and
    ``build(block, exercise, **constructor_args)`` -> that network with the student's ``block``."""
    section: str
    model: str
    exercises: tuple
    build: Callable

    @property
    def exercise(self) -> str:
        """The section's main exercise (the one its notebook checks, listed first)."""
        return self.exercises[0]


def _network(block, exercise, **kw):       # the exercise is the whole network (LeNet-ReLU, AlexNet)
    return block(kw.get("num_classes", 10), kw.get("in_channels", 1), kw.get("input_size", 28))


def _vgg(block, exercise, **kw):
    from ..models.vgg import SMALL_RATIO, VGG, VGG11_ARCH

    arch = tuple((n, c // SMALL_RATIO) for n, c in VGG11_ARCH)
    return VGG(arch, name="vgg11_small", block=block, **kw)


def _nin(block, exercise, **kw):
    from ..models.nin import NiN

    return NiN(name="nin", block=block, **kw)


def _googlenet(block, exercise, **kw):
    from ..models.googlenet import GoogLeNet

    return GoogLeNet(block=block, **kw)


def _resnet(block, exercise, stage_arch=None, residual=True, **kw):
    from paddle import nn

    from ..models.resnet import RESNET18_ARCH, ResNet

    arch = tuple(map(tuple, stage_arch or RESNET18_ARCH))
    net = ResNet(arch, name="resnet18", block=block, **kw)
    if exercise == "residual_preact":
        # Pre-activation blocks leave their sum unnormalised, so the network ends with BN and ReLU before
        # the pooling (He et al., 2016b); without them the last stage's output grows from block to block.
        net.stages.add_sublayer(str(len(net.stages)), nn.Sequential(nn.BatchNorm2D(arch[-1][0]), nn.ReLU()))
    return net


def _densenet(block, exercise, num_convs=None, growth_rate=None, **kw):
    from ..models.densenet import GROWTH_RATE, NUM_CONVS_IN_DENSE_BLOCKS, DenseNet

    slot_args = {"conv": block} if exercise == "dense_bottleneck" else {"block": block}
    return DenseNet(tuple(num_convs or NUM_CONVS_IN_DENSE_BLOCKS), growth_rate or GROWTH_RATE, **slot_args, **kw)


def _unet(block, exercise, **kw):
    from ..models.unet import UNet

    return UNet(block=block, **kw)


SLOTS = {s.section: s for s in (
    Slot("lenet", "lenet_relu", ("lenet_relu",), _network),
    Slot("alexnet", "alexnet", ("alexnet",), _network),
    Slot("vgg", "vgg11_small", ("vgg_block_bn", "vgg_block"), _vgg),
    Slot("nin", "nin", ("nin_block_bn", "nin_block"), _nin),
    Slot("googlenet", "googlenet", ("inception_3x3", "inception"), _googlenet),
    Slot("resnet", "resnet18", ("residual_preact", "residual"), _resnet),
    Slot("densenet", "densenet", ("dense_bottleneck", "dense_block"), _densenet),
    Slot("unet", "unet", ("unet_up",), _unet),
)}
# Not slotted: batch norm and DenseBox check a function (the batch-norm step, the box targets), corr2d is
# LeNet's function exercise; residual_bottleneck takes other arguments than ResNet-18's block, and
# unet_up_crop's unpadded convolutions shrink the mask below the input (both would need another network).


def slot(section_or_model: str) -> Slot:
    """The :class:`Slot` of a section (or of the model it trains); ValueError for sections without one."""
    for s in SLOTS.values():
        if section_or_model in (s.section, s.model):
            return s
    raise ValueError(f"{section_or_model!r} has no network a student's block slots into; the sections that do: "
                     f"{', '.join(SLOTS)}")


def slot_exercise(s: Slot, exercise: Optional[str]) -> str:
    """The exercise a student's block answers: ``exercise`` (one of the slot's), else the slot's main one."""
    if exercise is None:
        return s.exercise
    if exercise not in s.exercises:
        raise ValueError(f"exercise {exercise!r} does not slot into {s.model}; the {s.section} section's network "
                         f"takes {', '.join(s.exercises)}")
    return exercise


def build_network(section_or_model: str, block, cfg, exercise: Optional[str] = None):
    """The section's network for ``cfg`` (its model arguments and input size) with the student's ``block``,
    seeded with ``cfg.seed`` and initialised as ``cfg.init`` says (as :func:`~paddle_cnn.models.factory.build_model`
    does for the reference)."""
    from .. import runtime
    from ..models.factory import init_weights

    s = slot(section_or_model)
    if not callable(block):
        raise ValueError(f"block must be the class or function of the exercise, got {type(block).__name__}")
    runtime.seed_everything(cfg.seed)
    kwargs = dict(cfg.model_args)
    kwargs.setdefault("input_size", cfg.resize)
    return init_weights(s.build(block, slot_exercise(s, exercise), **kwargs), cfg.init)


def train_student(section_or_model: str, block, profile: str = "auto", student: Optional[str] = None,
                  exercise: Optional[str] = None, data_dir=None, progress: Optional[bool] = None, log=print,
                  **overrides):
    """Train the section's network built with the student's ``block`` at the section's profile; a FitResult.

    ``exercise`` names the exercise the block answers when it is not the section's main one (the variant
    its notebook checks, e.g. ``"residual_preact"``): the block the notebook prints (``"residual"``,
    ``"dense_block"``) slots in the same way. The seed is
    the student's (:func:`seed_for`) when a student id is given or set in ``PADDLE_CNN_STUDENT``. The
    result is what ``homework.record(result, implementation="student", source=block, exercise=...)`` takes.
    """
    from ..config import config_for
    from ..trainer import Trainer

    s = slot(section_or_model)
    name = slot_exercise(s, exercise)            # before any data is loaded
    seed = student_seed(student)
    if seed is not None:
        overrides.setdefault("seed", seed)
    cfg = config_for(s.model, profile, **overrides)
    trainer = Trainer(cfg, None, progress=progress, log=log)
    data = trainer.task.build_data(cfg, data_dir)
    result = trainer.fit(build_network(s.section, block, cfg, name), data)
    result.run_info["student_exercise"] = name      # record() names the exercise from it
    return result
