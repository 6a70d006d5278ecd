"""Tasks: what the one trainer needs to know about a kind of problem.

A task object owns, for its kind of problem, the data building, the loss, the
train metric, the evaluation, the picture of its predictions and every other
task-specific line (how its metrics read in a table, what its exports carry,
what ``paddle-cnn predict`` prints and draws). An object is bound to one run's
config once (``get_task(name, cfg)`` or ``task.bind(cfg)``: ``task_args``
merged over the defaults and checked there), so the loop passes no config per step:

* ``build_data(cfg, data_dir=None, arrays=None)`` -> a data object with
  ``train_batches(batch_size, epoch, rank=0, world=1)`` (yielding ``(x, target)``
  on the device), ``test_batches(batch_size)``, ``num_train``,
  ``steps_per_epoch(batch_size)`` and a ``source`` dict;
* ``loss(output, target)`` -> scalar tensor;
* ``train_hits(output, target)`` -> (tensor, count): a device tensor summing
  what the train metric counts in this batch and the count it is divided by,
  so the trainer accumulates it without a host sync per step;
* ``evaluate(model, data, batch_size)`` -> dict of floats, the model
  already in eval mode; ``metric`` names the headline key, ``final_keys`` the
  figures a homework table shows, ``summary_labels`` the summary panel's axes;
* ``draw_predictions(fig, grid, model, data, cfg=None, count=16)`` fills a GridSpec
  with test predictions, drawn with the primitives of :mod:`paddle_cnn.plots`
  and :mod:`paddle_cnn.scene_plots`;
* ``metric_text(final, test_examples)`` -> the headline figures as one table cell;
* ``export_meta()`` -> what an export's ``export.json`` carries for the task,
  ``check_export(meta)`` -> what is wrong with it (None when right);
* ``explain(outputs, x, meta, picture)`` -> ``paddle-cnn predict``'s text for one
  picture (and, with ``draws_prediction``, its figure).

Which task a model has is a field of its registry entry; :func:`get_task` is
the only place that turns the name into an object.
"""
from __future__ import annotations

TASK_CLASSES = {
    "classification": ("classification", "ClassificationTask"),
    "segmentation": ("segmentation", "SegmentationTask"),
    "detection": ("detection", "DetectionTask"),
}


def get_task(name: str, cfg=None):
    """The task object for a registry task name, bound to ``cfg`` (None: the task's defaults)."""
    import importlib

    if name not in TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_CLASSES)}")
    module, cls = TASK_CLASSES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(cfg)


def all_tasks() -> dict:
    """Task name -> task object, for every task."""
    return {name: get_task(name) for name in TASK_CLASSES}


def task_of(model: str, cfg=None):
    """The task object of a registered model (read from its registry entry), bound to ``cfg``."""
    from ..models import get_spec

    return get_task(get_spec(model).task, cfg)
