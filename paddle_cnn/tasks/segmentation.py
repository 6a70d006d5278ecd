"""Segmentation (the U-Net section): per-pixel classes on Fashion-MNIST scenes, mean IoU, mask pictures."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from .. import metrics
from ..runtime import evaluating
from ..scene_plots import class_legend, draw_mask, new_grid, side_by_side
from ..scenes import NUM_SEG_CLASSES, SEG_CLASS_KEYS
from ._base import save_picture
from ._scene import SceneTask, cell_axes

TOP = 3     # classes ``paddle-cnn predict`` names per picture (by their share of the pixels)


class SegmentationTask(SceneTask):
    """Per-pixel classification into background + 10 classes; headline metric: mean IoU.

    ``task_args``: ``dice_weight`` adds that multiple of the soft Dice loss
    (1 - mean over classes of 2|P.T| / (|P| + |T|)) to the pixel-wise cross entropy.
    """
    name = "segmentation"
    metric = "miou"
    metric_label = "test mIoU"
    final_keys = ("pixel_acc", "miou")
    summary_labels = ("test mIoU", "training scenes/sec (log)")
    train_metric_label = "train pixel acc"
    curve_panels = (("loss", (("train_loss", "train"),)),
                    ("pixel accuracy", (("train_metric", "train"), ("pixel_acc", "test"))),
                    ("mIoU", (("miou", "test"),)))
    prediction_grid = (2, 8)     # four scenes: image and truth above, prediction under the truth
    task_defaults = dict(dice_weight=0.0)

    def loss(self, logits, mask):
        loss = F.cross_entropy(logits, mask.unsqueeze(1), axis=1)   # logits [N, C, H, W], mask [N, H, W]
        dice_weight = self.options["dice_weight"]
        if dice_weight:
            loss = loss + dice_weight * dice_loss(logits, mask)
        return loss

    def train_hits(self, logits, mask):
        return (logits.argmax(axis=1) == mask).astype("float32").sum(), int(np.prod(mask.shape))

    @paddle.no_grad()
    def predict(self, model, data, count: int | None = None, batch_size: int = 256) -> np.ndarray:
        """Predicted masks [n, S, S] (uint8) of the first ``count`` test scenes (model in eval mode)."""
        out = []
        for x, _ in data.test_batches(batch_size):
            out.append(model(x).astype("float32").argmax(axis=1).astype("uint8").numpy())
            if count is not None and sum(len(o) for o in out) >= count:
                break
        return np.concatenate(out)[:count]

    @paddle.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict:
        """Pixel accuracy, mIoU and per-class IoU over all test scenes (one confusion matrix)."""
        cm = paddle.zeros([NUM_SEG_CLASSES, NUM_SEG_CLASSES], "int64")
        for x, mask in data.test_batches(batch_size):
            cm += metrics.confusion_matrix(model(x).astype("float32").argmax(axis=1), mask, NUM_SEG_CLASSES)
        cm = cm.numpy()
        iou = metrics.per_class_iou(cm)
        return {"miou": metrics.mean_iou(cm), "pixel_acc": metrics.pixel_accuracy(cm),
                **{f"iou_{key}": float(v) for key, v in zip(SEG_CLASS_KEYS, iou)}}

    def draw_predictions(self, fig, grid, model, data, cfg=None, count: int = 16) -> None:
        """Per scene: the image and its true mask side by side, the predicted mask under the truth.

        ``cfg`` is unused: a mask needs no setting of the run (the same signature as the other tasks').
        """
        rows, cols = grid.get_geometry()
        pred = self.predict(model, data, min(count, cols // 2))
        scenes = data.test_scenes
        for j in range(len(pred)):
            cell_axes(fig, grid, 0, 2 * j).imshow(scenes.images[j], cmap="gray", vmin=0, vmax=255)
            draw_mask(cell_axes(fig, grid, 0, 2 * j + 1), scenes.masks[j], "truth")
            draw_mask(cell_axes(fig, grid, 1, 2 * j + 1), pred[j], "prediction")
            note = cell_axes(fig, grid, 1, 2 * j)
            note.axis("off")
            note.text(0.5, 0.5, f"pixel acc\n{(pred[j] == scenes.masks[j]).mean():.2f}", ha="center",
                      va="center", fontsize=8)

    # -- exports and a user's pictures ---------------------------------------------------------
    def export_meta(self) -> dict:
        from ..data import CLASSES

        # mask value v: class v - 1, 0 = background
        return {"mask_classes": ["background"] + list(CLASSES), "mask_keys": list(SEG_CLASS_KEYS)}

    def check_export(self, meta: dict) -> str | None:
        names = meta.get("mask_classes")
        if (not isinstance(names, list) or len(names) != NUM_SEG_CLASSES
                or not all(isinstance(n, str) and n for n in names)):
            return f"mask_classes (a list of {NUM_SEG_CLASSES} class names, background first)"
        if meta.get("outputs") != ["logits"]:
            return f"outputs {meta.get('outputs')!r} (a segmentation model has one, 'logits')"
        return None

    def explain(self, outputs, x, meta, picture=None) -> str:
        """The classes covering most pixels, and the predicted mask drawn beside the picture."""
        names = meta["mask_classes"]
        logits = outputs(x)["logits"]
        if logits.ndim != 4 or logits.shape[:2] != (1, len(names)):
            raise ValueError(f"{meta['model']} gives logits of shape {list(logits.shape)} for one picture, not "
                             f"[1, {len(names)}, S, S] for the mask classes its metadata names; export the run again")
        mask = logits[0].argmax(axis=0).astype(np.uint8)                       # [S, S], 0 = background
        share = np.bincount(mask.ravel(), minlength=len(names)) / mask.size
        found = [i for i in np.argsort(-share, kind="stable") if 0 < i < len(names) and share[i] > 0][:TOP]
        listed = ", ".join(f"{names[i]} {share[i]:.0%}" for i in found) or "background only"
        save_picture(side_by_side(picture.shown, picture.title, lambda ax: draw_mask(ax, mask, "predicted mask"),
                                  f"{meta['model']}: {listed}", class_legend), picture.path)
        return f"mask {listed} of the pixels -> {picture.path}"


def plot_segmentation(model, data, count: int = 4, fig=None):
    """Test scenes in rows: image | true mask | predicted mask, with the class colour legend."""
    with evaluating(model):
        pred = SegmentationTask().predict(model, data, count)
    scenes = data.test_scenes
    count = len(pred)
    fig, axes = new_grid(count, 3, fig=fig)
    for j in range(count):
        axes[j, 0].imshow(scenes.images[j], cmap="gray", vmin=0, vmax=255)
        draw_mask(axes[j, 1], scenes.masks[j])
        draw_mask(axes[j, 2], pred[j])
        pixel_acc = (pred[j] == scenes.masks[j]).mean()
        axes[j, 2].set_xlabel(f"pixel acc {pixel_acc:.2f}", fontsize=8)
    for ax, title in zip(axes[0], ("image", "truth", "prediction")):
        ax.set_title(title, fontsize=9)
    class_legend(fig)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def dice_loss(logits, mask, eps: float = 1.0):
    """Soft Dice loss averaged over classes, from softmax probabilities and the one-hot mask."""
    prob = F.softmax(logits, axis=1)                                        # [N, C, H, W]
    onehot = F.one_hot(mask, logits.shape[1]).transpose([0, 3, 1, 2])       # [N, C, H, W]
    inter = (prob * onehot).sum([0, 2, 3])
    total = prob.sum([0, 2, 3]) + onehot.sum([0, 2, 3])
    return 1 - ((2 * inter + eps) / (total + eps)).mean()
