"""Metrics and losses shared by the tasks.

The per-batch pieces (``correct``, ``cross_entropy``, ``confusion_matrix``)
are device tensors, accumulated without a host sync; the summaries computed
once per evaluation (IoU from a confusion matrix, box matching and AP) run in
NumPy on the host.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

FULL_TEST_SET = 10_000     # Fashion-MNIST's test images


def interval95(accuracy: float, n: int = FULL_TEST_SET) -> float:
    """Half-width of the 95% normal-approximation interval of an accuracy measured on ``n`` images.

    >>> round(interval95(0.9), 4)
    0.0059
    """
    return 1.96 * (accuracy * (1 - accuracy) / n) ** 0.5


def correct(logits, y):
    """Number of correct top-1 predictions in a batch, as a float32 device tensor (no host sync)."""
    return (logits.astype("float32").argmax(axis=-1) == y).astype("float32").sum()  # fp32: bf16 argmax


def cross_entropy(logits, y, label_smoothing: float = 0.0):
    """Mean cross entropy over the batch, with optional label smoothing.

    Smoothing mixes the one-hot target with the uniform distribution:
    loss = (1 - eps) * CE(y) + eps * mean_k(-log p_k). Written out here because
    ``F.cross_entropy(label_smoothing=...)`` is not in every Paddle we support.
    """
    if not label_smoothing:
        return F.cross_entropy(logits, y)
    logp = F.log_softmax(logits, axis=-1)
    nll = -paddle.take_along_axis(logp, y.reshape([-1, 1]), axis=-1).mean()
    return (1.0 - label_smoothing) * nll + label_smoothing * (-logp.mean(axis=-1)).mean()


# --------------------------------------------------------------------------- segmentation (U-Net section)
def confusion_matrix(pred, target, num_classes: int):
    """int64 device tensor [C, C]: row = true class, column = predicted class, counted over all pixels.

    ``pred`` and ``target`` are integer tensors of the same shape (e.g.
    ``logits.argmax(1)`` and the mask [N, H, W]); one ``bincount``, no host sync.
    """
    index = target.flatten().astype("int64") * num_classes + pred.flatten().astype("int64")
    return paddle.bincount(index, minlength=num_classes * num_classes).reshape([num_classes, num_classes])


def pixel_accuracy(cm) -> float:
    """Fraction of pixels whose predicted class is the true one (trace over total)."""
    cm = np.asarray(cm, dtype=np.float64)
    return float(np.trace(cm) / max(cm.sum(), 1.0))


def per_class_iou(cm) -> np.ndarray:
    """IoU of each class, TP / (TP + FP + FN); NaN for a class absent from both truth and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm) -> float:
    """Mean of :func:`per_class_iou` over the classes present in the truth or the prediction.

    A class that appears in neither has no defined IoU (0/0) and is left out of
    the mean instead of counting as 0 or 1; a class predicted but absent from
    the truth has IoU 0 and does count.
    """
    iou = per_class_iou(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


# --------------------------------------------------------------------------- detection (DenseBox section)
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [n, m] of boxes a [n, 4] and b [m, 4], (x1, y1, x2, y2) in continuous coordinates."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match_detections(detections, ground_truth, iou_threshold: float = 0.5):
    """VOC matching of all images' detections, best score first.

    ``detections``: per image a dict with ``boxes`` [m, 4], ``scores`` [m] and
    optionally ``classes`` [m]; ``ground_truth``: per image (boxes [g, 4], labels [g]).
    A detection is a true positive when its highest-IoU ground-truth box has
    IoU >= the threshold and was not matched by a better-scored detection;
    otherwise (a miss or a duplicate) it is a false positive.
    Returns (tp [D] bool, class_correct [D] bool, number of ground-truth boxes),
    detections sorted by descending score.
    """
    flat = [(float(s), i, k) for i, d in enumerate(detections) for k, s in enumerate(d["scores"])]
    flat.sort(key=lambda t: -t[0])  # stable: ties keep image order
    taken = [np.zeros(len(g[0]), bool) for g in ground_truth]
    tp = np.zeros(len(flat), bool)
    class_ok = np.zeros(len(flat), bool)
    for n, (_, i, k) in enumerate(flat):
        gt_boxes, gt_labels = ground_truth[i]
        if len(gt_boxes) == 0:
            continue
        iou = box_iou(detections[i]["boxes"][k], gt_boxes)[0]
        j = int(iou.argmax())
        if iou[j] >= iou_threshold and not taken[i][j]:
            taken[i][j] = tp[n] = True
            classes = detections[i].get("classes")
            class_ok[n] = classes is not None and int(classes[k]) == int(gt_labels[j])
    return tp, class_ok, sum(len(g[0]) for g in ground_truth)


def average_precision(detections, ground_truth, iou_threshold: float = 0.5) -> float:
    """Class-agnostic AP at one IoU threshold, VOC all-point interpolation (VOC 2010+).

    Precision is made monotone from the right (each recall level takes the best
    precision at that recall or higher), then summed over every recall step.
    NaN when there is no ground truth.
    """
    tp, _, n_gt = match_detections(detections, ground_truth, iou_threshold)
    if n_gt == 0:
        return float("nan")
    hits = np.cumsum(tp)
    recall = hits / n_gt
    precision = hits / np.arange(1, len(tp) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def matched_class_accuracy(detections, ground_truth, iou_threshold: float = 0.5) -> float:
    """Fashion-MNIST accuracy of the detections that matched a ground-truth box (NaN if none did)."""
    tp, class_ok, _ = match_detections(detections, ground_truth, iou_threshold)
    return float(class_ok[tp].mean()) if tp.any() else float("nan")
