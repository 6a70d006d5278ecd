"""Segmentation (U-Net) and detection (DenseBox) tasks for the one trainer, on Fashion-MNIST scenes.

Both implement the protocol of :mod:`paddle_cnn.tasks`. Scene settings come
from ``cfg.task_args`` (defaults below; an unknown key is an error, so a typo
does not silently fall back to a default). ``cfg.resize`` is the canvas side
S. ``cfg.train_subset`` / ``cfg.test_subset``, when set, are the numbers of
scenes and take precedence over ``num_train_scenes`` / ``num_test_scenes``,
so ``--train-subset`` shortens a run in every section alike.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from . import metrics
from .scenes import NUM_SEG_CLASSES, SEG_CLASS_KEYS, FashionScenes, SceneConfig

SCENE_ARGS = dict(
    max_items=4, min_items=1, scale=(0.75, 1.5), max_overlap=0.3, threshold=32, min_visible=20, tries=6,
    num_train_scenes=10000, num_test_scenes=1000,
)


class _SceneTask:
    task_defaults: dict = {}

    def args(self, cfg) -> dict:
        """``cfg.task_args`` over the defaults of the scenes and of this task."""
        given = dict(getattr(cfg, "task_args", None) or {})
        defaults = {**SCENE_ARGS, **self.task_defaults}
        unknown = set(given) - set(defaults)
        if unknown:
            raise ValueError(f"unknown task_args {sorted(unknown)} for {self.name}; known: {sorted(defaults)}")
        return {**defaults, **given}

    def scene_config(self, cfg) -> SceneConfig:
        a = self.args(cfg)
        return SceneConfig(canvas=cfg.resize, max_items=a["max_items"], min_items=a["min_items"],
                           scale=tuple(a["scale"]), max_overlap=a["max_overlap"], threshold=a["threshold"],
                           min_visible=a["min_visible"], tries=a["tries"])

    def build_data(self, cfg, data_dir=None, arrays=None) -> FashionScenes:
        a = self.args(cfg)
        return FashionScenes(self.scene_config(cfg),
                             num_train=cfg.train_subset or a["num_train_scenes"],
                             num_test=cfg.test_subset or a["num_test_scenes"],
                             seed=cfg.seed, data_dir=data_dir, arrays=arrays, augment=cfg.augment,
                             **self._data_kwargs())

    def _data_kwargs(self) -> dict:
        return {}


class SegmentationTask(_SceneTask):
    """Per-pixel classification into background + 10 classes; headline metric: mean IoU.

    ``task_args``: ``dice_weight`` adds that multiple of the soft Dice loss
    (1 - mean over classes of 2|P.T| / (|P| + |T|)) to the pixel-wise cross entropy.
    """
    name = "segmentation"
    metric = "miou"
    metric_label = "test mIoU"
    train_metric_label = "train pixel acc"
    task_defaults = dict(dice_weight=0.0)

    def loss(self, logits, mask, cfg):
        loss = F.cross_entropy(logits, mask.unsqueeze(1), axis=1)   # logits [N, C, H, W], mask [N, H, W]
        dice_weight = self.args(cfg)["dice_weight"]
        if dice_weight:
            loss = loss + dice_weight * dice_loss(logits, mask)
        return loss

    def train_hits(self, logits, mask):
        return (logits.argmax(axis=1) == mask).astype("float32").sum(), int(np.prod(mask.shape))

    @paddle.no_grad()
    def predict(self, model, data, count: int | None = None, batch_size: int = 256) -> np.ndarray:
        """Predicted masks [n, S, S] (uint8) of the first ``count`` test scenes."""
        out = []
        for x, _ in data.test_batches(batch_size):
            out.append(model(x).argmax(axis=1).astype("uint8").numpy())
            if count is not None and sum(len(o) for o in out) >= count:
                break
        return np.concatenate(out)[:count]

    @paddle.no_grad()
    def evaluate(self, model, data, cfg) -> dict:
        """Pixel accuracy, mIoU and per-class IoU over all test scenes (one confusion matrix)."""
        cm = paddle.zeros([NUM_SEG_CLASSES, NUM_SEG_CLASSES], "int64")
        for x, mask in data.test_batches(cfg.eval_batch_size):
            cm += metrics.confusion_matrix(model(x).argmax(axis=1), mask, NUM_SEG_CLASSES)
        cm = cm.numpy()
        iou = metrics.per_class_iou(cm)
        return {"miou": metrics.mean_iou(cm), "pixel_acc": metrics.pixel_accuracy(cm),
                **{f"iou_{key}": float(v) for key, v in zip(SEG_CLASS_KEYS, iou)}}


def dice_loss(logits, mask, eps: float = 1.0):
    """Soft Dice loss averaged over classes, from softmax probabilities and the one-hot mask."""
    prob = F.softmax(logits, axis=1)                                        # [N, C, H, W]
    onehot = F.one_hot(mask, logits.shape[1]).transpose([0, 3, 1, 2])       # [N, C, H, W]
    inter = (prob * onehot).sum([0, 2, 3])
    total = prob.sum([0, 2, 3]) + onehot.sum([0, 2, 3])
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


class DetectionTask(_SceneTask):
    """DenseBox detection; headline metric: class-agnostic AP at IoU 0.5, plus matched class accuracy.

    The train metric is the cell accuracy of the confidence map: the fraction
    of output cells where (confidence > 0.5) agrees with the target, ignored
    (gray-zone) cells counting as agreeing. It is divided by the number of
    cells, known without reading the device, so it costs no host sync.
    """
    name = "detection"
    metric = "ap50"
    metric_label = "test AP50"
    train_metric_label = "train cell acc"
    task_defaults = dict(lambda_loc=3.0, class_weight=1.0, hard_fraction=0.5,
                         score_threshold=0.05, nms_iou=0.5, max_detections=20)

    def _data_kwargs(self) -> dict:
        from .models.densebox import FLIP_CHANNELS, encode_targets

        return dict(target_fn=encode_targets, flip_channels=FLIP_CHANNELS)

    def loss(self, out, target, cfg):
        from .models.densebox import densebox_loss

        a = self.args(cfg)
        return densebox_loss(out, target, a["lambda_loc"], a["class_weight"], a["hard_fraction"])

    def train_hits(self, out, target):
        from .models.densebox import T_CONF, T_VALID

        agree = (out["conf"][:, 0] > 0.5) == (target[:, T_CONF] > 0.5)
        return (agree | (target[:, T_VALID] < 0.5)).astype("float32").sum(), int(np.prod(agree.shape))

    @paddle.no_grad()
    def detect(self, model, data, cfg=None, count: int | None = None, batch_size: int = 256) -> list:
        """Decoded detections (dicts of boxes, scores, classes) of the first ``count`` test scenes."""
        from .models.densebox import decode

        a = self.args(cfg) if cfg is not None else {**SCENE_ARGS, **self.task_defaults}
        dets = []
        for x, _ in data.test_batches(batch_size):
            dets += decode(model(x), a["score_threshold"], a["nms_iou"], a["max_detections"])
            if count is not None and len(dets) >= count:
                break
        return dets[:count]

    @paddle.no_grad()
    def evaluate(self, model, data, cfg) -> dict:
        dets = self.detect(model, data, cfg, batch_size=cfg.eval_batch_size)
        s = data.test_scenes
        truth = [(s.boxes[j, :s.counts[j]], s.labels[j, :s.counts[j]]) for j in range(len(s))]
        return {"ap50": metrics.average_precision(dets, truth, 0.5),
                "class_acc": metrics.matched_class_accuracy(dets, truth, 0.5),
                "dets_per_scene": sum(len(d["scores"]) for d in dets) / max(1, len(dets))}


def get_task(name: str):
    """The task object for 'segmentation' or 'detection'."""
    if name == "segmentation":
        return SegmentationTask()
    if name == "detection":
        return DetectionTask()
    raise ValueError(f"unknown scene task {name!r}; choose segmentation or detection")
