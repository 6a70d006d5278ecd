"""Fashion-MNIST scenes: several items on one canvas, with masks and boxes (U-Net and DenseBox sections).

A scene is an S x S canvas (64 by default) holding 1 to K Fashion-MNIST items
(K = 4 by default), each rescaled (0.75x-1.5x) and pasted at a random place.
For every scene we keep

* ``images``: the uint8 picture;
* ``masks``: the semantic mask, 0 = background and ``label + 1`` for an item's
  pixels (those brighter than ``threshold``), 11 classes in all;
* ``boxes`` / ``labels``: the tight box of each item's *visible* mask pixels
  (after occlusion by later items) and its Fashion-MNIST class.

How items are stacked: items are pasted in order and a later item is on top.
Where its own mask pixels are (brighter than ``threshold``) it replaces what is
below it, in the image, the mask and the instance map alike; elsewhere in its
28 x 28 patch (its faint dark rim) the image keeps the brighter of the two
pixels, so the black corners of a patch never cut holes into earlier items.
The image therefore shows exactly the item its mask names wherever the mask
is not background.

Boxes are in continuous pixel coordinates: pixel (row r, column c) covers
[c, c + 1) x [r, r + 1), so a box is (x1, y1, x2, y2) = (first column, first
row, last column + 1, last row + 1) of the visible pixels, and its width is
x2 - x1. An item left with fewer than ``min_visible`` visible pixels loses its
box (its few pixels stay in the mask, labelled with its class).

Placement: each scene draws ``K * tries`` candidate placements (source image,
scale, position); a candidate is accepted while the scene still wants items
and its tight box overlaps every accepted box by at most ``max_overlap`` of
the smaller box's area. The first candidate is always accepted, so every
scene holds at least one item.

Determinism: scene ``i`` of a split is a pure function of (split, i, seed) and
the configuration: all its random numbers come from one generator seeded with
``SeedSequence([seed, split_id, i])``, and the rest is vectorised arithmetic
that treats every scene independently. Training scenes use only training-split
images and test scenes only test-split images.

Data flow, as for classification: numpy generation once -> uint8 tensors on
the training device -> each batch is an index gather, a cast and
normalisation on the device (:class:`FashionScenes`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .data import DeviceSplits, MEAN, STD, FashionMNISTArrays, load_fashion_mnist

SPLITS = {"train": 0, "test": 1}
NUM_SEG_CLASSES = 11  # background + the 10 Fashion-MNIST classes
SEG_CLASS_KEYS = ("background", "tshirt", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "boot")
GENERATOR_VERSION = 1  # bump when the drawing procedure changes: old scenes are not reproducible then


@dataclass(frozen=True)
class SceneConfig:
    canvas: int = 64                          # S; the model input side (cfg.resize)
    max_items: int = 4                        # K; a scene wants 1..K items, drawn uniformly
    min_items: int = 1
    scale: Tuple[float, float] = (0.75, 1.5)  # item side 21-42 px; clipped so an item fits the canvas
    max_overlap: float = 0.3                  # bound on intersection / smaller box area at placement
    threshold: int = 32                       # brighter pixels are the item's mask (background is 0)
    min_visible: int = 20                     # fewer visible pixels after occlusion: the item loses its box
    tries: int = 6                            # candidate placements per wanted item

    def __post_init__(self):
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scene scale range must satisfy 0 < low <= high, got {self.scale}")
        if not 1 <= self.min_items <= self.max_items:
            raise ValueError(f"scenes need 1 <= min_items <= max_items, got {self.min_items}, {self.max_items}")
        if self.max_items > 254:
            raise ValueError("at most 254 items per scene (instance ids are uint8)")
        if self.canvas < 8:
            raise ValueError(f"the scene canvas must be at least 8 pixels, got {self.canvas}")


@dataclass
class SceneSet:
    """Scenes of one split as padded numpy arrays; row j < counts[i] of boxes/labels/items is real."""
    split: str
    indices: np.ndarray    # [n] the scene numbers i
    images: np.ndarray     # [n, S, S] uint8
    masks: np.ndarray      # [n, S, S] uint8, 0 background, label + 1 for items
    instances: np.ndarray  # [n, S, S] uint8, j + 1 where item j (row of boxes) is visible, else 0
    boxes: np.ndarray      # [n, K, 4] float32 (x1, y1, x2, y2), continuous pixel edges
    labels: np.ndarray     # [n, K] int64 class 0-9, -1 padding
    items: np.ndarray      # [n, K] int64 index of the item's image in its split, -1 padding
    counts: np.ndarray     # [n] int64 boxed items per scene
    config: SceneConfig

    def __len__(self) -> int:
        return len(self.indices)

    def scene(self, j: int) -> dict:
        """Row ``j`` as one scene with its boxes trimmed to the real ones."""
        m = int(self.counts[j])
        return {"index": int(self.indices[j]), "image": self.images[j], "mask": self.masks[j],
                "instances": self.instances[j], "boxes": self.boxes[j, :m], "labels": self.labels[j, :m],
                "items": self.items[j, :m]}


# --------------------------------------------------------------------------- generation
def _resize_matrix(side: int, source: int = 28) -> np.ndarray:
    """[side, source] bilinear interpolation matrix (align_corners=False), so patch = A @ img @ A.T."""
    src = np.clip((np.arange(side) + 0.5) * source / side - 0.5, 0, source - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, source - 1)
    w1 = (src - i0).astype(np.float32)
    a = np.zeros((side, source), np.float32)
    np.add.at(a, (np.arange(side), i0), 1 - w1)
    np.add.at(a, (np.arange(side), i1), w1)
    return a


def _tight_boxes(fg: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Tight (x1, y1, x2, y2) boxes of boolean maps [n, H, W] and their pixel counts (empty -> zeros)."""
    n, h, w = fg.shape
    rows, cols = fg.any(2), fg.any(1)                       # [n, H], [n, W]
    y1, x1 = rows.argmax(1), cols.argmax(1)
    y2, x2 = h - rows[:, ::-1].argmax(1), w - cols[:, ::-1].argmax(1)
    count = fg.sum((1, 2))
    boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
    boxes[count == 0] = 0
    return boxes, count


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over the smaller area between box [n, 4] and boxes [n, K, 4] -> [n, K]."""
    lo = np.maximum(box[:, None, :2], boxes[..., :2])
    hi = np.minimum(box[:, None, 2:], boxes[..., 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    smaller = np.minimum(area(box)[:, None], area(boxes))
    return inter / np.maximum(smaller, 1e-6)


def generate_scenes(images: np.ndarray, labels: np.ndarray, split: str, indices: Sequence[int],
                    seed: int = 0, config: SceneConfig = SceneConfig()) -> SceneSet:
    """Scenes ``indices`` of ``split`` built from that split's images [N, 28, 28] and labels [N].

    Needs the Fashion-MNIST files, so the test suite skips it:

    >>> arrays = load_fashion_mnist()                                                  # doctest: +SKIP
    >>> s = generate_scenes(arrays.test_images, arrays.test_labels, "test", range(8))  # doctest: +SKIP
    >>> s.images.shape, s.boxes.shape                                                  # doctest: +SKIP
    ((8, 64, 64), (8, 4, 4))
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    indices = np.asarray(indices, dtype=np.int64)
    c, S, K = config, config.canvas, config.max_items
    n, N, T = len(indices), len(images), config.max_items * config.tries

    # Every random number of scene i comes from its own generator: [n, 1 + 4T].
    draws = np.zeros((n, 1 + 4 * T))
    for row, i in enumerate(indices):
        draws[row] = np.random.default_rng([seed, SPLITS[split], int(i)]).random(1 + 4 * T)
    wanted = c.min_items + np.minimum((draws[:, 0] * (K - c.min_items + 1)).astype(int), K - c.min_items)
    u = draws[:, 1:].reshape(n, T, 4)
    src = np.minimum((u[..., 0] * N).astype(np.int64), N - 1)                      # [n, T]
    side = np.clip(np.rint(28 * (c.scale[0] + u[..., 1] * (c.scale[1] - c.scale[0]))), 1, S).astype(int)
    top = (u[..., 2] * (S - side + 1)).astype(int)
    left = (u[..., 3] * (S - side + 1)).astype(int)

    # Candidate boxes: the source item's tight box, scaled with its patch.
    src_box, _ = _tight_boxes(images > c.threshold)                                 # [N, 4] in 28 px
    f = side / 28.0
    b = src_box[src]                                                                # [n, T, 4]
    cand = np.stack([left + np.floor(b[..., 0] * f), top + np.floor(b[..., 1] * f),
                     left + np.ceil(b[..., 2] * f), top + np.ceil(b[..., 3] * f)], -1).astype(np.float32)

    # Accept candidates in order while the scene wants items and overlap stays bounded.
    taken = np.zeros(n, int)
    chosen = np.zeros((n, K), int)                       # candidate number of each accepted slot
    accepted = np.zeros((n, K, 4), np.float32)
    rows = np.arange(n)
    for t in range(T):
        ratio = _overlap(cand[:, t], accepted)
        ratio[np.arange(K)[None, :] >= taken[:, None]] = 0
        ok = (taken < wanted) & (ratio.max(1, initial=0) <= c.max_overlap)
        r = rows[ok]
        accepted[r, taken[r]] = cand[r, t]
        chosen[r, taken[r]] = t
        taken[r] += 1

    # Paste slot by slot (later items on top), grouping items of one size into one matmul.
    canvas = np.zeros((n, S, S), np.uint8)
    masks = np.zeros((n, S, S), np.uint8)
    inst = np.zeros((n, S, S), np.uint8)
    flat_canvas, flat_masks, flat_inst = canvas.reshape(-1), masks.reshape(-1), inst.reshape(-1)
    for k in range(K):
        r = rows[taken > k]
        t = chosen[r, k]
        for s in np.unique(side[r, t]):
            sel = side[r, t] == s
            rr, tt = r[sel], t[sel]
            a = _resize_matrix(int(s))
            patch = np.rint(a @ images[src[rr, tt]].astype(np.float32) @ a.T).clip(0, 255).astype(np.uint8)
            fg = patch > c.threshold                                                # [m, s, s]
            # Flat indices into [n * S * S]: one 1-D gather/scatter is much faster than 3-D fancy indexing.
            at = ((rr * S + top[rr, tt]) * S + left[rr, tt])[:, None, None] \
                + (np.arange(s) * S)[None, :, None] + np.arange(s)[None, None, :]
            flat_canvas[at] = np.where(fg, patch, np.maximum(flat_canvas[at], patch))
            flat_masks[at] = np.where(fg, (labels[src[rr, tt]] + 1)[:, None, None], flat_masks[at])
            flat_inst[at] = np.where(fg, np.uint8(k + 1), flat_inst[at])

    # Boxes of the visible pixels; drop items occluded below min_visible and compact the rest.
    boxes = np.zeros((n, K, 4), np.float32)
    keep = np.zeros((n, K), bool)
    for k in range(K):
        boxes[:, k], count = _tight_boxes(inst == k + 1)
        keep[:, k] = (count >= c.min_visible) & (taken > k)
    order = np.argsort(~keep, axis=1, kind="stable")                                 # kept slots first
    counts = keep.sum(1)
    real = np.arange(K)[None, :] < counts[:, None]
    boxes = np.where(real[..., None], np.take_along_axis(boxes, order[..., None], 1), 0).astype(np.float32)
    slot_src = np.take_along_axis(src, chosen, 1)                                    # [n, K]
    items = np.where(real, np.take_along_axis(slot_src, order, 1), -1)
    item_labels = np.where(real, labels[np.maximum(items, 0)].astype(np.int64), -1)
    # Instance ids follow the compacted rows; dropped items' pixels become 0 (only scenes that dropped one).
    moved = rows[counts < taken]
    remap = np.zeros((len(moved), K + 1), np.uint8)
    np.put_along_axis(remap, order[moved] + 1, np.where(real[moved], np.arange(1, K + 1), 0).astype(np.uint8), 1)
    inst[moved] = remap[np.arange(len(moved))[:, None, None], inst[moved]]
    return SceneSet(split, indices, canvas, masks, inst, boxes, item_labels, items, counts.astype(np.int64), config)


