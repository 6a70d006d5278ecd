"""What every task shares: being bound to one run's settings, and checking its part of an export's metadata."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PredictionFigure:
    """Where :meth:`Task.explain` draws a user's picture: ``shown`` (uint8 [S, S], what the model saw before
    normalisation) titled ``title``, beside the prediction, saved as ``path``."""

    shown: np.ndarray
    title: str
    path: Path


class Task:
    """Base of the tasks. An instance is bound to one run's :class:`~paddle_cnn.config.TrainConfig`
    (``task_args`` merged over the defaults and checked once, in ``__init__``); ``Task()`` is bound to the
    defaults. ``loss`` and ``evaluate`` read the bound settings, so the loop does not pass the config each step.
    """

    name = "task"
    metric = ""
    final_keys: tuple = ()
    draws_prediction = False     # ``paddle-cnn predict`` writes a picture per input (masks, boxes)
    summary_width = 1.4          # relative width of the task's panel in the homework summary figure
    full_test_set = False        # a homework run must be scored on the whole test set (no test_subset)

    def __init__(self, cfg=None):
        self.cfg = cfg
        self.options = self.args(cfg)

    def args(self, cfg=None) -> dict:
        """``cfg.task_args`` over this task's defaults, checked (a task without arguments: {})."""
        given = getattr(cfg, "task_args", None) or {}
        if given:
            raise ValueError(f"{self.name} takes no task_args; got {sorted(given)}")
        return {}

    def bind(self, cfg) -> "Task":
        """This task bound to ``cfg`` (a new object; this one is unchanged)."""
        return type(self)(cfg)

    # -- what is reported --------------------------------------------------------------
    def metric_text(self, final: dict, test_examples: int | None = None) -> str:
        """The headline figures of a run's ``final`` metrics as one table cell ("miou 0.612, pixel_acc 0.950").

        ``test_examples``: how many test examples scored them (None: the whole test set).
        """
        return ", ".join(f"{k} {final[k]:.3f}" for k in self.final_keys)

    # -- exports -----------------------------------------------------------------------
    def export_meta(self) -> dict:
        """What this task adds to an export's ``export.json`` (what reading its outputs needs)."""
        return {}

    def check_export(self, meta: dict) -> str | None:
        """What is wrong with this task's part of ``export.json``'s ``meta`` (None when it is right)."""
        return None

    # -- a user's pictures ---------------------------------------------------------------
    def explain(self, outputs, x: np.ndarray, meta: dict, picture: PredictionFigure | None = None) -> str:
        """What the model behind ``outputs`` (x [1, C, S, S] -> {output name: ndarray}, described by
        ``meta``, export.json's fields) makes of one picture: the text of ``paddle-cnn predict``'s line,
        and, when :attr:`draws_prediction`, the figure written to ``picture.path``."""
        raise NotImplementedError


def save_picture(fig, path) -> None:
    """Write ``fig`` to ``path`` (atomically) and close it."""
    import matplotlib.pyplot as plt

    from .. import atomic, plots  # noqa: F401  (plots selects a non-interactive backend without a display)

    try:
        atomic.save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


def finite_number(value, low: float = -math.inf, high: float = math.inf) -> bool:
    """A real number (not a bool) that is finite and within [low, high]."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)
