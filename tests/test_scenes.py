"""Fashion-MNIST scenes: determinism, masks agreeing with boxes, splits kept apart, device batches."""
import paddle_cnn  # noqa: F401  (before paddle)
import numpy as np
import paddle
import pytest

from paddle_cnn.data import MEAN, STD
from paddle_cnn.scenes import FashionScenes, SceneConfig, _tight_boxes, generate_scenes

from helpers import TRAIN_VALUE, blob_arrays

FIELDS = ("images", "masks", "instances", "boxes", "labels", "items", "counts")


def test_scene_is_a_pure_function_of_split_index_and_seed():
    a = blob_arrays()
    full = generate_scenes(a.train_images, a.train_labels, "train", range(40), seed=3)
    picked = generate_scenes(a.train_images, a.train_labels, "train", [39, 3, 17], seed=3)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(full, f)[[39, 3, 17]], getattr(picked, f), err_msg=f)
    other_seed = generate_scenes(a.train_images, a.train_labels, "train", range(40), seed=4)
    assert not np.array_equal(full.images, other_seed.images)
    # The split is part of the seed: the same images under another split name give other scenes.
    as_test = generate_scenes(a.train_images, a.train_labels, "test", range(40), seed=3)
    assert not np.array_equal(full.items, as_test.items)


@pytest.mark.parametrize("canvas", [48, 64])
def test_masks_and_boxes_agree(canvas):
    a = blob_arrays()
    cfg = SceneConfig(canvas=canvas)
    s = generate_scenes(a.train_images, a.train_labels, "train", range(200), seed=0, config=cfg)
    assert s.images.shape == (200, canvas, canvas) and s.images.dtype == np.uint8
    assert s.counts.min() >= 1 and s.counts.max() <= cfg.max_items
    assert (s.counts > 1).mean() > 0.3, "scenes should usually hold several items"
    # A pixel is an item pixel exactly when it is brighter than the threshold.
    np.testing.assert_array_equal(s.images > cfg.threshold, s.masks > 0)
    assert ((s.instances > 0) <= (s.masks > 0)).all()
    for j in range(len(s)):
        scene = s.scene(j)
        assert scene["instances"].max() <= len(scene["boxes"])
        for k, (box, label) in enumerate(zip(scene["boxes"], scene["labels"])):
            visible = scene["instances"] == k + 1
            assert visible.sum() >= cfg.min_visible
            tight, _ = _tight_boxes(visible[None])
            np.testing.assert_array_equal(box, tight[0])            # tight around the visible pixels
            assert (scene["mask"][visible] == label + 1).all()      # and labelled with its class
            assert label == a.train_labels[scene["items"][k]]
        assert (s.labels[j, len(scene["boxes"]):] == -1).all()


def test_later_item_on_top():
    """Where an item is visible the image shows that item, even over a brighter earlier item."""
    a = blob_arrays()
    value = np.arange(len(a.train_images)) * 37 % 200 + 50          # each item its own brightness
    images = np.where(a.train_images > 0, value[:, None, None], 0).astype(np.uint8)
    s = generate_scenes(images, a.train_labels, "train", range(300), seed=1)
    for j in range(len(s)):
        for k in range(s.counts[j]):
            visible = s.instances[j] == k + 1
            v = value[s.items[j, k]]
            assert (s.images[j][visible] <= v).all()          # never the brighter item below it
            assert (s.images[j][visible] == v).mean() > 0.5   # its interior shows its own value


def test_splits_never_mix():
    a = blob_arrays()
    train = generate_scenes(a.train_images, a.train_labels, "train", range(100))
    test = generate_scenes(a.test_images, a.test_labels, "test", range(100))
    assert train.images.max() <= TRAIN_VALUE          # bilinear scaling never exceeds the item's value
    assert test.images.max() > TRAIN_VALUE
    assert (train.items < len(a.train_images)).all() and (test.items < len(a.test_images)).all()


def test_device_batches_segmentation():
    a = blob_arrays()
    data = FashionScenes(SceneConfig(canvas=32), num_train=50, num_test=20, seed=5, arrays=a)
    assert data.num_train == 50 and data.steps_per_epoch(16) == 3
    batches = list(data.train_batches(16, epoch=2))
    assert len(batches) == 3
    x, mask = batches[0]
    assert x.shape == [16, 1, 32, 32] and x.dtype == paddle.float32
    assert mask.shape == [16, 32, 32] and mask.dtype == paddle.int64
    # The same (seed, epoch) gives the same batches; another epoch another order.
    again = next(data.train_batches(16, epoch=2))[1]
    other = next(data.train_batches(16, epoch=3))[1]
    assert (again == mask).all() and not (other == mask).all()
    # Normalised background is (0 - MEAN) / STD and item pixels belong to the mask.
    np.testing.assert_allclose(float(x.min()), -MEAN / STD, rtol=1e-5)
    raw = x.numpy()[:, 0] * STD + MEAN
    np.testing.assert_array_equal(raw > 32.5 / 255, mask.numpy() > 0)
    xs = [x for x, _ in data.test_batches(8)]
    assert sum(int(x.shape[0]) for x in xs) == 20
    assert data.source["name"] == "blobs" and data.source["scenes"]["canvas"] == 32


def test_flip_augmentation_flips_image_and_target_together():
    a = blob_arrays()
    data = FashionScenes(SceneConfig(canvas=32), num_train=32, num_test=8, arrays=a, augment="flip")
    for x, mask in data.train_batches(16, epoch=0):
        raw = x.numpy()[:, 0] * STD + MEAN
        np.testing.assert_array_equal(raw > 32.5 / 255, mask.numpy() > 0)
    # Detection maps: mirrored left-right and the two horizontal distances swapped.
    maps = paddle.arange(2 * 3 * 2 * 2, dtype="float32").reshape([2, 3, 2, 2])
    data.flip_channels = (0, 2)                                   # as DetectionTask builds its scenes
    _, flipped = data._flip(paddle.zeros([2, 1, 2, 2]), maps, paddle.to_tensor([True, False]))
    expect = maps.numpy().copy()
    expect[0] = expect[0][[2, 1, 0]][:, :, ::-1]
    np.testing.assert_array_equal(flipped.numpy(), expect)


def test_real_scenes(arrays):
    s = generate_scenes(arrays.test_images, arrays.test_labels, "test", range(300))
    np.testing.assert_array_equal(s.images > s.config.threshold, s.masks > 0)
    assert set(np.unique(s.masks)) == set(range(11))
    assert 1.5 < s.counts.mean() < 4
