"""Classification on Fashion-MNIST (every section from LeNet to DenseNet): loss, accuracy, pictures."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from .. import metrics
from ._base import Task

TOP = 3     # classes ``paddle-cnn predict`` names per picture


class ClassificationTask(Task):
    """Ten Fashion-MNIST classes; headline metric: test accuracy (with its 95% interval in tables).

    Bound to a config, it reads ``label_smoothing`` (the loss) and ``tta`` (test-time flips).
    """
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
    summary_width = 3            # many models share the classification panel of the homework summary
    full_test_set = True         # the accuracies a table compares (and their intervals) are over all 10,000 images

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.label_smoothing = float(getattr(cfg, "label_smoothing", 0.0) or 0.0)
        self.tta = getattr(cfg, "tta", "none") or "none"

    def build_data(self, cfg, data_dir=None, arrays=None):
        from ..data import FashionMNIST

        return FashionMNIST(resize=cfg.resize, data_dir=data_dir, train_subset=cfg.train_subset,
                            test_subset=cfg.test_subset, augment=cfg.augment, seed=cfg.seed, arrays=arrays,
                            erase=cfg.erase)

    def loss(self, logits, y):
        return metrics.cross_entropy(logits, y, self.label_smoothing)

    def train_hits(self, logits, y):
        return metrics.correct(logits, y), int(y.shape[0])

    def scores(self, model, x):
        """Class scores of a test batch: the logits, or with ``tta == "flip"`` the summed class
        probabilities of each image and its left-right mirror (the mirror is a training augmentation,
        so the network has learned both views)."""
        out = model(x)
        if self.tta == "flip":
            mirrored = model(paddle.flip(x, axis=[3]))
            out = F.softmax(out.astype("float32"), axis=-1) + F.softmax(mirrored.astype("float32"), axis=-1)
        return out

    @paddle.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict:
        hits, count = paddle.zeros([], "float32"), 0
        for x, y in data.test_batches(batch_size):
            hits += metrics.correct(self.scores(model, x), y)
            count += int(y.shape[0])
        return {"test_acc": float(hits) / count}

    @paddle.no_grad()
    def draw_predictions(self, fig, grid, model, data, cfg=None, count: int = 16) -> None:
        """Fill ``grid`` (a rows x cols GridSpec) with test images titled by their predicted class.

        Mistakes are red, with the true class below. ``model`` must be in eval mode. ``cfg``: the run's
        config, when this task is not bound to it already.
        """
        from ..data import CLASSES

        if cfg is not None:
            return self.bind(cfg).draw_predictions(fig, grid, model, data, count=count)
        rows, cols = grid.get_geometry()
        count = min(count, rows * cols)
        x, y = next(data.test_batches(count))
        predicted = self.scores(model, x).astype("float32").argmax(axis=1).numpy()
        images, labels = x.numpy()[:, 0], y.numpy()
        for i in range(min(count, len(labels))):
            ax = fig.add_subplot(grid[i // cols, i % cols])
            ax.imshow(images[i], cmap="gray")
            ax.axis("off")
            wrong = predicted[i] != labels[i]
            ax.set_title(CLASSES[predicted[i]] + (f"\n(true: {CLASSES[labels[i]]})" if wrong else ""),
                         fontsize=7, color="red" if wrong else "black")

    def metric_text(self, final: dict, test_examples: int | None = None) -> str:
        """Test accuracy with the half-width of its 95% interval over the test images that scored it."""
        acc = final["test_acc"]
        return f"test_acc {acc:.3f} ± {metrics.interval95(acc, test_examples or metrics.FULL_TEST_SET):.3f}"

    # -- a user's pictures ---------------------------------------------------------------
    @staticmethod
    def probabilities(outputs, x: np.ndarray, tta: str = "none") -> np.ndarray:
        """[N, classes] probabilities of ``outputs(x)["logits"]``; with the run's ``tta == "flip"`` averaged
        with the mirrored picture's, as its test metric was measured."""
        probs = softmax(outputs(x)["logits"])
        if tta == "flip":
            probs = (probs + softmax(outputs(np.ascontiguousarray(x[..., ::-1]))["logits"])) / 2
        return probs

    def explain(self, outputs, x, meta, picture=None) -> str:
        """The top-3 classes with their probabilities."""
        p = self.probabilities(outputs, x, meta.get("tta", "none"))
        if p.shape != (1, len(meta["classes"])):
            raise ValueError(f"{meta['model']} gives scores of shape {list(p.shape)} for one picture, not the "
                             f"{len(meta['classes'])} classes its metadata names; export the run again")
        p = p[0]
        top = np.argsort(-p, kind="stable")[:TOP]
        return ", ".join(f"{meta['classes'][i]} {p[i]:.3f}" for i in top)

    def check_export(self, meta: dict) -> str | None:
        if meta.get("outputs") != ["logits"]:
            return f"outputs {meta.get('outputs')!r} (a classifier has one, 'logits')"
        from ..config import TTA_CHOICES

        if meta.get("tta", "none") not in TTA_CHOICES:
            return f"tta {meta.get('tta')!r} (none or flip)"
        return None


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
