"""What segmentation and detection share: Fashion-MNIST scenes built from ``cfg.task_args``.

Scene settings come from ``cfg.task_args`` (defaults below; an unknown key is
an error, so a typo does not silently fall back to a default). ``cfg.resize``
is the canvas side S. ``cfg.train_subset`` / ``cfg.test_subset``, when set,
are the numbers of scenes and take precedence over ``num_train_scenes`` /
``num_test_scenes``, so ``--train-subset N`` shortens a run in every section alike.
"""
from __future__ import annotations

from dataclasses import fields

from ..scenes import FashionScenes, SceneConfig
from ._base import Task

#: ``task_args`` of a scene task: every SceneConfig field but the canvas (that is ``cfg.resize``), and the
#: numbers of scenes.
SCENE_ARGS = dict({f.name: f.default for f in fields(SceneConfig) if f.name != "canvas"},
                  num_train_scenes=10000, num_test_scenes=1000)


class SceneTask(Task):
    """Base of the scene tasks: ``task_args`` checking and scene data building."""

    name = "scenes"
    task_defaults: dict = {}
    draws_prediction = True

    def args(self, cfg=None) -> dict:
        """``cfg.task_args`` over the defaults of the scenes and of this task."""
        given = dict(getattr(cfg, "task_args", None) or {})
        defaults = {**SCENE_ARGS, **self.task_defaults}
        unknown = set(given) - set(defaults)
        if unknown:
            raise ValueError(f"unknown task_args {sorted(unknown)} for {self.name}; known: {sorted(defaults)}")
        from ..config import check_value

        checked = {k: check_value("task_args", k, v, defaults[k]) for k, v in given.items()}
        return {**defaults, **checked}

    def scene_config(self, cfg) -> SceneConfig:
        a = self.args(cfg)
        scene = {f.name: a[f.name] for f in fields(SceneConfig) if f.name != "canvas"}
        return SceneConfig(canvas=cfg.resize, **{**scene, "scale": tuple(scene["scale"])})

    def build_data(self, cfg, data_dir=None, arrays=None) -> FashionScenes:
        a = self.args(cfg)
        return FashionScenes(self.scene_config(cfg),
                             num_train=cfg.train_subset or a["num_train_scenes"],
                             num_test=cfg.test_subset or a["num_test_scenes"],
                             seed=cfg.seed, data_dir=data_dir, arrays=arrays, augment=cfg.augment,
                             **self._data_kwargs())

    def _data_kwargs(self) -> dict:
        return {}


def cell_axes(fig, grid, r: int, c: int):
    """One tick-free axes in cell (r, c) of ``grid``."""
    ax = fig.add_subplot(grid[r, c])
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
