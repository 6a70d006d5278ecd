"""Tasks: what the one trainer needs to know about a kind of problem.

A task object owns, for its kind of problem, the data building, the loss, the
train metric, the evaluation and the picture of its predictions:

* ``build_data(cfg, data_dir=None, arrays=None)`` -> a data object with
  ``train_batches(batch_size, epoch, rank=0, world=1)`` (yielding ``(x, target)``
  on the device), ``test_batches(batch_size)``, ``num_train``,
  ``steps_per_epoch(batch_size)`` and a ``source`` dict;
* ``loss(output, target, cfg)`` -> scalar tensor;
* ``train_hits(output, target)`` -> (tensor, count): a device tensor summing
  what the train metric counts in this batch and the count it is divided by,
  so the trainer accumulates it without a host sync per step;
* ``evaluate(model, data, cfg, batch_size)`` -> dict of floats, the model
  already in eval mode; ``metric`` names the headline key, ``final_keys`` the
  figures a homework table shows, ``summary_labels`` the summary panel's axes;
* ``draw_predictions(fig, grid, model, data, cfg, count)`` fills a GridSpec
  with test predictions, drawn with the primitives of :mod:`paddle_cnn.plots`
  and :mod:`paddle_cnn.scene_plots`.

Which task a model has is a field of its registry entry; :func:`get_task` is
the only place that turns the name into an object.
"""
from __future__ import annotations

TASK_CLASSES = {
    "classification": ("classification", "ClassificationTask"),
    "segmentation": ("segmentation", "SegmentationTask"),
    "detection": ("detection", "DetectionTask"),
}


def get_task(name: str):
    """The task object for a registry task name."""
    import importlib

    if name not in TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_CLASSES)}")
    module, cls = TASK_CLASSES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)()


def all_tasks() -> dict:
    """Task name -> task object, for every task."""
    return {name: get_task(name) for name in TASK_CLASSES}


def task_of(model: str):
    """The task object of a registered model (read from its registry entry)."""
    from ..models import get_spec

    return get_task(get_spec(model).task)
