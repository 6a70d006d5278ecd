"""DenseBox: targets and decoding, loss with mining, NMS, AP, receptive fields, a short real training run."""
import paddle_cnn  # noqa: F401  (before paddle)
import numpy as np
import paddle
import pytest
from paddle import nn

from paddle_cnn import metrics
from paddle_cnn.models import get_model, get_spec
from paddle_cnn.models.densebox import STRIDE, DenseBox
from paddle_cnn.tasks.detection import (DIST_NORM, T_CLASS, T_CONF, T_DIST, T_VALID, decode, densebox_loss,
                                        encode_boxes, encode_targets, nms, nms_numpy)
from paddle_cnn.receptive_field import receptive_field
from paddle_cnn.scenes import generate_scenes


def ideal_output(t: np.ndarray) -> dict:
    """The output a perfect network would give for target maps t [n, 7, G, G]."""
    classes = np.maximum(t[:, T_CLASS], 0).astype(int)
    logits = np.eye(10, dtype=np.float32)[classes].transpose(0, 3, 1, 2) * 10
    return {"conf": paddle.to_tensor(t[:, T_CONF:T_CONF + 1]), "dist": paddle.to_tensor(t[:, T_DIST]),
            "cls": paddle.to_tensor(logits)}


def test_output_maps_and_size_rule():
    out = DenseBox()(paddle.zeros([2, 1, 64, 48]))
    assert {k: v.shape for k, v in out.items()} == {"conf": [2, 1, 16, 12], "dist": [2, 4, 16, 12],
                                                     "cls": [2, 10, 16, 12]}
    assert float(out["conf"].min()) >= 0 and float(out["conf"].max()) <= 1
    assert set(DenseBox(num_classes=0)(paddle.zeros([1, 1, 32, 32]))) == {"conf", "dist"}
    with pytest.raises(ValueError, match="densebox needs input sides divisible by 8"):
        DenseBox()(paddle.zeros([1, 1, 60, 60]))
    spec = get_spec("densebox")
    assert spec.task == "detection" and spec.section == "densebox"
    assert get_model("densebox")(paddle.zeros([1, 1, 64, 64]))["dist"].shape == [1, 4, 16, 16]


# --------------------------------------------------------------------------- targets
def test_targets_by_hand():
    # One 20x20 box centred on (30, 30): radius 0.3 * 20 = 6 px, gray ring 8 px more.
    boxes = np.array([[[20, 20, 40, 40]]], np.float32)
    t = encode_boxes(boxes, np.array([[7]]), np.array([1]), canvas=64)[0]
    assert t.shape == (7, 16, 16)
    cy, cx = np.nonzero(t[T_CONF])
    centres = (np.stack([cx, cy], 1) + 0.5) * STRIDE
    assert np.all(np.hypot(*(centres - 30).T) <= 6 + 1e-6)
    # Cell centres sit at 2 + 4j; within 6 px of (30, 30) lie the 3x3 cells around cell (7, 7).
    assert t[T_CONF].sum() == 9 and t[T_CONF, 6:9, 6:9].all()
    ring = (t[T_VALID] == 0)
    assert ring.sum() > 0 and not (ring & (t[T_CONF] == 1)).any()
    ry, rx = np.nonzero(ring)
    assert np.all(np.hypot(*((np.stack([rx, ry], 1) + 0.5) * STRIDE - 30).T) <= 6 + 2 * STRIDE + 1e-6)
    # Distances of cell (7, 7), centre (30, 30): 10 px to every side.
    np.testing.assert_allclose(t[T_DIST, 7, 7], [10 / DIST_NORM] * 4)
    assert t[T_CLASS, 7, 7] == 7 and t[T_CLASS, 0, 0] == -1


