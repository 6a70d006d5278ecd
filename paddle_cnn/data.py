"""Fashion-MNIST: find, download, verify and read the IDX files; batches on the device.

Data flow: the four IDX gz files -> :func:`load_fashion_mnist` (validated uint8
arrays) -> :class:`FashionMNIST` keeps them as uint8 tensors on the training
device -> each batch is an index gather, a cast, one ``F.interpolate`` over the
whole batch, normalisation and optional augmentation, all on the device.
There is no per-image Python work and no DataLoader worker process.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import atomic

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

FILES = {  # split -> (images file, labels file)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES = tuple(f for pair in FILES.values() for f in pair)

# The official files and their md5 sums, served by Paddle's dataset mirror
# (the same URLs and sums as paddle.vision.datasets.FashionMNIST).
# PADDLE_CNN_MIRROR=URL/ points the download at another copy of the same files.
MIRROR = "https://dataset.bj.bcebos.com/fashion_mnist/"
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# The course's offline copy (all 70,000 real images, a stratified 60k/10k
# partition that is NOT the official one; see shared/data/fashion-mnist/README.md).
OFFLINE_COPY_SHA256 = {
    "train-images-idx3-ubyte.gz": "fb51381c2a787544c6f93c0b34f40f977d04bf47c370e052d062002ebec965b0",
    "train-labels-idx1-ubyte.gz": "7aae7312bec13c4276ba4f508cb808236a247c7c5c5d603bcd44f9efd6debac4",
    "t10k-images-idx3-ubyte.gz": "8b32d7fa9386e9b9bf38fe002a835f24c39dffab6a1c511c19479c0944206f32",
    "t10k-labels-idx1-ubyte.gz": "e4a04c3d4888be01e880c38735985488efd1456ae7eec87fc904abb454341b67",
}
OFFLINE_COPY_NAME = "Fashion-MNIST (offline copy, stratified 60k/10k split)"
OFFICIAL_NAME = "Fashion-MNIST (official)"

# Pixel statistics of the training split on [0, 1] (official: 0.2860 / 0.3530;
# the offline copy: 0.2861 / 0.3528). One pair for both keeps runs comparable.
MEAN, STD = 0.2860, 0.3530

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
# The test subset (a smoke or quick profile's) is drawn with this seed, never the training seed,
# so runs with different seeds are scored on the same images.
TEST_SUBSET_SEED = 1


class DataError(ValueError):
    """A data file is missing, damaged or not what it claims to be (message says which and how to fix)."""


# --------------------------------------------------------------------------- IDX files
def _read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (gzip recognised by its magic bytes, not its name)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: damaged or truncated gzip file ({e}); delete it and download it again") from None
    if path.suffix == ".gz":
        raise DataError(f"{path}: not a gzip file although its name ends in .gz; delete it and download it again")
    return raw


def read_idx(path, kind: str) -> np.ndarray:
    """Read and validate one Fashion-MNIST IDX file (``kind`` is 'images' or 'labels').

    Checks the magic number, the 28x28 image size, that the file length matches
    its header, and (for labels) that every label is in 0-9. Any failure raises
    :class:`DataError` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    magic, ndim = (IMAGE_MAGIC, 3) if kind == "images" else (LABEL_MAGIC, 1)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: too short to be an IDX {kind} file ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: wrong IDX magic number {found} (expected {magic} for {kind}); "
                        "is this the right file?")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if kind == "images" and dims[1:] != [28, 28]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, Fashion-MNIST images are 28x28")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes where the header ({' x '.join(map(str, dims))}) "
                        f"needs {expected}; the file is truncated or damaged")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    if kind == "labels" and array.size and array.max() > 9:
        raise DataError(f"{path}: label {int(array.max())} is outside 0-9")
    return array


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    """Write uint8 images [N, 28, 28] or labels [N] as an IDX file (used by tests and tools)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    blob = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    atomic.write_bytes(Path(path), gzip.compress(blob) if compress else blob)


# --------------------------------------------------------------------------- finding files
def paddle_cache_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "paddle" / "dataset" / "fashion-mnist"


def candidate_dirs(data_dir=None) -> List[Tuple[str, Path]]:
    """The places searched, in order, as (kind, folder)."""
    places = []
    if data_dir is not None:
        places.append(("argument", Path(data_dir)))
    if os.environ.get("PADDLE_CNN_DATA"):
        places.append(("PADDLE_CNN_DATA", Path(os.environ["PADDLE_CNN_DATA"])))
    places.append(("working directory", Path("data") / "fashion-mnist"))
    places.append(("paddle cache", paddle_cache_dir()))
    return places


def _has_all(folder: Path) -> bool:
    return all((folder / name).is_file() or (folder / name[:-3]).is_file() for name in ALL_FILES)


def _file(folder: Path, name: str) -> Path:
    """The gz file, or the raw (already decompressed) file of the same name without .gz."""
    gz = folder / name
    return gz if gz.is_file() else folder / name[:-3]


def download(folder, timeout: float = 30.0) -> Path:
    """Download the official files into ``folder``, verifying each md5.

    Each file is written under a temporary name and renamed only after its md5
    matched, so a failed or corrupted download leaves nothing that looks valid.
    """
    folder = Path(folder)
    mirror = os.environ.get("PADDLE_CNN_MIRROR", MIRROR)
    if not mirror.startswith(("http://", "https://")) or not mirror.endswith("/"):
        raise DataError(f"the environment variable PADDLE_CNN_MIRROR={mirror!r} is not an http:// or https:// "
                        "address ending in / (the folder that holds the four files); fix it or unset it")
    for name in ALL_FILES:
        target, url = folder / name, mirror + name
        if target.is_file() and _md5(target) == OFFICIAL_MD5[name]:
            continue
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                blob = response.read()
        except (OSError, ValueError) as e:  # URLError, timeouts, refused connections; a malformed address
            raise DataError(f"download of {url} failed: {getattr(e, 'reason', e)}") from None
        md5 = hashlib.md5(blob).hexdigest()
        if md5 != OFFICIAL_MD5[name]:
            raise DataError(f"download of {url} has md5 {md5}, expected {OFFICIAL_MD5[name]}; "
                            "the damaged download was deleted (nothing was saved), try again later")
        atomic.write_bytes(target, blob)
    return folder


def find_data(data_dir=None, download_if_missing: bool = True) -> Tuple[Path, str]:
    """Return (folder, kind) of the first place holding all four files; download as a last resort.

    An explicit ``data_dir`` that lacks the files is an error of its own (the
    user asked for that folder), as is an offline machine with no files anywhere.
    """
    places = candidate_dirs(data_dir)
    for kind, folder in places:
        if _has_all(folder):
            return folder, kind
        if kind == "argument":
            missing = [n for n in ALL_FILES if not _file(folder, n).is_file()]
            what = "does not exist" if not folder.exists() else f"lacks {', '.join(missing)}"
            raise DataError(f"data folder {folder} {what}; it must hold {', '.join(ALL_FILES)} "
                            "(gz or decompressed)")
    searched = "\n".join(f"  - {folder.resolve()}  ({kind})" for kind, folder in places)
    target = paddle_cache_dir()
    how = (f"Put the four files ({', '.join(ALL_FILES)}) in one of these folders, or pass "
           "--data-dir DIR / set PADDLE_CNN_DATA=DIR.")
    if not download_if_missing:
        raise DataError(f"Fashion-MNIST files not found. Searched:\n{searched}\n{how}")
    try:
        return download(target), "download"
    except DataError as e:
        raise DataError(f"Fashion-MNIST files not found and the download failed ({e}). "
                        f"Searched:\n{searched}\n{how}") from None


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe_source(folder: Path, kind: str) -> dict:
    """Where the data came from and what it is: file sha256s and which copy they are."""
    sha = {name: _sha256(_file(folder, name)) for name in ALL_FILES}
    md5 = {name: _md5(_file(folder, name)) for name in ALL_FILES}
    if sha == OFFLINE_COPY_SHA256:
        name = OFFLINE_COPY_NAME
    elif md5 == OFFICIAL_MD5:
        name = OFFICIAL_NAME
    else:
        name = "Fashion-MNIST (unrecognised copy: neither the official files nor the course's offline copy)"
    # No path: a results file travels with homework, and a home folder does not belong in it.
    return {"name": name, "found_via": kind, "sha256": sha}


# --------------------------------------------------------------------------- arrays
@dataclass
class FashionMNISTArrays:
    train_images: np.ndarray  # [60000, 28, 28] uint8
    train_labels: np.ndarray  # [60000] uint8
    test_images: np.ndarray   # [10000, 28, 28] uint8
    test_labels: np.ndarray   # [10000] uint8
    source: dict = field(default_factory=dict)
    content: dict = field(default_factory=dict)  # what content_stats measured (load_fashion_mnist fills it)


# --------------------------------------------------------------------------- content
# Four files with valid headers can still hold other pictures, scrambled labels or swapped splits.
# These bounds separate Fashion-MNIST from such files with a wide margin on both sides;
# tests/test_data_check.py measures the course's copy against them and builds each failing case.
PIXEL_MEAN_RANGE = (0.15, 0.45)   # mean pixel on [0, 1]; the README's figure for the training split: 0.2861
PIXEL_STD_RANGE = (0.25, 0.45)    # pixel std on [0, 1]; the README's figure: 0.3528
MIN_CLASS_SHARE = 0.5             # the smallest class holds at least half as many images as the largest
MAX_SHARED = 0.01                 # at most this fraction of the test images may also lie in the training set
MIN_FIT_ACCURACY = 0.4            # nearest-class-mean accuracy on test images; chance is 0.1
STATS_SAMPLE, FIT_TRAIN_SAMPLE, FIT_TEST_SAMPLE = 5000, 10000, 2000   # images per split, strided
ALLOW_UNKNOWN_ENV = "PADDLE_CNN_ALLOW_UNKNOWN_DATA"


def _strided(n: int, most: int) -> np.ndarray:
    """At most ``most`` indices spread evenly over ``range(n)`` (all of them when n <= most)."""
    return np.arange(0, n, max(1, -(-n // most)))


def _image_hashes(images: np.ndarray) -> List[bytes]:
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in images]


def content_stats(arrays: FashionMNISTArrays) -> dict:
    """Measure what tells Fashion-MNIST from other 28x28 pictures; well under a second on all 70,000.

    Sizes and class counts are exact; pixel statistics are taken on at most
    ``STATS_SAMPLE`` images of each split; every image is hashed (BLAKE2b of its
    784 bytes) to count test images that also lie in the training set; a
    nearest-class-mean classifier fitted on ``FIT_TRAIN_SAMPLE`` training images
    is scored on ``FIT_TEST_SAMPLE`` test images (0.1 is chance).
    """
    xs = {"train": arrays.train_images, "test": arrays.test_images}
    ys = {"train": arrays.train_labels, "test": arrays.test_labels}
    stats = {"sizes": {s: int(len(y)) for s, y in ys.items()},
             "class_counts": {s: np.bincount(y, minlength=len(CLASSES)).tolist() for s, y in ys.items()}}
    if not all(stats["sizes"].values()):
        return stats
    for split, x in xs.items():
        sample = x[_strided(len(x), STATS_SAMPLE)].astype(np.float32) * (1.0 / 255.0)
        stats[f"{split}_pixels"] = {"mean": float(sample.mean()), "std": float(sample.std())}
    train_hashes = set(_image_hashes(xs["train"]))
    stats["shared_test_images"] = sum(h in train_hashes for h in _image_hashes(xs["test"]))
    fit = _strided(len(xs["train"]), FIT_TRAIN_SAMPLE)
    x = xs["train"][fit].reshape(len(fit), -1).astype(np.float32)
    y = ys["train"][fit]
    present = np.array([(y == c).any() for c in range(len(CLASSES))])
    means = np.zeros((len(CLASSES), x.shape[1]), np.float32)                          # [10, 784]
    for c in np.flatnonzero(present):
        means[c] = x[y == c].mean(0)
    score = _strided(len(xs["test"]), FIT_TEST_SAMPLE)
    t = xs["test"][score].reshape(len(score), -1).astype(np.float32)                 # [M, 784]
    dist = (means ** 2).sum(1)[None] - 2 * t @ means.T                               # [M, 10], up to |t|^2
    dist[:, ~present] = np.inf
    stats["nearest_mean_accuracy"] = float((dist.argmin(1) == ys["test"][score]).mean())
    return stats


def check_content(stats_or_arrays) -> List[str]:
    """What makes the data not Fashion-MNIST, one phrase each ([] when nothing does).

    Takes :func:`content_stats`'s dict or the arrays themselves.
    """
    stats = stats_or_arrays if isinstance(stats_or_arrays, dict) else content_stats(stats_or_arrays)
    n_train, n_test = stats["sizes"]["train"], stats["sizes"]["test"]
    if not n_test or not n_train:
        return [f"the {'test' if not n_test else 'training'} set is empty"]
    problems = []
    if n_train <= n_test:
        problems.append(f"the training set ({n_train} images) is not larger than the test set ({n_test}); "
                        "are the train and t10k files swapped?")
    balanced = True
    for split, counts in stats["class_counts"].items():
        missing = [str(c) for c, k in enumerate(counts) if not k]
        if missing:
            problems.append(f"the {split} labels lack class{'es' if len(missing) > 1 else ''} {', '.join(missing)}")
            balanced = False
        elif min(counts) < MIN_CLASS_SHARE * max(counts):
            problems.append(f"the {split} classes are unbalanced ({min(counts)} to {max(counts)} images per class)")
    for split in ("train", "test"):
        p = stats[f"{split}_pixels"]
        if not (PIXEL_MEAN_RANGE[0] <= p["mean"] <= PIXEL_MEAN_RANGE[1]
                and PIXEL_STD_RANGE[0] <= p["std"] <= PIXEL_STD_RANGE[1]):
            problems.append(f"{split} pixels have mean {p['mean']:.3f} and std {p['std']:.3f} on [0, 1], outside "
                            f"Fashion-MNIST's range (mean {PIXEL_MEAN_RANGE[0]}-{PIXEL_MEAN_RANGE[1]}, "
                            f"std {PIXEL_STD_RANGE[0]}-{PIXEL_STD_RANGE[1]})")
    shared = stats["shared_test_images"]
    if shared > MAX_SHARED * n_test:
        problems.append(f"{shared} of the {n_test} test images ({shared / n_test:.1%}) are also in the training set "
                        f"(at most {MAX_SHARED:.0%} may be)")
    if balanced and stats["nearest_mean_accuracy"] < MIN_FIT_ACCURACY:
        problems.append(f"the labels do not fit the pictures: a nearest-class-mean classifier scores "
                        f"{stats['nearest_mean_accuracy']:.2f} on test images (chance 0.10, at least "
                        f"{MIN_FIT_ACCURACY} expected)")
    return problems


def content_error(folder, problems: List[str]) -> str:
    """The one line that ``data check`` and ``train`` print for data that fails :func:`check_content`."""
    return (f"{folder}: this is not Fashion-MNIST: {'; '.join(problems)}. Fix the files, or train on them "
            "anyway with --allow-unknown-data")


#: The values ALLOW_UNKNOWN_ENV may take: on, then off.
FLAG_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


def _allow_unknown_default() -> bool:
    value = os.environ.get(ALLOW_UNKNOWN_ENV, "")
    if value.strip().lower() not in FLAG_WORDS:
        raise ValueError(f"the environment variable {ALLOW_UNKNOWN_ENV}={value!r} is neither on (1, true, yes) nor "
                         "off (0, false, no, empty); set one of these or unset it")
    return FLAG_WORDS[value.strip().lower()]


_CACHE: Dict[Path, FashionMNISTArrays] = {}


def load_fashion_mnist(data_dir=None, download_if_missing: bool = True,
                       allow_unknown: Optional[bool] = None) -> FashionMNISTArrays:
    """Find, validate and read all four files (cached per folder for the process).

    Besides the headers, the content is checked (:func:`check_content`): data
    that is not Fashion-MNIST raises :class:`DataError` with one line, unless
    ``allow_unknown`` (default: the environment variable
    ``PADDLE_CNN_ALLOW_UNKNOWN_DATA=1``, which ``train --allow-unknown-data``
    sets); then the problems are recorded in ``source["content_problems"]``.
    """
    folder, kind = find_data(data_dir, download_if_missing)
    key = folder.resolve()
    if key not in _CACHE:
        arrays = {}
        for split, (images, labels) in FILES.items():
            x = read_idx(_file(folder, images), "images")
            y = read_idx(_file(folder, labels), "labels")
            if len(x) != len(y):
                raise DataError(f"{folder}: {len(x)} {split} images but {len(y)} {split} labels "
                                f"({images} and {labels} do not belong together)")
            arrays[split] = (x, y)
        loaded = FashionMNISTArrays(*arrays["train"], *arrays["test"], source=describe_source(folder, kind))
        loaded.content = content_stats(loaded)
        loaded.content["problems"] = check_content(loaded.content)
        _CACHE[key] = loaded
    loaded = _CACHE[key]
    problems = loaded.content["problems"]
    if not problems:
        return loaded
    if not (_allow_unknown_default() if allow_unknown is None else allow_unknown):
        raise DataError(content_error(folder, problems))
    return replace(loaded, source={**loaded.source, "content_problems": list(problems)})


def stratified_subset(labels: np.ndarray, size: Optional[int], seed: int = 0) -> np.ndarray:
    """Indices of ``size`` examples with every class equally represented (all when size is None)."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    if size <= 0:
        raise ValueError(f"subset size must be positive, got {size}")
    rng = np.random.RandomState(seed)
    classes = np.unique(labels)
    per_class, extra = divmod(size, len(classes))
    picks = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        picks.append(rng.choice(members, per_class + (i < extra), replace=False))
    return np.sort(np.concatenate(picks))


