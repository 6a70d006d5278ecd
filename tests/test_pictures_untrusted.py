"""Pictures a user hands ``predict`` (issue 40): sizes refused from the header before any padding, every
mode read at its own range (16-bit PNGs are not clipped to white), pipes refused without waiting."""
import io
import os
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from paddle_cnn import images
from paddle_cnn.images import ImageError, read_grey, read_picture, square


def png(width: int, height: int, rows=None, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A PNG of ``rows`` (raw scanline bytes, filter byte added here); without rows, one zero row's worth of
    data (a header that declares more than the file holds)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + r for r in rows) if rows is not None else b"\x00" * 16
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def refused(path, words, seconds=2.0, megabytes=20):
    """The ImageError of reading ``path``: one line holding ``words``, quick, without large memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageError) as e:
            read_picture(path)
        took, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(e.value)
    assert "\n" not in message and words in message and str(path) in message, message
    assert took < seconds and peak < megabytes * 2**20, (took, peak)
    return message


# --------------------------------------------------------------------------- sizes, from the header
def test_a_300000_by_1_strip_is_refused_before_padding(tmp_path):
    """372 bytes that used to ask for an 84 GiB square."""
    path = tmp_path / "strip.png"
    path.write_bytes(png(300_000, 1, [bytes(300_000)]))
    assert len(path.read_bytes()) < 1000
    refused(path, "300000x1 pixels, 300,000 times longer than wide (at most 16 accepted); crop")


def test_a_40000_by_1_strip_is_refused_at_once(tmp_path):
    """Used to take 1.9 GB and 18 s; now the header decides."""
    path = tmp_path / "strip.png"
    path.write_bytes(png(1, 40_000, [b"\x80"] * 40_000))
    refused(path, "1x40000 pixels, 40,000 times longer than wide")


def test_a_long_side_whose_square_is_too_large(tmp_path):
    path = tmp_path / "panorama.png"
    path.write_bytes(png(7000, 2000))            # 14 MP, 3.5:1, but a 49 MP square
    refused(path, "padded square would be 7000x7000", megabytes=5)
    with pytest.raises(ImageError, match="pads to a 7000x7000 square"):
        square(np.zeros((10, 7000), np.uint8))


def test_an_elongated_picture_within_the_limits_is_read_and_padded(tmp_path):
    strip = np.zeros((20, 300), np.uint8)        # 15:1
    strip[5:15, 100:200] = 200
    Image.fromarray(strip).save(tmp_path / "belt.png")
    pic = read_picture(tmp_path / "belt.png")
    assert pic.original_size == (300, 20) and square(pic.pixels).shape == (300, 300)


def test_a_file_larger_than_any_picture_is_not_read(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 50)
    refused(tmp_path / "x.png", "more than the 50 bytes a picture may be")


# --------------------------------------------------------------------------- not a file
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_named_like_a_picture_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_picture(fifo)
        except ImageError as e:
            outcome.append(str(e))

    reader = threading.Thread(target=read, daemon=True)   # a daemon: a hang cannot keep pytest from ending
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "read_picture waits on a pipe"
    assert outcome and "is not a regular file" in outcome[0] and "\n" not in outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_predict_on_a_pipe_ends_in_one_line(tmp_path):
    os.mkfifo(tmp_path / "x.png")
    proc = subprocess.run([sys.executable, "-m", "paddle_cnn", "predict", str(tmp_path), str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "is not a regular file" in lines[0], proc.stderr


# --------------------------------------------------------------------------- modes at their own range
def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    """A dark 16-bit picture (background 1000/65535, item 50000/65535) used to read as white."""
    values = np.full((30, 30), 1000, np.uint16)
    values[8:22, 10:20] = 50000
    rows = [r.astype(">u2").tobytes() for r in values]
    (tmp_path / "deep.png").write_bytes(png(30, 30, rows, bit_depth=16))
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")                     # Pillow's 16-bit grey
    grey, size = read_grey(tmp_path / "deep.png")
    assert size == (30, 30) and grey[0, 0] == 4 and grey[10, 12] == 195    # round(v * 255 / 65535)
    pic = read_picture(tmp_path / "deep.png")
    assert not pic.inverted and pic.border_mean == pytest.approx(4)


def _rgb():
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    rgb[3:9, 4:12] = (20, 40, 60)
    return rgb


@pytest.mark.parametrize("mode", ["I", "F", "LA", "P", "CMYK", "YCbCr", "1", "RGB"])
def test_each_mode_reads_at_its_own_range(mode):
    """The grey of a picture in each Pillow mode equals that of the same picture in 8-bit L (or RGB)."""
    rgb = _rgb()
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    if mode == "I":
        img, expected = Image.fromarray(luma.astype(np.int32) * 257), luma      # 16-bit values in a 32-bit mode
    elif mode == "F":
        img, expected = Image.fromarray(luma.astype(np.float32)), luma          # Pillow's float scale: 0..255
    elif mode == "LA":
        img = Image.fromarray(np.stack([luma, np.full_like(luma, 255)], -1), "LA")
        expected = luma
    elif mode == "1":
        img = Image.fromarray(luma > 100)
        expected = np.where(luma > 100, 255, 0)
    elif mode == "RGB":
        img, expected = Image.fromarray(rgb), luma
    elif mode == "P":                                                           # two colours: an exact palette
        img, expected = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4), luma
    else:
        img, expected = Image.fromarray(rgb).convert(mode), luma
    assert img.mode == mode
    np.testing.assert_allclose(images._grey(img).astype(int), expected, atol=1 if mode == "YCbCr" else 0)


def test_a_transparent_picture_is_composited_onto_white():
    la = np.zeros((8, 8, 2), np.uint8)
    la[2:6, 2:6] = (30, 255)                     # an opaque dark item, transparent around it
    grey = images._grey(Image.fromarray(la, "LA"))
    assert grey[0, 0] == 255 and grey[3, 3] == 30


def test_a_cmyk_jpeg_file_reads_like_its_rgb(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb()).convert("CMYK").save(buf, "JPEG", quality=100)
    (tmp_path / "print.jpg").write_bytes(buf.getvalue())
    grey, _ = read_grey(tmp_path / "print.jpg")
    luma = np.asarray(Image.fromarray(_rgb()).convert("L")).astype(int)
    assert np.abs(grey.astype(int) - luma).max() <= 6          # JPEG's own loss only
