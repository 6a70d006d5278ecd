"""Metrics and losses shared by the tasks; all stay on the device until the caller asks."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F


def correct(logits, y):
    """Number of correct top-1 predictions in a batch, as a float32 device tensor (no host sync)."""
    return (logits.argmax(axis=-1) == y).astype("float32").sum()


def accuracy(logits, y) -> float:
    """Top-1 accuracy of one batch as a Python float."""
    return float(correct(logits, y)) / int(y.shape[0])


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