# --------------------------------------------------------------------------- device batches
AUGMENTS = ("none", "flip", "crop", "crop+flip")


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Batches in one epoch of ``n`` examples; a last partial batch is dropped unless it is the only one."""
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


def _epoch_rng(seed: int, epoch: int, stream: int) -> np.random.RandomState:
    """One RNG per (seed, epoch, purpose): a resumed run replays exactly the same epoch."""
    return np.random.RandomState(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def epoch_indices(num: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  drop_last: bool = True) -> Iterator:
    """Device index tensors of one epoch's batches; this process's share of each global batch.

    The permutation depends only on (seed, epoch) and crosses to the device once
    per epoch; each step slices it there, so no step waits on a host copy (which
    would stall a GPU's queue). With ``world`` processes, ``batch_size`` is the
    global batch: every rank takes its ``batch_size // world`` consecutive
    examples of it, so together they see exactly what one process would.
    """
    import paddle

    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if batch_size % world:
        raise ValueError(f"the global batch size {batch_size} must be divisible by the number of processes "
                         f"{world}; use --batch-size {batch_size - batch_size % world or world}")
    order = paddle.to_tensor(_epoch_rng(seed, epoch, 0).permutation(num))
    local = batch_size // world
    for step in range(steps_per_epoch(num, batch_size, drop_last)):
        start = step * batch_size + rank * local
        yield order[start:min(start + local, num)]


class DeviceSplits:
    """A train and a test split resident on the device (uint8 inputs ``train_x``/``test_x`` and targets
    ``train_t``/``test_t``), served as ready-to-train batches: what Fashion-MNIST and its scenes share.

    A subclass sets the four tensors and ``seed`` and gives ``prepare`` (uint8 -> normalised float, whole
    batch at once); ``augment_batch`` (training only) and ``target`` (a dtype cast) are optional.
    """

    seed = 0

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_x.shape[0])

    def steps_per_epoch(self, batch_size: int, drop_last: bool = True) -> int:
        return steps_per_epoch(self.num_train, batch_size, drop_last)

    def prepare(self, x_uint8):
        raise NotImplementedError

    def target(self, t):
        return t

    def augment_batch(self, x, t):
        return x, t

    def train_batches(self, batch_size: int, epoch: int, drop_last: bool = True, rank: int = 0,
                      world: int = 1) -> Iterator:
        """Shuffled (x, target) batches for one epoch; the order depends only on (seed, epoch).

        Augmentation draws from Paddle's generator on the device (the trainer seeds
        it per epoch and process). With ``world`` processes each yields its slice
        of the global batch (:func:`epoch_indices`).
        """
        import paddle

        for idx in epoch_indices(self.num_train, batch_size, self.seed, epoch, rank, world, drop_last):
            x = self.prepare(paddle.gather(self.train_x, idx))
            yield self.augment_batch(x, self.target(paddle.gather(self.train_t, idx)))

    def test_batches(self, batch_size: int = 1000) -> Iterator:
        """The test split in order, in batches of ``batch_size``."""
        for start in range(0, self.num_test, batch_size):
            yield (self.prepare(self.test_x[start:start + batch_size]),
                   self.target(self.test_t[start:start + batch_size]))


class FashionMNIST(DeviceSplits):
    """Fashion-MNIST resident on the device, served as ready-to-train float batches.

    Needs the Fashion-MNIST files, so the test suite skips it:

    >>> data = FashionMNIST(resize=64, train_subset=6000)            # doctest: +SKIP
    >>> x, y = next(data.train_batches(batch_size=128, epoch=0))      # doctest: +SKIP
    >>> list(x.shape), list(y.shape)                                  # doctest: +SKIP
    ([128, 1, 64, 64], [128])
    """

    task = "classification"

    def __init__(self, resize: int = 28, data_dir=None, train_subset: Optional[int] = None,
                 test_subset: Optional[int] = None, augment: str = "none", seed: int = 0,
                 arrays: Optional[FashionMNISTArrays] = None, download_if_missing: bool = True,
                 erase: float = 0.0):
        import paddle

        if not 0 <= erase <= 1:
            raise ValueError(f"erase is a fraction of the training images, between 0 and 1; got {erase}")
        if resize <= 0:
            raise ValueError(f"resize must be a positive number of pixels, got {resize}")
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTS)}")
        arrays = arrays or load_fashion_mnist(data_dir, download_if_missing)
        self.source, self.resize, self.augment, self.seed, self.erase = arrays.source, resize, augment, seed, erase
        train_idx = stratified_subset(arrays.train_labels, train_subset, seed)
        test_idx = stratified_subset(arrays.test_labels, test_subset, TEST_SUBSET_SEED)
        # uint8 on the device: 47 MB for all 60k images, a quarter of float32.
        self.train_x = paddle.to_tensor(arrays.train_images[train_idx][:, None])  # [N, 1, 28, 28]
        self.train_t = paddle.to_tensor(arrays.train_labels[train_idx].astype("int64"))
        self.test_x = paddle.to_tensor(arrays.test_images[test_idx][:, None])
        self.test_t = paddle.to_tensor(arrays.test_labels[test_idx].astype("int64"))

    def prepare(self, x_uint8):
        """uint8 [N, 1, 28, 28] -> normalised float32 [N, 1, R, R], whole batch at once."""
        import paddle.nn.functional as F

        x = x_uint8.astype("float32") * (1.0 / 255.0)
        if self.resize != x.shape[-1]:
            x = F.interpolate(x, size=[self.resize, self.resize], mode="bilinear", align_corners=False)
        return (x - MEAN) * (1.0 / STD)

    def augment_batch(self, x, y):
        if self.augment != "none":
            x = augment_batch(x, self.augment)
        if self.erase:
            x = random_erase(x, self.erase)
        return x, y


def random_erase(x, probability: float, area=(0.02, 0.4), aspect: float = 0.3):
    """Random erasing (Zhong et al., 2017): in each image, with ``probability``, one rectangle is blanked.

    Its area is a uniform fraction ``area`` of the image and its aspect ratio
    log-uniform in [``aspect``, 1 / ``aspect``] (the paper's settings); it is
    filled with 0, the normalised mean pixel, so nothing outside the data's
    range appears. Sizes and corners are drawn on the device for the whole
    batch, and one ``where`` applies them: no per-image loop, no host copy.
    The network must then recognise garments with a part hidden, which
    discourages leaning on one telltale region.
    """
    import paddle

    n, c, h, w = x.shape
    frac = area[0] + (area[1] - area[0]) * paddle.rand([n])
    ratio = paddle.exp(math.log(aspect) + 2 * math.log(1 / aspect) * paddle.rand([n]))
    eh = paddle.clip(paddle.round(paddle.sqrt(frac * h * w * ratio)), 1, h)      # [N] rectangle height
    ew = paddle.clip(paddle.round(paddle.sqrt(frac * h * w / ratio)), 1, w)      # [N] rectangle width
    top = paddle.floor(paddle.rand([n]) * (h - eh + 1))
    left = paddle.floor(paddle.rand([n]) * (w - ew + 1))
    rows = paddle.arange(h, dtype="float32").reshape([1, h, 1])
    cols = paddle.arange(w, dtype="float32").reshape([1, 1, w])
    r = lambda v: v.reshape([n, 1, 1])  # noqa: E731
    inside = ((rows >= r(top)) & (rows < r(top + eh)) & (cols >= r(left)) & (cols < r(left + ew))
              & r(paddle.rand([n]) < probability))                                # [N, H, W]
    return paddle.where(inside.unsqueeze(1).expand([n, c, h, w]), paddle.zeros_like(x), x)


def augment_batch(x, kind: str, pad_fraction: float = 1 / 14):
    """Random crop after zero padding (pad = 2 px at 28, scaled with size) and/or horizontal flip.

    Offsets and flips are drawn on the device and applied to the whole batch
    with one gather: nothing crosses to the host, and no index is built there.
    """
    import paddle
    import paddle.nn.functional as F

    n, c, h, w = x.shape
    if "crop" in kind:
        pad = max(1, round(h * pad_fraction))
        # Pad with the normalised value of a black pixel, i.e. the background.
        padded = F.pad(x, [pad, pad, pad, pad], value=float((0.0 - MEAN) / STD))
        wp = w + 2 * pad
        oy = paddle.randint(0, 2 * pad + 1, [n, 1, 1])
        ox = paddle.randint(0, 2 * pad + 1, [n, 1, 1])
        rows = oy + paddle.arange(h, dtype="int64").reshape([1, h, 1])            # [N, H, 1]
        cols = ox + paddle.arange(w, dtype="int64").reshape([1, 1, w])            # [N, 1, W]
        flat = (rows * wp + cols).reshape([n, 1, h * w]).expand([n, c, h * w])   # [N, C, H*W]
        x = paddle.take_along_axis(padded.reshape([n, c, -1]), flat, axis=2).reshape([n, c, h, w])
    if "flip" in kind:
        mask = (paddle.rand([n]) < 0.5).reshape([n, 1, 1, 1])
        x = paddle.where(mask, paddle.flip(x, axis=[3]), x)
    return x
