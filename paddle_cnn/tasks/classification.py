"""Classification on Fashion-MNIST (every section from LeNet to DenseNet): loss, accuracy, pictures."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

from .. import metrics


class ClassificationTask:
    name = "classification"
    metric = "test_acc"
    metric_label = "test acc"
    final_keys = ("test_acc",)                      # the headline figures a homework table shows
    summary_labels = ("test accuracy", "training examples/sec (log)")   # the summary panel's axes
    train_metric_label = "train acc"
    # Homework learning curves: one measure per panel, (history key, label) pairs drawn on it.
    curve_panels = (("loss", (("train_loss", "train"),)),
                    ("accuracy", (("train_metric", "train"), ("test_acc", "test"))))
    prediction_grid = (2, 8)     # rows x cols of the homework figure's prediction cells

    def build_data(self, cfg, data_dir=None, arrays=None):
        from ..data import FashionMNIST

        return FashionMNIST(resize=cfg.resize, data_dir=data_dir, train_subset=cfg.train_subset,
                            test_subset=cfg.test_subset, augment=cfg.augment, seed=cfg.seed, arrays=arrays,
                            erase=cfg.erase)

    def loss(self, logits, y, cfg):
        return metrics.cross_entropy(logits, y, cfg.label_smoothing)

    def train_hits(self, logits, y):
        return metrics.correct(logits, y), int(y.shape[0])

    @staticmethod
    def scores(model, x, cfg=None):
        """Class scores of a test batch: the logits, or with ``cfg.tta == "flip"`` the summed class
        probabilities of each image and its left-right mirror (the mirror is a training augmentation,
        so the network has learned both views)."""
        out = model(x)
        if cfg is not None and getattr(cfg, "tta", "none") == "flip":
            mirrored = model(paddle.flip(x, axis=[3]))
            out = F.softmax(out.astype("float32"), axis=-1) + F.softmax(mirrored.astype("float32"), axis=-1)
        return out

    @paddle.no_grad()
    def evaluate(self, model, data, cfg, batch_size: int) -> dict:
        hits, count = paddle.zeros([], "float32"), 0
        for x, y in data.test_batches(batch_size):
            hits += metrics.correct(self.scores(model, x, cfg), y)
            count += int(y.shape[0])
        return {"test_acc": float(hits) / count}

    @paddle.no_grad()
    def draw_predictions(self, fig, grid, model, data, cfg=None, count: int = 16) -> None:
        """Fill ``grid`` (a rows x cols GridSpec) with test images titled by their predicted class.

        Mistakes are red, with the true class below. ``model`` must be in eval mode.
        """
        from ..data import CLASSES

        rows, cols = grid.get_geometry()
        count = min(count, rows * cols)
        x, y = next(data.test_batches(count))
        predicted = self.scores(model, x, cfg).astype("float32").argmax(axis=1).numpy()
        images, labels = x.numpy()[:, 0], y.numpy()
        for i in range(min(count, len(labels))):
            ax = fig.add_subplot(grid[i // cols, i % cols])
            ax.imshow(images[i], cmap="gray")
            ax.axis("off")
            wrong = predicted[i] != labels[i]
            ax.set_title(CLASSES[predicted[i]] + (f"\n(true: {CLASSES[labels[i]]})" if wrong else ""),
                         fontsize=7, color="red" if wrong else "black")
