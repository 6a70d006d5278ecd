"""Detection (the DenseBox section): targets, loss, decoding, AP50 and box pictures.

DenseBox (Huang et al., 2015) predicts at every cell of a stride-4 map a
confidence that an item's centre is near and the four distances to its box's
sides. This task turns scene boxes into those target maps (NumPy, once per
scene), trains them with the paper's loss (on-device hard-negative mining),
and decodes the maps into boxes (threshold, distances to boxes, NMS).

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

from .. import metrics
from ..metrics import box_iou
from ..models.densebox import STRIDE
from ..runtime import evaluating
from ..scene_plots import TRUTH_STYLE, draw_boxes, new_grid, side_by_side, truth_prediction_legend
from ._base import finite_number, save_picture
from ._scene import SceneTask, cell_axes

# Targets: the paper's positive radius is 0.3 x the box size; we take the box
# size as sqrt(w * h) so that thin items (trousers) still get a round blob.
POS_RADIUS = 0.3
GRAY_CELLS = 2         # ignored ring around the positives, in output cells
DIST_NORM = 16.0       # distances in input pixels / 16: items are 20-42 px, targets stay around 0-2
T_CONF, T_VALID, T_DIST, T_CLASS = 0, 1, slice(2, 6), 6
NUM_TARGET_CHANNELS = 7
FLIP_CHANNELS = (2, 4)  # cx - x1 and x2 - cx swap under a horizontal flip
DRAW_SCORE = 0.3       # ``paddle-cnn predict`` draws and lists detections at least this confident
LISTED = 5             # boxes named in predict's line (all are drawn)


class DetectionTask(SceneTask):
    """DenseBox detection; headline metric: class-agnostic AP at IoU 0.5, plus matched class accuracy.

    The train metric is the recall of the confidence map on positive cells:
    the fraction of cells inside a box's centre region (target confidence 1)
    where the predicted confidence exceeds 0.5. Nearly all cells are
    background, so an accuracy over all cells sits near 1.0 from the first
    epoch and says nothing; the recall climbs as the map learns the objects.
    Numerator and denominator stay on the device (no host sync per step).
    """
    name = "detection"
    metric = "ap50"
    metric_label = "test AP50"
    final_keys = ("ap50", "class_acc")
    summary_labels = ("test AP50", "training scenes/sec (log)")
    train_metric_label = "train positive-cell recall"
    # No train counterpart of AP50 exists (it needs decoding and NMS), so the train recall gets its own panel.
    curve_panels = (("loss", (("train_loss", "train"),)),
                    ("positive-cell recall", (("train_metric", "train"),)),
                    ("AP50", (("ap50", "test"),)),
                    ("class accuracy of matched boxes", (("class_acc", "test"),)))
    prediction_grid = (2, 4)     # fewer, larger scenes: their boxes and labels must stay readable
    task_defaults = dict(lambda_loc=3.0, class_weight=1.0, hard_fraction=0.5,
                         score_threshold=0.05, nms_iou=0.5, max_detections=20)

    def _data_kwargs(self) -> dict:
        return dict(target_fn=encode_targets, target_dtype="float32", flip_channels=FLIP_CHANNELS)

    def loss(self, out, target):
        a = self.options
        return densebox_loss(out, target, a["lambda_loc"], a["class_weight"], a["hard_fraction"])

    def train_hits(self, out, target):
        positive = ((target[:, T_CONF] > 0.5) & (target[:, T_VALID] > 0.5)).astype("float32")
        found = (out["conf"][:, 0] > 0.5).astype("float32") * positive
        return found.sum(), positive.sum()

    @paddle.no_grad()
    def detect(self, model, data, count: int | None = None, batch_size: int = 256) -> list:
        """Decoded detections (dicts of boxes, scores, classes) of the first ``count`` test scenes.

        The model must be in eval mode. Each batch's maps cross to the host once;
        thresholding and NMS then run in NumPy, with no per-image device round trip.
        """
        a = self.options
        dets = []
        for x, _ in data.test_batches(batch_size):
            dets += decode(model(x), a["score_threshold"], a["nms_iou"], a["max_detections"])
            if count is not None and len(dets) >= count:
                break
        return dets[:count]

    @paddle.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict:
        dets = self.detect(model, data, batch_size=batch_size)
        s = data.test_scenes
        truth = [(s.boxes[j, :s.counts[j]], s.labels[j, :s.counts[j]]) for j in range(len(s))]
        return {"ap50": metrics.average_precision(dets, truth, 0.5),
                "class_acc": metrics.matched_class_accuracy(dets, truth, 0.5),
                "dets_per_scene": sum(len(d["scores"]) for d in dets) / max(1, len(dets))}

    def draw_predictions(self, fig, grid, model, data, cfg=None, count: int = 16, score_threshold: float = 0.5):
        """One scene per cell: true boxes dashed white, detections above ``score_threshold`` with class and score.

        ``cfg``: the run's config (its decoding settings), when this task is not bound to it already.
        """
        task = self.bind(cfg) if cfg is not None else self
        rows, cols = grid.get_geometry()
        dets = task.detect(model, data, min(count, rows * cols))
        for j, d in enumerate(dets):
            _draw_scene(cell_axes(fig, grid, j // cols, j % cols), data.test_scenes.scene(j), d, data.canvas,
                        score_threshold, fontsize=7)
        truth_prediction_legend(fig)

    # -- exports and a user's pictures ---------------------------------------------------------
    def export_meta(self) -> dict:
        a = self.options
        return {"detection": {"stride": STRIDE, "dist_norm": DIST_NORM, "score_threshold": a["score_threshold"],
                              "nms_iou": a["nms_iou"], "max_detections": a["max_detections"]}}

    def check_export(self, meta: dict) -> str | None:
        d = meta.get("detection")
        ok = (isinstance(d, dict) and isinstance(d.get("stride"), int) and not isinstance(d["stride"], bool)
              and 1 <= d["stride"] <= 64 and finite_number(d.get("dist_norm"), 1e-6)
              and finite_number(d.get("score_threshold"), 0, 1) and finite_number(d.get("nms_iou"), 0, 1)
              and isinstance(d.get("max_detections"), int) and not isinstance(d["max_detections"], bool)
              and 1 <= d["max_detections"] <= 10_000)
        if not ok:
            return ("detection (stride 1-64, dist_norm > 0, score_threshold and nms_iou in [0, 1], "
                    "max_detections 1-10000)")
        outputs = meta.get("outputs")
        if not isinstance(outputs, list) or not {"conf", "dist"} <= set(outputs) or not set(outputs) <= {
                "conf", "dist", "cls"}:
            return f"outputs {outputs!r} (a DenseBox has conf, dist and optionally cls)"
        return None

    def explain(self, outputs, x, meta, picture=None) -> str:
        """The boxes scoring at least :data:`DRAW_SCORE` after NMS, drawn on the picture."""
        d, classes = meta["detection"], meta["classes"]
        out = {k: paddle.to_tensor(v) for k, v in outputs(x).items()}
        det = decode(out, d["score_threshold"], d["nms_iou"], d["max_detections"], stride=d["stride"])[0]
        keep = det["scores"] >= DRAW_SCORE
        boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["classes"][keep]
        listed = ", ".join(f"{classes[c] if 0 <= c < len(classes) else 'item'} {s:.2f}"
                           for c, s in zip(labels[:LISTED], scores))
        if len(boxes) > LISTED:
            listed += f" and {len(boxes) - LISTED} more"
        shown = picture.shown

        def draw(ax):
            ax.imshow(shown, cmap="gray", vmin=0, vmax=255)
            draw_boxes(ax, boxes, labels, scores, fontsize=7, linewidth=2)
            ax.set_xlim(-0.5, shown.shape[1] - 0.5)
            ax.set_ylim(shown.shape[0] - 0.5, -0.5)
            ax.set_title("predicted boxes", fontsize=9)

        what = f"{len(boxes)} box{'es' if len(boxes) != 1 else ''} with score >= {DRAW_SCORE}"
        save_picture(side_by_side(shown, picture.title, draw, what), picture.path)
        return f"{what}{': ' + listed if listed else ''} -> {picture.path}"


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


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, backend: str = "numpy") -> np.ndarray:
    """Greedy NMS: :func:`nms_numpy` ('numpy', for boxes already on the host), or ``paddle.vision.ops.nms``
    ('paddle'; 'auto' takes it when this Paddle has it)."""
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
           stride: int = STRIDE, backend: str = "numpy") -> List[dict]:
    """Detections per image: cells above the threshold -> boxes from their distances -> NMS.

    Returns one dict per image with ``boxes`` [m, 4] (input pixels), ``scores``
    [m] and ``classes`` [m] (argmax of the class head, -1 without one).
    """
    conf = out["conf"].astype("float32").numpy()[:, 0]                      # [B, G, G]
    dist = out["dist"].astype("float32").numpy() * DIST_NORM                # [B, 4, G, G]
    cls = out["cls"].astype("float32").numpy().argmax(1) if "cls" in out else np.full(conf.shape, -1)
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


# --------------------------------------------------------------------------- pictures
def _draw_scene(ax, scene, det, canvas: int, score_threshold: float, fontsize: float = 6) -> None:
    """One scene: true boxes dashed white, the NMS-kept detections at or above ``score_threshold``."""
    ax.imshow(scene["image"], cmap="gray", vmin=0, vmax=255)
    draw_boxes(ax, scene["boxes"], linewidth=1.2, **TRUTH_STYLE)
    keep = det["scores"] >= score_threshold
    draw_boxes(ax, det["boxes"][keep], det["classes"][keep], det["scores"][keep], fontsize=fontsize, linewidth=2)
    ax.set_xlim(-0.5, canvas - 0.5)
    ax.set_ylim(canvas - 0.5, -0.5)
    ax.set_xlabel(f"{len(scene['boxes'])} true, {int(keep.sum())} detected (score >= {score_threshold})",
                  fontsize=8)


def plot_detections(model, data, count: int = 6, cfg=None, score_threshold: float = 0.3, fig=None,
                    cols: int = 3, size: float = 4.0):
    """Test scenes with true boxes (dashed white) and detections (class colour, class name and score).

    Only the boxes that survive non-maximum suppression (``decode``) and score at
    least ``score_threshold`` are drawn; a legend under the figure tells truth
    from prediction. ``size`` is the side of one panel in inches.
    """
    with evaluating(model):
        dets = DetectionTask(cfg).detect(model, data, count)
    count = len(dets)
    cols = min(count, cols)
    fig, axes = new_grid(-(-count // cols), cols, size=size, fig=fig)
    for j, ax in enumerate(axes.flat):
        if j < count:
            _draw_scene(ax, data.test_scenes.scene(j), dets[j], data.canvas, score_threshold, fontsize=8)
        else:
            ax.axis("off")
    fig.suptitle(f"detections with score >= {score_threshold} after NMS", fontsize=10)
    truth_prediction_legend(fig)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig


def precision_recall(model, data, cfg=None, iou_threshold: float = 0.5):
    """Precision, recall and score of every detection on the test scenes, best score first.

    The matching is :func:`paddle_cnn.metrics.match_detections` (the one behind AP50).
    """
    with evaluating(model):
        dets = DetectionTask(cfg).detect(model, data)
    s = data.test_scenes
    truth = [(s.boxes[j, :s.counts[j]], s.labels[j, :s.counts[j]]) for j in range(len(s))]
    tp, _, n_gt = metrics.match_detections(dets, truth, iou_threshold)
    scores = np.sort(np.concatenate([d["scores"] for d in dets] or [np.zeros(0)]))[::-1]
    hits = np.cumsum(tp)
    precision = hits / np.arange(1, len(tp) + 1)
    recall = hits / max(n_gt, 1)
    return precision, recall, scores, metrics.average_precision(dets, truth, iou_threshold)


def plot_pr_curve(model, data, cfg=None, iou_threshold: float = 0.5, score_threshold: float = 0.3, fig=None):
    """The precision-recall curve behind AP (VOC matching at ``iou_threshold``), with its AP in the title.

    The dashed line is the monotone envelope that AP integrates; the dot marks
    the ``score_threshold`` the prediction pictures use.
    """
    import matplotlib.pyplot as plt

    precision, recall, scores, ap = precision_recall(model, data, cfg, iou_threshold)
    fig = fig or plt.figure(figsize=(4.8, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(recall, precision, "-", linewidth=1.2, label="precision")
    if len(precision):
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        ax.plot(recall, envelope, "--", linewidth=1, label="envelope (area = AP)")
        at = int(np.searchsorted(-scores, -score_threshold, side="right")) - 1
        if at >= 0:
            ax.plot(recall[at], precision[at], "o", color="C3", label=f"score >= {score_threshold}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"AP{round(iou_threshold * 100)} = {ap:.3f}, {len(scores)} detections", fontsize=9)
    fig.tight_layout()
    return fig


def plot_targets(scene, target: np.ndarray, canvas: int, fig=None):
    """A scene's training targets: image and boxes | positive / ignored / negative cells | distance to the left edge.

    ``target`` is one scene's [7, S/4, S/4] map from :func:`encode_targets`; the
    maps are stretched onto the image's pixel grid so boxes and cells line up.
    """
    fig, axes = new_grid(1, 3, size=3.4, fig=fig)
    axes = axes[0]
    state = np.where(target[T_VALID] == 0, 0.5, target[T_CONF])     # 1 positive, 0.5 ignored, 0 negative
    extent = (-0.5, canvas - 0.5, canvas - 0.5, -0.5)
    axes[0].imshow(scene["image"], cmap="gray", vmin=0, vmax=255)
    axes[1].imshow(state, extent=extent, vmin=0, vmax=1)
    axes[2].imshow(target[T_DIST][0] * DIST_NORM, extent=extent, cmap="magma")
    for ax, title in zip(axes, ("image and boxes", "positive (yellow) / ignored (green) / negative",
                                "distance to the left edge (px)")):
        draw_boxes(ax, scene["boxes"], scene["labels"])
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
