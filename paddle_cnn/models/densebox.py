"""DenseBox (Huang et al., 2015), the detection section, on Fashion-MNIST scenes.

A fully convolutional network predicts, at every cell of a map with output
stride 4, a confidence that an item's centre is near and the four distances
from the cell to its box's sides; boxes come from thresholding the confidence,
turning each location's distances into a box, and non-maximum suppression.
As in the paper, a deeper feature map (stride 8) is up-sampled and
concatenated with a shallower one (stride 4), so each cell sees both detail
and a receptive field larger than an item.

This file holds the model, its training targets (numpy, computed once per
scene), its loss (with on-device hard-negative mining) and its decoder.

Target maps, one per scene, float32 [7, S/4, S/4], channels:
    0 T_CONF   1 on positive cells, else 0
    1 T_VALID  0 on ignored (gray-zone) cells, else 1
    2-5 T_DIST distances (cx - x1, cy - y1, x2 - cx, y2 - cy) / DIST_NORM from
               the cell centre (cx, cy) in input pixels; 0 off positives
    6 T_CLASS  Fashion-MNIST class of the owning box on positives, else -1
"""
from __future__ import annotations

from typing import List

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from ..blocks import check_input
from ..metrics import box_iou
from .registry import register

# (convs, out_channels) of each stage; stages 2-4 start with a 2x2 max-pool.
# The paper uses VGG19's conv1-conv4 (64-512 channels); a quarter of that suits 64x64 scenes,
# and batch norm after each conv lets it train from scratch in minutes.
STAGES = ((1, 16), (2, 32), (2, 64), (2, 128))
SHALLOW = 2            # stage index whose output (stride 4) receives the up-sampled deepest map
FUSE_CHANNELS = 64     # 1x1 conv after the concatenation, shared by the heads
STRIDE = 4             # output stride: the maps are (S/4) x (S/4)
MULTIPLE = 8           # input sides must be divisible by the deepest stride

