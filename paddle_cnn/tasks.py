"""What the one trainer needs to know about a task: its data, loss and metrics.

The trainer is task-agnostic; a task object supplies

* ``build_data(cfg, data_dir)`` -> a data object with ``train_batches(batch_size, epoch)``
  (yielding ``(x, target)`` on the device), ``test_batches(batch_size)``,
  ``num_train``, ``steps_per_epoch(batch_size)`` and a ``source`` dict;
* ``loss(output, target, cfg)`` -> scalar tensor;
* ``train_hits(output, target)`` -> (tensor, count): a device tensor summing
  what the train metric counts in this batch and the count it is divided by,
  so the trainer can accumulate it without a host sync per step;
* ``evaluate(model, data, cfg)`` -> dict of floats; ``metric`` names the key
  that is the headline test metric (``test_acc`` for classification).

Classification lives here; segmentation and detection live beside the scenes
they are trained on (:mod:`paddle_cnn.scene_tasks`).
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

from . import metrics


class ClassificationTask:
    name = "classification"
    metric = "test_acc"
    metric_label = "test acc"
    train_metric_label = "train acc"

    def build_data(self, cfg, data_dir=None, arrays=None):
        from .data import FashionMNIST

        return FashionMNIST(resize=cfg.resize, data_dir=data_dir, train_subset=cfg.train_subset,
                            test_subset=cfg.test_subset, augment=cfg.augment, seed=cfg.seed, arrays=arrays)

    def loss(self, logits, y, cfg):
        return metrics.cross_entropy(logits, y, cfg.label_smoothing)

    def train_hits(self, logits, y):
        return metrics.correct(logits, y), int(y.shape[0])

    @paddle.no_grad()
    def predict(self, model, data, batch_size: int = 1000):
        """Predicted labels for the whole test set, as one int64 tensor."""
        return paddle.concat([model(x).argmax(axis=1) for x, _ in data.test_batches(batch_size)])

    @paddle.no_grad()
    def evaluate(self, model, data, cfg) -> dict:
        hits, count = paddle.zeros([], "float32"), 0
        for x, y in data.test_batches(cfg.eval_batch_size):
            hits += metrics.correct(model(x), y)
            count += int(y.shape[0])
        return {"test_acc": float(hits) / count}


def get_task(name: str):
    """The task object for a registry task name."""
    if name == "classification":
        return ClassificationTask()
    if name in ("segmentation", "detection"):
        from . import scene_tasks

        return scene_tasks.get_task(name)
    raise ValueError(f"unknown task {name!r}")