# --------------------------------------------------------------------------- device batches
class FashionScenes(DeviceSplits):
    """Scenes resident on the device, served like :class:`paddle_cnn.data.FashionMNIST`.

    ``x`` is the normalised float32 canvas [B, 1, S, S]. The target is what
    the task asks for: ``target_fn=None`` gives the semantic mask [B, S, S];
    a function mapping a :class:`SceneSet` to maps [n, C, h, w] (e.g.
    :func:`paddle_cnn.tasks.detection.encode_targets`) gives those maps,
    computed once per scene at construction. ``target_dtype`` is the dtype the
    batches carry (int64 class ids for a cross-entropy mask, float32 maps).

    ``flip_channels`` names target channels that swap under a horizontal flip
    (DenseBox's left/right distances) when ``augment='flip'``; a flip mirrors
    the last axis of the target whatever its rank.

    Needs the Fashion-MNIST files, so the test suite skips it:

    >>> data = FashionScenes(SceneConfig(canvas=64), num_train=2000, num_test=500)   # doctest: +SKIP
    >>> x, mask = next(data.train_batches(batch_size=32, epoch=0))                  # doctest: +SKIP
    >>> list(x.shape), list(mask.shape)                                             # doctest: +SKIP
    ([32, 1, 64, 64], [32, 64, 64])
    """

    AUGMENTS = ("none", "flip")

    def __init__(self, config: SceneConfig = SceneConfig(), num_train: int = 10000, num_test: int = 2000,
                 seed: int = 0, data_dir=None, arrays: Optional[FashionMNISTArrays] = None,
                 target_fn: Optional[Callable[[SceneSet], np.ndarray]] = None, target_dtype: str = "int64",
                 flip_channels: Tuple[int, int] | None = None, augment: str = "none",
                 download_if_missing: bool = True):
        import paddle

        if augment not in self.AUGMENTS:
            raise ValueError(f"scenes support augment {' or '.join(self.AUGMENTS)}, got {augment!r}")
        if num_train <= 0 or num_test <= 0:
            raise ValueError(f"scene counts must be positive, got {num_train} train and {num_test} test")
        arrays = arrays or load_fashion_mnist(data_dir, download_if_missing)
        self.config, self.seed, self.augment, self.flip_channels = config, seed, augment, flip_channels
        self.target_dtype = target_dtype
        train = generate_scenes(arrays.train_images, arrays.train_labels, "train", range(num_train), seed, config)
        # Test scenes do not depend on the training seed: every run is scored on the same scenes.
        self.test_scenes = generate_scenes(arrays.test_images, arrays.test_labels, "test", range(num_test), 0, config)
        self.source = dict(arrays.source, scenes=dict(asdict(config), num_train=num_train, num_test=num_test,
                                                     train_seed=seed, test_seed=0, version=GENERATOR_VERSION))
        self.train_x = paddle.to_tensor(train.images[:, None])                       # [N, 1, S, S] uint8
        self.test_x = paddle.to_tensor(self.test_scenes.images[:, None])
        if target_fn is None:
            self.train_t, self.test_t = paddle.to_tensor(train.masks), paddle.to_tensor(self.test_scenes.masks)
        else:
            self.train_t = paddle.to_tensor(target_fn(train))
            self.test_t = paddle.to_tensor(target_fn(self.test_scenes))

    @property
    def canvas(self) -> int:
        return self.config.canvas

    @staticmethod
    def prepare(x_uint8):
        """uint8 [B, 1, S, S] -> normalised float32, the statistics of Fashion-MNIST classification."""
        return (x_uint8.astype("float32") * (1.0 / 255.0) - MEAN) * (1.0 / STD)

    def target(self, t):
        return t if str(t.dtype).endswith(self.target_dtype) else t.astype(self.target_dtype)

    def augment_batch(self, x, t):
        """With ``augment='flip'``, mirror half of the batch, image and target together (Paddle's generator,
        seeded per epoch by the trainer)."""
        import paddle

        if self.augment == "flip":
            x, t = self._flip(x, t, paddle.rand([int(x.shape[0])]) < 0.5)
        return x, t

    def _flip(self, x, t, sel):
        """Mirror the examples where ``sel`` (bool [B] on the device) holds; mirrored maps swap their
        left/right channels."""
        import paddle

        x = paddle.where(sel.reshape([-1, 1, 1, 1]), paddle.flip(x, axis=[3]), x)
        if len(t.shape) == 3:                                        # a mask [B, S, S]
            return x, paddle.where(sel.reshape([-1, 1, 1]), paddle.flip(t, axis=[2]), t)
        flipped = paddle.flip(t, axis=[3])                           # maps [B, C, h, w]
        if self.flip_channels is not None:
            if getattr(self, "_flip_perm", None) is None:  # built once: no host copy per step
                a, b = self.flip_channels
                perm = list(range(t.shape[1]))
                perm[a], perm[b] = b, a
                self._flip_perm = paddle.to_tensor(perm)
            flipped = paddle.index_select(flipped, self._flip_perm, axis=1)
        return x, paddle.where(sel.reshape([-1, 1, 1, 1]), flipped, t)
