"""A user's picture -> the grey, dark-background square a Fashion-MNIST model was trained on.

Pictures are untrusted files: only regular files (not a pipe named ``x.png``)
of PNG, JPEG, BMP, GIF and WebP are opened, the file's size is checked before
it is read, the declared width and height are checked before any pixel is
decoded (a small file can declare a billion pixels, or a 300000 x 1 strip whose
square would take 84 GiB), and a truncated or broken file is one clear error.

How a picture is prepared (:func:`prepare`):

1. EXIF rotation applied (phone photos); the first frame of an animation;
   transparent pixels composited onto white, as a product photo would be;
2. converted to grey (ITU-R 601 luma, Pillow's ``L``) from its own range:
   a 16-bit PNG is scaled from 0..65535, not clipped at 255;
3. background decided by the mean of the border pixels (a frame 1/20 of the
   shorter side wide): above mid-grey it is light and the picture is
   inverted, since Fashion-MNIST shows bright items on black (its own
   pictures were negated product photos);
4. padded to a square with the background's grey (the item keeps its
   proportions, as Fashion-MNIST's items did), then resized.
"""
from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
MAX_PIXELS = 40_000_000        # 40 megapixels: any camera photo, not a decompression bomb
MAX_FILE_BYTES = 256 * 2**20   # a 40-megapixel 16-bit RGBA PNG stored without compression is 320 MB; photos ~20 MB
MAX_ASPECT = 16                # longer side / shorter side: a phone panorama is about 4; an item fits a square
MAX_SIDE = int(MAX_PIXELS ** 0.5)   # the padded square (longer side squared) stays within MAX_PIXELS too
BORDER_FRACTION = 1 / 20       # width of the frame whose mean decides the background
LIGHT = 127.5                  # border mean above this (on 0-255): a light background, inverted


class ImageError(ValueError):
    """A file that cannot be used as a picture; the message names the file and why."""


@dataclass
class Picture:
    """A picture read and turned grey: ``pixels`` uint8 [H, W], dark background (inverted if it was light)."""
    path: Path
    pixels: np.ndarray
    original_size: tuple      # (width, height) of the file
    inverted: bool
    border_mean: float        # of the grey picture before any inversion, 0-255

    @property
    def background_note(self) -> str:
        if self.inverted:
            return f"light background (border mean {self.border_mean:.0f}/255) inverted to Fashion-MNIST's dark one"
        return f"dark background (border mean {self.border_mean:.0f}/255) kept"


def read_grey(path) -> tuple:
    """(uint8 [H, W] grey pixels, (width, height)) of the picture file ``path``; ImageError otherwise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not a picture")
    try:
        with _open_regular(path) as f:
            with warnings.catch_warnings():   # Pillow warns about large pictures; the size check below decides
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(f, formats=FORMATS)
            with img:
                width, height = img.size      # from the header: nothing is decoded yet
                check_size(path, width, height)
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img)
                grey = _grey(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path} cannot be read (permission denied)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not a picture this command reads ({', '.join(FORMATS)} expected)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path} is too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:  # truncated or damaged data
        raise ImageError(f"{path} is damaged or truncated ({type(e).__name__}: {str(e)[:120] or 'no detail'})") \
            from None
    return grey, (width, height)


def _open_regular(path: Path):
    """``path`` opened for reading if it is a regular file of at most :data:`MAX_FILE_BYTES`.

    Opened without blocking and checked on the open file, so a pipe named ``x.png`` is refused at
    once instead of waiting for a writer, and nothing can swap the file between check and read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{path} is not a regular file (a pipe, device or socket); save the picture as a "
                             "file and name that")
        if info.st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path} is {_size(info.st_size)}, more than the {_size(MAX_FILE_BYTES)} a picture may "
                             "be; save it smaller (JPEG, or scaled down)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def check_size(path, width: int, height: int) -> None:
    """Refuse a declared size before anything is decoded or padded: too many pixels, no pixels, a strip
    far longer than it is wide, or a longer side whose padded square would exceed :data:`MAX_PIXELS`."""
    if width * height > MAX_PIXELS:
        raise ImageError(f"{path} declares {width}x{height} pixels, more than the {MAX_PIXELS // 10**6} "
                         "megapixels accepted; scale the picture down first")
    if width < 1 or height < 1:
        raise ImageError(f"{path} has no pixels ({width}x{height})")
    long, short = max(width, height), min(width, height)
    if long > MAX_ASPECT * short:
        raise ImageError(f"{path} is {width}x{height} pixels, {long / short:,.0f} times longer than wide (at most "
                         f"{MAX_ASPECT} accepted); crop the picture around the item")
    if long > MAX_SIDE:
        raise ImageError(f"{path} is {width}x{height} pixels; its padded square would be {long}x{long}, more than "
                         f"the {MAX_PIXELS // 10**6} megapixels accepted: scale it to at most {MAX_SIDE} pixels on "
                         "its longer side")