def test_tiny_box_still_gets_its_centre_cell():
    boxes = np.array([[[33, 33, 36, 36]]], np.float32)       # 3x3 px: radius 0.9 px, no cell centre inside
    t = encode_boxes(boxes, np.array([[1]]), np.array([1]), canvas=64)[0]
    assert t[T_CONF].sum() == 1 and t[T_CONF, 34 // 4, 34 // 4] == 1


def test_nearest_centre_owns_shared_positives():
    boxes = np.array([[[0, 0, 40, 40], [24, 0, 64, 40]]], np.float32)   # centres (20, 20) and (44, 20)
    t = encode_boxes(boxes, np.array([[1, 2]]), np.array([2]), canvas=64)[0]
    pos = t[T_CONF] == 1
    ys, xs = np.nonzero(pos)
    cx = (xs + 0.5) * STRIDE
    expect = np.where(np.abs(cx - 20) < np.abs(cx - 44), 1, 2)
    np.testing.assert_array_equal(t[T_CLASS][pos], expect)
    assert (expect == 1).any() and (expect == 2).any()


def _synthetic_scenes(n=200, seed=0):
    rng = np.random.RandomState(seed)
    images = np.zeros((100, 28, 28), np.uint8)
    for img in images:
        h, w = rng.randint(8, 25, size=2)
        y, x = rng.randint(0, 29 - h), rng.randint(0, 29 - w)
        img[y:y + h, x:x + w] = 200
    return generate_scenes(images, (np.arange(100) % 10).astype(np.uint8), "test", range(n), seed)


def test_encoding_then_decoding_the_ideal_map_recovers_the_boxes():
    scenes = _synthetic_scenes()
    t = encode_targets(scenes)
    dets = decode(ideal_output(t), score_threshold=0.5, nms_iou=0.5)
    for j, d in enumerate(dets):
        truth = scenes.boxes[j, :scenes.counts[j]]
        assert len(d["boxes"]) == len(truth)
        iou = metrics.box_iou(d["boxes"], truth)
        assert iou.max(0).min() > 0.99
        matched = iou.argmax(1)
        np.testing.assert_array_equal(d["classes"], scenes.labels[j, matched])


# --------------------------------------------------------------------------- loss
def test_loss_mines_one_negative_per_positive_half_of_them_hardest():
    rng = np.random.RandomState(0)
    t = encode_targets(_synthetic_scenes(4))
    conf = paddle.to_tensor(rng.rand(4, 1, 16, 16).astype("float32"), stop_gradient=False)
    out = {"conf": conf, "dist": paddle.to_tensor(t[:, T_DIST])}
    densebox_loss(out, paddle.to_tensor(t)).backward()
    grad = conf.grad.numpy()[:, 0]
    c = conf.numpy()[:, 0]
    for j in range(4):
        pos, valid = t[j, T_CONF] == 1, t[j, T_VALID] == 1
        neg = valid & ~pos
        used_neg = (grad[j] != 0) & neg
        assert ((grad[j] != 0) & ~valid).sum() == 0                 # ignored cells never contribute
        n = min(pos.sum(), neg.sum())
        assert used_neg.sum() == n
        hardest = np.sort(c[j][neg])[::-1][:int(np.ceil(n / 2))]   # the largest confidences on negatives
        assert set(hardest) <= set(c[j][used_neg])


def test_loss_is_zero_for_the_ideal_output_and_ignores_the_gray_zone():
    t = encode_targets(_synthetic_scenes(8))
    ideal = ideal_output(t)
    assert float(densebox_loss(ideal, paddle.to_tensor(t))) < 1e-3
    noisy = dict(ideal, conf=paddle.where(paddle.to_tensor(t[:, T_VALID:T_VALID + 1]) == 0,
                                          paddle.full_like(ideal["conf"], 0.7), ideal["conf"]))
    assert float(densebox_loss(noisy, paddle.to_tensor(t))) < 1e-3
    wrong = dict(ideal, dist=ideal["dist"] + 0.1)
    assert float(densebox_loss(wrong, paddle.to_tensor(t), class_weight=0)) == pytest.approx(3 * 4 * 0.01, rel=1e-4)


# --------------------------------------------------------------------------- NMS
def nms_brute_force(boxes, scores, threshold):
    """Reference: walk boxes by score, keep one unless a kept box overlaps it by more than the threshold."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union

    keep = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[k]) <= threshold for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_against_brute_force_and_paddle(seed, threshold):
    rng = np.random.RandomState(seed)
    xy = rng.uniform(0, 40, (60, 2))
    wh = rng.uniform(4, 24, (60, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(60).astype(np.float32) / 60            # distinct scores: one right answer
    expect = nms_brute_force(boxes, scores, threshold)
    assert list(nms_numpy(boxes, scores, threshold)) == expect
    if getattr(getattr(paddle.vision, "ops", None), "nms", None) is not None:
        assert list(nms(boxes, scores, threshold, backend="paddle")) == expect
    assert list(nms(boxes, scores, threshold)) == expect


# --------------------------------------------------------------------------- AP
GT = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([1, 2]))]
HIT1, HIT2, MISS = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]


def dets(*pairs, classes=None):
    boxes = np.array([b for b, _ in pairs], np.float32).reshape(-1, 4)
    out = {"boxes": boxes, "scores": np.array([s for _, s in pairs], np.float32)}
    if classes is not None:
        out["classes"] = np.array(classes)
    return [out]


@pytest.mark.parametrize("detections, expected", [
    (dets((HIT1, 0.9), (HIT2, 0.8)), 1.0),                          # perfect
    (dets((HIT1, 0.9)), 0.5),                                       # one box missed: recall stops at 1/2
    (dets((HIT1, 0.9), (MISS, 0.8), (HIT2, 0.7)), 0.5 + 0.5 * 2 / 3),   # a false positive between the hits
    (dets((MISS, 0.95), (HIT1, 0.9), (HIT2, 0.7)), 2 / 3),         # the false positive ranked first
    (dets((HIT1, 0.9), (HIT1, 0.85), (HIT2, 0.7)), 0.5 + 0.5 * 2 / 3),  # a duplicate counts as false positive
    (dets((HIT1, 0.9), (HIT2, 0.8), (HIT1, 0.1)), 1.0),             # a late duplicate costs nothing
    (dets(([1, 1, 11, 11], 0.9), ([20, 20, 30, 40], 0.8)), 1.0),    # IoU 0.68 is a hit, IoU 0.5 exactly too
    (dets((HIT1, 0.9), ([20, 20, 30, 40.5], 0.8)), 0.5),            # IoU 0.488 is not
])
def test_average_precision_by_hand(detections, expected):
    assert metrics.average_precision(detections, GT, 0.5) == pytest.approx(expected)


def test_ap_over_several_images_and_class_accuracy():
    gt = GT + [(np.array([[5, 5, 15, 15]], np.float32), np.array([3]))]
    detections = dets((HIT1, 0.9), (HIT2, 0.4), classes=[1, 0]) + dets(([5, 5, 15, 15], 0.6), classes=[3])
    assert metrics.average_precision(detections, gt) == pytest.approx(1.0)
    assert metrics.matched_class_accuracy(detections, gt) == pytest.approx(2 / 3)
    assert np.isnan(metrics.matched_class_accuracy(dets((MISS, 0.9), classes=[1]), GT))


# --------------------------------------------------------------------------- receptive field
def test_receptive_field_by_hand():
    net = nn.Sequential(
        nn.Conv2D(1, 1, 3, padding=1), nn.ReLU(), nn.Conv2D(1, 1, 3, padding=1),
        nn.Sequential(nn.MaxPool2D(2, 2), nn.Conv2D(1, 1, 3)),          # nesting is walked into
        nn.Conv2D(1, 1, 5, stride=2, padding=2), nn.Conv2D(1, 1, 3, padding=2, dilation=2),
    )
    rows = receptive_field(net, 32)
    #                    size  jump  rf  start
    expected = [(32, 1, 3, 0.0), (32, 1, 5, 0.0), (16, 2, 6, 0.5), (14, 2, 10, 2.5), (7, 4, 18, 2.5), (7, 4, 34, 2.5)]
    assert [(r.size, r.jump, r.rf, r.start) for r in rows] == expected
    assert [r.kind for r in rows] == ["Conv2D", "Conv2D", "MaxPool2D", "Conv2D", "Conv2D", "Conv2D"]
    assert "rf" in str(rows).splitlines()[0] and len(str(rows).splitlines()) == 7


def test_receptive_field_matches_the_gradient_support():
    """Reference: the input pixels whose gradient reaches one output unit (all-ones weights, average pools)."""
    net = nn.Sequential(nn.Conv2D(1, 1, 3, padding=1), nn.AvgPool2D(2, 2), nn.Conv2D(1, 1, 3),
                        nn.Conv2D(1, 1, 5, stride=2, padding=2), nn.AvgPool2D(3, stride=2, padding=1))
    for layer in net:
        if isinstance(layer, nn.Conv2D):
            layer.weight.set_value(paddle.ones(layer.weight.shape))
    size, unit = 64, 3
    last = receptive_field(net, size)[-1]
    x = paddle.zeros([1, 1, size, size])
    x.stop_gradient = False
    y = net(x)
    assert y.shape[-1] == last.size
    y[0, 0, unit, unit].backward()
    rows = np.flatnonzero(np.abs(x.grad.numpy()[0, 0]).sum(1) > 0)
    assert len(rows) == last.rf and rows.min() + (last.rf - 1) / 2 == last.start + unit * last.jump


# --------------------------------------------------------------------------- real training
@pytest.mark.slow
def test_short_training_improves_ap(arrays):
    from paddle_cnn import build_model, TrainConfig, Trainer

    cfg = TrainConfig(model="densebox", resize=64, epochs=2, batch_size=16, lr=3e-3, optimizer="adam",
                      eval_batch_size=128, task_args=dict(num_train_scenes=384, num_test_scenes=96))
    trainer = Trainer(cfg, progress=False, log=None)
    data = trainer.task.build_data(cfg, arrays=arrays)
    model = build_model(cfg)
    before = trainer.evaluate(model, data)
    after = trainer.fit(model, data).final
    assert after["ap50"] > before["ap50"] + 0.2, (before, after)
    assert 0 <= after["class_acc"] <= 1
