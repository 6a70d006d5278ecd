"""What a training run leaves: :class:`FitResult` (returned by ``fit``), ``results.json`` and ``curves.png``."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List

import paddle
from paddle import nn

from . import atomic, runtime
from .config import TrainConfig


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: the trained model, per-epoch history and final figures."""

    model: nn.Layer
    config: TrainConfig
    history: List[dict]
    device: str
    data_source: dict
    metric: str = "test_acc"
    metric_label: str = "test acc"
    train_metric_label: str = "train acc"
    final: dict = field(default_factory=dict)
    data: object = field(default=None, repr=False)  # the data object trained on (for predictions)
    run_info: dict = field(default_factory=dict)     # precision, processes, accelerator: how it ran

    @property
    def examples_per_sec(self) -> float:
        """Timed training examples over timed training-step time, across all epochs of this run."""
        timed = [h for h in self.history if h.get("train_time")]
        return (sum(h.get("timed_examples", h["examples"]) for h in timed)
                / max(1e-12, sum(h["train_time"] for h in timed)))

    @property
    def wall_time(self) -> float:
        return sum(h.get("wall_time", 0.0) for h in self.history)

    def summary(self) -> str:
        """The d2l-style closing line: loss, train metric, test metric, examples/sec and device."""
        last = self.history[-1]
        procs = self.run_info.get("world", 1)
        where = f"{self.device}" + (f" x {procs} processes" if procs > 1 else "")
        return (f"loss {last['train_loss']:.3f}, {self.train_metric_label} {last['train_metric']:.3f}, "
                f"{self.metric_label} {last[self.metric]:.3f}, {self.examples_per_sec:.1f} examples/sec "
                f"on {where}")

    def to_dict(self) -> dict:
        return {"model": self.config.model, "config": asdict(self.config), "device": self.device,
                "data": self.data_source, "metric": self.metric, "run": self.run_info, "history": self.history,
                "final": {**self.final, "examples_per_sec": self.examples_per_sec, "wall_time": self.wall_time}}

    def plot_predictions(self, count: int = 16, cols: int = 8):
        """A figure of ``count`` test predictions, drawn by the model's task (mistakes or boxes marked)."""
        from . import plots  # noqa: F401  (selects a non-interactive backend where there is no display)
        import matplotlib.pyplot as plt

        from .tasks import task_of

        rows = max(2, -(-count // cols))
        fig = plt.figure(figsize=(11, 1.8 * rows + 0.4))
        with runtime.evaluating(self.model), paddle.no_grad():
            task_of(self.config.model, self.config).draw_predictions(fig, fig.add_gridspec(rows, cols), self.model,
                                                                     self.data, count=count)
        fig.suptitle(f"{self.config.model}: test predictions", fontsize=9)
        return fig


def save_result(result: FitResult, out) -> None:
    """Write ``results.json`` (with the environment) and ``curves.png`` into ``out``."""
    from . import plots

    out = Path(out)
    atomic.write_json(out / "results.json", {**result.to_dict(), "environment": runtime.environment(result.device),
                                             "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    plots.save_curves(result.history, out / "curves.png", result.metric, title=result.config.model)