def _grey(img) -> np.ndarray:
    """uint8 [H, W] grey pixels of the Pillow image ``img``, each mode read at its own range.

    16-bit grey (``I;16``, and ``I`` as Pillow opens 16-bit PNGs) is scaled from 0..65535; ``F`` is
    taken on Pillow's 0..255 scale; transparent pictures are composited onto white; CMYK, YCbCr
    and the like go through RGB. ``L`` of the result is the luma Pillow computes for RGB.
    """
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(img).astype(np.float64) * (255.0 / 65535.0)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if mode == "F":
        return np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    elif mode not in ("1", "L", "P", "RGB"):
        img = img.convert("RGB")          # CMYK, YCbCr, LAB, HSV, RGBX: Pillow's own conversion to RGB first
    return np.asarray(img.convert("L"), dtype=np.uint8)


def border_mean(grey: np.ndarray) -> float:
    """Mean of the pixels in a frame ``BORDER_FRACTION`` of the shorter side wide (at least 1 pixel)."""
    h, w = grey.shape
    k = max(1, int(round(min(h, w) * BORDER_FRACTION)))
    frame = np.ones_like(grey, dtype=bool)
    frame[k:h - k, k:w - k] = False
    return float(grey[frame].mean())


def read_picture(path) -> Picture:
    """Read ``path`` as a grey picture with a dark background (inverted if its border is light)."""
    grey, size = read_grey(path)
    mean = border_mean(grey)
    inverted = mean > LIGHT
    return Picture(Path(path), 255 - grey if inverted else grey, size, inverted, mean)


def square(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` padded to a square with the mean of its border, the picture centred."""
    h, w = pixels.shape
    side = max(h, w)
    if side * side > MAX_PIXELS:   # read_grey refuses such pictures; a caller's own array is checked here
        raise ImageError(f"a {w}x{h} picture pads to a {side}x{side} square, more than the "
                         f"{MAX_PIXELS // 10**6} megapixels accepted; crop or scale it first")
    fill = int(round(border_mean(pixels)))
    out = np.full((side, side), fill, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = pixels
    return out


def resize(pixels: np.ndarray, side: int) -> np.ndarray:
    """uint8 [side, side] with Pillow's antialiased Lanczos filter."""
    from PIL import Image

    lanczos = getattr(Image, "Resampling", Image).LANCZOS
    return np.asarray(Image.fromarray(pixels).resize((side, side), lanczos), dtype=np.uint8)


def model_input(picture: Picture, size: int, task: str, mean: float, std: float, channels: int = 1) -> np.ndarray:
    """float32 [1, channels, size, size], normalised as in training, from a :class:`Picture`.

    Classification models saw 28 x 28 Fashion-MNIST images bilinearly enlarged to
    their input size, so a picture goes to 28 x 28 first and is then enlarged the
    same way; scene models (segmentation, detection) saw canvases drawn at their
    size, so the picture is resized to it directly.
    """
    sq = square(picture.pixels)
    if task == "classification":
        x = resize(sq, 28).astype(np.float32) / 255.0
        if size != 28:
            import paddle
            import paddle.nn.functional as F

            x = F.interpolate(paddle.to_tensor(x[None, None]), size=[size, size], mode="bilinear",
                              align_corners=False).numpy()[0, 0]
    else:
        x = resize(sq, size).astype(np.float32) / 255.0
    x = (x - mean) / std
    return np.ascontiguousarray(np.repeat(x[None, None], channels, axis=1), dtype=np.float32)
