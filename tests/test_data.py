"""IDX reader validation, search order, device batches and augmentation."""
import gzip
import hashlib

import numpy as np
import paddle
import pytest

from paddle_cnn import data
from paddle_cnn.data import DataError, read_idx, write_idx

from conftest import make_fake_dataset


def _images(n=5):
    return np.random.RandomState(0).randint(0, 256, size=(n, 28, 28)).astype(np.uint8)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    x = _images()
    y = np.array([0, 9, 3, 3, 1], np.uint8)
    write_idx(tmp_path / "x.idx", x, compress)
    write_idx(tmp_path / "y.idx", y, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx", "images"), x)
    np.testing.assert_array_equal(read_idx(tmp_path / "y.idx", "labels"), y)


def _raw_idx(magic, dims, payload):
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@pytest.mark.parametrize("blob, message", [
    (_raw_idx(2049, [5, 28, 28], bytes(5 * 784)), "wrong IDX magic number 2049"),
    (_raw_idx(2051, [5, 32, 32], bytes(5 * 1024)), "32x32"),
    (_raw_idx(2051, [5, 28, 28], bytes(4 * 784)), "truncated"),
    (b"\x00\x00", "too short"),
])
def test_idx_rejects_bad_images(tmp_path, blob, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(blob))
    with pytest.raises(DataError, match=message) as info:
        read_idx(path, "images")
    assert str(path) in str(info.value)


def test_idx_rejects_bad_labels_and_gzip(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(_raw_idx(2049, [3], bytes([1, 12, 0]))))
    with pytest.raises(DataError, match="label 12 is outside 0-9"):
        read_idx(path, "labels")
    full = gzip.compress(_raw_idx(2049, [300], bytes(300)))
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="truncated gzip"):
        read_idx(path, "labels")
    path.write_bytes(b"plain text, not gzip")
    with pytest.raises(DataError, match="not a gzip file"):
        read_idx(path, "labels")


def test_count_mismatch_names_both_files(tmp_path):
    make_fake_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="20 test images but 7 test labels"):
        data.load_fashion_mnist(tmp_path, download_if_missing=False)


def test_search_order(tmp_path, monkeypatch):
    a, b, cwd = tmp_path / "a", tmp_path / "b", tmp_path / "cwd"
    make_fake_dataset(a)
    make_fake_dataset(b)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PADDLE_CNN_DATA", str(b))
    assert data.find_data(a) == (a, "argument")            # argument beats the variable
    assert data.find_data() == (b, "PADDLE_CNN_DATA")
    monkeypatch.delenv("PADDLE_CNN_DATA")
    make_fake_dataset(cwd / "data" / "fashion-mnist")
    assert data.find_data()[1] == "working directory"
    (cwd / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz").unlink()
    make_fake_dataset(tmp_path / "home" / ".cache" / "paddle" / "dataset" / "fashion-mnist")
    assert data.find_data()[1] == "paddle cache"


def test_offline_error_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PADDLE_CNN_DATA", str(tmp_path / "nowhere"))

    # The first file arrives whole (its md5 matches), then the network goes while the second is read.
    blob = b"the first file"
    monkeypatch.setattr(data, "OFFICIAL_MD5", dict.fromkeys(data.ALL_FILES, hashlib.md5(blob).hexdigest()))
    reads = []

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            reads.append(1)
            if len(reads) > 1:
                raise OSError("network is unreachable")
            return blob

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(DataError) as info:
        data.find_data()
    message = str(info.value)
    for place in ("PADDLE_CNN_DATA", "working directory", "paddle cache", "--data-dir", "network is unreachable"):
        assert place in message
    # Only the verified first file is kept: nothing half-downloaded, no temporary file left behind.
    left = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert [p.name for p in left] == [data.ALL_FILES[0]] and left[0].read_bytes() == blob
    assert left[0].parent == data.paddle_cache_dir()


def test_explicit_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.find_data(tmp_path / "missing")


def test_download_with_bad_md5_leaves_nothing(tmp_path, monkeypatch):
    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return b"not the real file"

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(DataError, match="md5"):
        data.download(tmp_path / "dl")
    folder = tmp_path / "dl"
    assert not folder.exists() or not any(folder.iterdir())


def test_download_verifies_and_writes(tmp_path, monkeypatch):
    blobs = {name: f"payload of {name}".encode() for name in data.ALL_FILES}
    monkeypatch.setattr(data, "OFFICIAL_MD5", {n: hashlib.md5(b).hexdigest() for n, b in blobs.items()})

    class Response:
        def __init__(self, url):
            self.blob = blobs[url.rsplit("/", 1)[1]]

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return self.blob

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: Response(url))
    data.download(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == set(data.ALL_FILES)
    for name, blob in blobs.items():
        assert (tmp_path / name).read_bytes() == blob                   # the verified bytes, as served


def test_stratified_subset_is_balanced():
    labels = np.repeat(np.arange(10), 100)
    idx = data.stratified_subset(labels, 250, seed=3)
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.sum() == 250 and counts.max() - counts.min() <= 1
    assert len(set(idx)) == 250


def test_batches_are_seeded_and_resized(fake_data):
    a = data.FashionMNIST(resize=40, data_dir=fake_data, seed=5)
    b = data.FashionMNIST(resize=40, data_dir=fake_data, seed=5)
    xa, ya = next(a.train_batches(16, epoch=2))
    xb, yb = next(b.train_batches(16, epoch=2))
    assert xa.shape == [16, 1, 40, 40] and xa.dtype == paddle.float32 and ya.dtype == paddle.int64
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    other = next(a.train_batches(16, epoch=3))[1].numpy()
    assert not np.array_equal(ya.numpy(), other)  # another epoch, another order
    assert a.steps_per_epoch(16) == 60 // 16
    assert sum(1 for _ in a.test_batches(8)) == 3   # 20 test images: 8 + 8 + 4


def test_normalisation_and_labels_match_source(fake_data):
    d = data.FashionMNIST(resize=28, data_dir=fake_data)
    x, y = next(d.test_batches(20))
    arrays = data.load_fashion_mnist(fake_data)
    np.testing.assert_allclose(x.numpy()[:, 0], (arrays.test_images / 255.0 - data.MEAN) / data.STD,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), arrays.test_labels.astype(np.int64))


def test_augmentation_crop_is_a_shift_and_flip_mirrors():
    x = paddle.to_tensor(np.random.RandomState(1).rand(16, 1, 28, 28).astype("float32"))
    paddle.seed(0)
    flipped = data.augment_batch(x, "flip").numpy()
    mirrored = [np.array_equal(flipped[i], x.numpy()[i, :, :, ::-1]) for i in range(16)]
    kept = [np.array_equal(flipped[i], x.numpy()[i]) for i in range(16)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    paddle.seed(0)
    assert np.array_equal(data.augment_batch(x, "flip").numpy(), flipped)     # Paddle's seed decides
    cropped = data.augment_batch(x, "crop").numpy()
    pad = 2
    background = (0.0 - data.MEAN) / data.STD
    offsets = set()
    for i in range(16):
        padded = np.pad(x.numpy()[i, 0], pad, constant_values=background)
        shifts = {(dy, dx): padded[dy:dy + 28, dx:dx + 28] for dy in range(5) for dx in range(5)}
        match = [k for k, s in shifts.items() if np.allclose(cropped[i, 0], s)]
        assert match, i
        offsets.add(match[0])
    assert len(offsets) > 3                                                    # offsets differ per example