# Targets: the paper's positive radius is 0.3 x the box size; we take the box
# size as sqrt(w * h) so that thin items (trousers) still get a round blob.
POS_RADIUS = 0.3
GRAY_CELLS = 2         # ignored ring around the positives, in output cells
DIST_NORM = 16.0       # distances in input pixels / 16: items are 20-42 px, targets stay around 0-2
T_CONF, T_VALID, T_DIST, T_CLASS = 0, 1, slice(2, 6), 6
NUM_TARGET_CHANNELS = 7
FLIP_CHANNELS = (2, 4)  # cx - x1 and x2 - cx swap under a horizontal flip


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3) -> list:
    return [nn.Conv2D(in_channels, out_channels, kernel, padding=kernel // 2, bias_attr=False),
            nn.BatchNorm2D(out_channels), nn.ReLU()]


class DenseBox(nn.Layer):
    """VGG-style FCN with a deep-to-shallow fusion and per-cell box heads.

    ``forward`` returns a dict of maps at stride 4, for an input [N, C, H, W]:

    * ``conf``: [N, 1, H/4, W/4] confidence after the sigmoid;
    * ``dist``: [N, 4, H/4, W/4] distances to (x1, y1, x2, y2), in DIST_NORM units;
    * ``cls``:  [N, num_classes, H/4, W/4] class logits (only when num_classes > 0).

    >>> {k: v.shape for k, v in DenseBox()(paddle.zeros([2, 1, 64, 64])).items()}
    {'conf': [2, 1, 16, 16], 'dist': [2, 4, 16, 16], 'cls': [2, 10, 16, 16]}
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int | None = None,
                 name: str = "densebox"):
        super().__init__()
        self.name, self.num_classes = name, num_classes
        if input_size is not None:
            self.check_size(input_size, input_size)
        stages, channels = [], in_channels
        for i, (convs, width) in enumerate(STAGES):
            layers = [nn.MaxPool2D(2, 2)] if i else []
            for _ in range(convs):
                layers += conv_bn_relu(channels, width)
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.LayerList(stages)      # outputs at strides 1, 2, 4, 8
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.fuse = nn.Sequential(*conv_bn_relu(STAGES[SHALLOW][1] + STAGES[-1][1], FUSE_CHANNELS, kernel=1))
        self.conf = nn.Conv2D(FUSE_CHANNELS, 1, 1)
        self.dist = nn.Conv2D(FUSE_CHANNELS, 4, 1)
        self.cls = nn.Conv2D(FUSE_CHANNELS, num_classes, 1) if num_classes > 0 else None

    def check_size(self, h: int, w: int) -> None:
        if h % MULTIPLE or w % MULTIPLE:
            raise ValueError(f"{self.name} needs input sides divisible by {MULTIPLE} (three 2x2 pools, then "
                             f"a 2x up-sampling back to stride {STRIDE}), got {h}x{w}")

    def forward(self, x):
        check_input(x, self.name, 2 * MULTIPLE)
        self.check_size(int(x.shape[-2]), int(x.shape[-1]))
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == SHALLOW:
                shallow = x                                       # [N, 64, H/4, W/4]
        x = paddle.concat([shallow, self.up(x)], axis=1)          # [N, 64 + 128, H/4, W/4]
        x = self.fuse(x)                                          # [N, 64, H/4, W/4]
        out = {"conf": F.sigmoid(self.conf(x)), "dist": self.dist(x)}
        if self.cls is not None:
            out["cls"] = self.cls(x)
        return out


# --------------------------------------------------------------------------- targets
def encode_targets(scenes, stride: int = STRIDE, chunk: int = 2048) -> np.ndarray:
    """Target maps [n, 7, S/stride, S/stride] for a :class:`paddle_cnn.scenes.SceneSet`.

    A cell is positive for a box when its centre lies within POS_RADIUS x
    sqrt(w h) of the box centre (the cell holding the centre always is);
    cells within GRAY_CELLS more cells are ignored. Where several boxes claim
    a cell as positive, the one with the nearest centre owns it.
    """
    return encode_boxes(scenes.boxes, scenes.labels, scenes.counts, scenes.config.canvas, stride, chunk)


def encode_boxes(boxes: np.ndarray, labels: np.ndarray, counts: np.ndarray, canvas: int,
                 stride: int = STRIDE, chunk: int = 2048) -> np.ndarray:
    """:func:`encode_targets` from padded arrays: boxes [n, K, 4], labels [n, K], counts [n]."""
    n, K = labels.shape
    G = canvas // stride
    centre = (np.arange(G) + 0.5) * stride                      # cell centres in input pixels
    out = np.zeros((n, NUM_TARGET_CHANNELS, G, G), np.float32)
    for a in range(0, n, chunk):
        b = boxes[a:a + chunk].astype(np.float32)               # [m, K, 4]
        real = np.arange(K)[None, :] < counts[a:a + chunk, None]
        bx, by = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
        radius = POS_RADIUS * np.sqrt((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]))
        dx = centre[None, None, None, :] - bx[..., None, None]  # [m, K, 1, G]
        dy = centre[None, None, :, None] - by[..., None, None]  # [m, K, G, 1]
        d = np.sqrt(dx ** 2 + dy ** 2)                          # [m, K, G, G]
        home = ((np.arange(G)[None, None, :, None] == (by // stride)[..., None, None])
                & (np.arange(G)[None, None, None, :] == (bx // stride)[..., None, None]))
        pos = real[..., None, None] & ((d <= radius[..., None, None]) | home)
        gray = real[..., None, None] & (d <= radius[..., None, None] + GRAY_CELLS * stride)
        owner = np.where(pos, d, np.inf).argmin(1)              # [m, G, G]
        positive = pos.any(1)
        own = np.take_along_axis(b, owner.reshape(len(b), -1, 1), 1).reshape(len(b), G, G, 4)
        cx, cy = centre[None, None, :], centre[None, :, None]
        dist = np.stack([cx - own[..., 0], cy - own[..., 1], own[..., 2] - cx, own[..., 3] - cy], 1) / DIST_NORM
        t = out[a:a + chunk]
        t[:, T_CONF] = positive
        t[:, T_VALID] = ~(gray.any(1) & ~positive)
        t[:, T_DIST] = np.where(positive[:, None], dist, 0)
        owner_label = np.take_along_axis(labels[a:a + chunk], owner.reshape(len(b), -1), 1).reshape(len(b), G, G)
        t[:, T_CLASS] = np.where(positive, owner_label, -1)
    return out


# --------------------------------------------------------------------------- loss
def _rank_desc(key):
    """Rank of each entry within its row, 0 for the largest (two argsorts, all on the device), as float32."""
    return paddle.argsort(paddle.argsort(key, axis=1, descending=True), axis=1).astype("float32")


def densebox_loss(out: dict, target, lambda_loc: float = 3.0, class_weight: float = 1.0,
                  hard_fraction: float = 0.5):
    """The paper's loss: L2 confidence on positives + mined negatives, plus lambda_loc x L2 distances.

    Negatives are mined per image to match its positives 1:1: the
    ``hard_fraction`` with the largest confidence error, the rest drawn at
    random among the other negatives (``paddle.rand``, i.e. Paddle's seeded
    generator). Both choices are ranks computed for the whole batch at once.
    Ignored cells never enter any term. With a class head, its cross entropy
    over positives is added with ``class_weight``.
    """
    conf = out["conf"].flatten(1)                                     # [B, M]
    pos = target[:, T_CONF].flatten(1)                                # [B, M] 0/1
    neg = target[:, T_VALID].flatten(1) * (1 - pos)
    err = (conf - pos) ** 2
    n_pos = pos.sum(1, keepdim=True)                                  # [B, 1]
    n_neg = paddle.minimum(n_pos, neg.sum(1, keepdim=True))
    n_hard = paddle.ceil(n_neg * hard_fraction)
    hardness = paddle.where(neg > 0, err.detach(), paddle.full_like(err, -1.0))
    hard = neg * (_rank_desc(hardness) < n_hard).astype("float32")             # the hardest half
    rest = neg - hard
    lottery = paddle.where(rest > 0, paddle.rand(rest.shape), paddle.full_like(rest, -1.0))
    rand = rest * (_rank_desc(lottery) < n_neg - n_hard).astype("float32")   # the other half at random
    chosen = pos + hard + rand
    loss = (err * chosen).sum() / chosen.sum().clip(min=1.0)

    n_all = pos.sum().clip(min=1.0)
    sq = ((out["dist"] - target[:, T_DIST]) ** 2).sum(1).flatten(1)  # [B, M]
    loss = loss + lambda_loc * (sq * pos).sum() / n_all
    if "cls" in out and class_weight:
        logits = out["cls"].transpose([0, 2, 3, 1]).reshape([-1, out["cls"].shape[1]])
        label = target[:, T_CLASS].flatten().clip(min=0).astype("int64")
        ce = F.cross_entropy(logits, label, reduction="none").flatten()
        loss = loss + class_weight * (ce * pos.flatten()).sum() / n_all
    return loss


# --------------------------------------------------------------------------- decoding
def nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices kept, best score first; a box goes when its IoU with a kept one exceeds the threshold."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i, order = order[0], order[1:]
        keep.append(i)
        order = order[box_iou(boxes[i:i + 1], boxes[order])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, backend: str = "auto") -> np.ndarray:
    """Greedy NMS with ``paddle.vision.ops.nms`` when this Paddle has it ('auto'), else :func:`nms_numpy`."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    op = getattr(getattr(paddle.vision, "ops", None), "nms", None)
    if backend == "numpy" or (backend == "auto" and op is None):
        return nms_numpy(boxes, scores, iou_threshold)
    if op is None:
        raise ValueError("this Paddle has no paddle.vision.ops.nms; use backend='numpy'")
    kept = op(paddle.to_tensor(boxes.astype(np.float32)), iou_threshold,
              scores=paddle.to_tensor(scores.astype(np.float32)))
    return kept.numpy().astype(np.int64).reshape(-1)


def decode(out: dict, score_threshold: float = 0.05, nms_iou: float = 0.5, max_detections: int = 20,
           stride: int = STRIDE, backend: str = "auto") -> List[dict]:
    """Detections per image: cells above the threshold -> boxes from their distances -> NMS.

    Returns one dict per image with ``boxes`` [m, 4] (input pixels), ``scores``
    [m] and ``classes`` [m] (argmax of the class head, -1 without one).
    """
    conf = out["conf"].numpy()[:, 0]                                        # [B, G, G]
    dist = out["dist"].numpy() * DIST_NORM                                  # [B, 4, G, G]
    cls = out["cls"].numpy().argmax(1) if "cls" in out else np.full(conf.shape, -1)
    G = conf.shape[-1]
    cx = (np.arange(G) + 0.5) * stride
    boxes = np.stack([cx[None, None, :] - dist[:, 0], cx[None, :, None] - dist[:, 1],
                      cx[None, None, :] + dist[:, 2], cx[None, :, None] + dist[:, 3]], -1)  # [B, G, G, 4]
    dets = []
    for j in range(len(conf)):
        hit = conf[j] >= score_threshold
        b, s, c = boxes[j][hit].astype(np.float32), conf[j][hit], cls[j][hit]
        keep = nms(b, s, nms_iou, backend)[:max_detections]
        dets.append({"boxes": b[keep].reshape(-1, 4), "scores": s[keep], "classes": c[keep]})
    return dets


@register(section="densebox", title=("DenseBox (object detection)", "DenseBox（目标检测）"),
          task="detection", min_size=2 * MULTIPLE,
          profiles=dict(
              # For a GPU: 20k scenes x 30 epochs of 64x64, Adam with a cosine decay.
              course=dict(resize=64, epochs=30, batch_size=32, lr=1e-3, optimizer="adam", schedule="cosine",
                          task_args=dict(num_train_scenes=20000, num_test_scenes=2000)),
              # 2026-11-25, our shared 2-core CPU: a training step runs at 82-170 scenes/s and 24k
              # scene-steps already gave AP50 0.91 (class acc 0.72); 20k scenes x 6 epochs is 12-20 min,
              # the extra epochs mostly for the class head. One MKL thread: 172 vs 165 scenes/s
              # on two (`python -m benchmarks.threads densebox`).
              cpu=dict(resize=64, epochs=6, batch_size=32, lr=3e-3, optimizer="adam", schedule="cosine",
                       task_args=dict(num_train_scenes=20000, num_test_scenes=1000), cpu_threads=1),
              # Seconds: 256 scenes, one epoch.
              smoke=dict(resize=64, epochs=1, batch_size=16, lr=3e-3, optimizer="adam",
                         task_args=dict(num_train_scenes=256, num_test_scenes=64)),
          ))
def densebox(num_classes: int = 10, in_channels: int = 1, input_size: int = 64) -> DenseBox:
    """DenseBox with the optional class head on (num_classes=0 leaves it off).

    >>> densebox()(paddle.zeros([1, 1, 64, 64]))["dist"].shape
    [1, 4, 16, 16]
    """
    return DenseBox(num_classes, in_channels, input_size, name="densebox")
