"""The student's side of a homework folder: who (id and seed), what they wrote (source and its hash),
and the section's network built with their block.

A student id (``student=`` or the environment variable ``PADDLE_CNN_STUDENT``)
fixes the seed of every run that student records (:func:`seed_for`), so two
honest students on the same machine type record different histories, and the
reference run of a folder is reproducible from the id alone.

The section's exercise block slots into the section's network
(:data:`SLOTS`): ``train_student("resnet", MyResidual)`` builds ResNet-18 with
``MyResidual`` in every stage and trains it with the shared trainer at the
section's profile; ``homework.record(result, implementation="student",
source=MyResidual, exercise=passed)`` records it beside the reference run.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import os
import re
import textwrap
from dataclasses import dataclass
from typing import Callable, Optional

STUDENT_ENV = "PADDLE_CNN_STUDENT"
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SEED_SALT = "paddle-cnn student seed v1:"
SOURCE_FILE = "student_source.py"     # in the section folder: the text the recorded hash was taken of


# --------------------------------------------------------------------------- who
def student_id(student: Optional[str] = None) -> Optional[str]:
    """``student``, else ``PADDLE_CNN_STUDENT``, else None; a malformed id is a ValueError (one line)."""
    value = student if student is not None else os.environ.get(STUDENT_ENV) or None
    if value is None:
        return None
    if not isinstance(value, str) or not STUDENT_ID.match(value):
        raise ValueError(f"student id {value!r} is not usable: write 1-64 letters, digits, '.', '_' or '-' "
                         f"(e.g. the student number), starting with a letter or digit")
    return value


def seed_for(student: str) -> int:
    """The training seed of ``student``: the first 31 bits of SHA-256 of the id (salted), the same everywhere.

    >>> seed_for("2026001")
    160192429
    """
    digest = hashlib.sha256((SEED_SALT + student).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def student_seed(student: Optional[str] = None, default: Optional[int] = None) -> Optional[int]:
    """The seed a run of this student must use (``student`` or ``PADDLE_CNN_STUDENT``); ``default`` without one."""
    sid = student_id(student)
    return seed_for(sid) if sid else default


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
    """Where a section's exercise slots in: the network it builds (``model``, a registered name), the exercise,
    and ``build(block, **constructor_args)`` -> that network with the student's ``block``."""
    section: str
    model: str
    exercise: str
    build: Callable


def _vgg(block, **kw):
    from ..models.vgg import SMALL_RATIO, VGG, VGG11_ARCH

    arch = tuple((n, c // SMALL_RATIO) for n, c in VGG11_ARCH)
    return VGG(arch, name="vgg11_small", block=block, **kw)


def _nin(block, **kw):
    from ..models.nin import NiN

    return NiN(name="nin", block=block, **kw)


def _googlenet(block, **kw):
    from ..models.googlenet import GoogLeNet

    return GoogLeNet(block=block, **kw)


def _resnet(block, stage_arch=None, residual=True, **kw):
    from ..models.resnet import RESNET18_ARCH, ResNet

    return ResNet(tuple(map(tuple, stage_arch or RESNET18_ARCH)), name="resnet18", block=block, **kw)


def _densenet(block, num_convs=None, growth_rate=None, **kw):
    from ..models.densenet import GROWTH_RATE, NUM_CONVS_IN_DENSE_BLOCKS, DenseNet

    return DenseNet(tuple(num_convs or NUM_CONVS_IN_DENSE_BLOCKS), growth_rate or GROWTH_RATE, block=block, **kw)


def _unet(block, **kw):
    from ..models.unet import UNet

    return UNet(block=block, **kw)


def _alexnet(block, **kw):
    return block(kw.get("num_classes", 10), kw.get("in_channels", 1), kw.get("input_size", 224))


SLOTS = {s.section: s for s in (
    Slot("alexnet", "alexnet", "alexnet", _alexnet),          # the exercise is the whole network
    Slot("vgg", "vgg11_small", "vgg_block", _vgg),
    Slot("nin", "nin", "nin_block", _nin),
    Slot("googlenet", "googlenet", "inception", _googlenet),
    Slot("resnet", "resnet18", "residual", _resnet),
    Slot("densenet", "densenet", "dense_block", _densenet),
    Slot("unet", "unet", "unet_up", _unet),
)}
# LeNet (corr2d), batch norm (a function inside the network's layers) and DenseBox (its targets) check a
# function, not a block of the network: those sections record the reference run only.


def slot(section_or_model: str) -> Slot:
    """The :class:`Slot` of a section (or of the model it trains); ValueError for sections without one."""
    for s in SLOTS.values():
        if section_or_model in (s.section, s.model):
            return s
    raise ValueError(f"{section_or_model!r} has no network a student's block slots into; the sections that do: "
                     f"{', '.join(SLOTS)}")


def build_network(section_or_model: str, block, cfg):
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
    return init_weights(s.build(block, **kwargs), cfg.init)


def train_student(section_or_model: str, block, profile: str = "auto", student: Optional[str] = None,
                  data_dir=None, progress: Optional[bool] = None, log=print, **overrides):
    """Train the section's network built with the student's ``block`` at the section's profile; a FitResult.

    The seed is the student's (:func:`seed_for`) when a student id is given or set in ``PADDLE_CNN_STUDENT``.
    The result is what ``homework.record(result, implementation="student", source=block, exercise=...)`` takes.
    """
    from ..config import config_for
    from ..trainer import Trainer

    s = slot(section_or_model)
    seed = student_seed(student)
    if seed is not None:
        overrides.setdefault("seed", seed)
    cfg = config_for(s.model, profile, **overrides)
    trainer = Trainer(cfg, None, progress=progress, log=log)
    data = trainer.task.build_data(cfg, data_dir)
    net = build_network(s.section, block, cfg)
    return trainer.fit(net, data)
