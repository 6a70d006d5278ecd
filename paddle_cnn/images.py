"""A user's picture -> the grey, dark-background square a Fashion-MNIST model was trained on.

Pictures are untrusted files: only PNG, JPEG, BMP, GIF and WebP are opened,
their declared size is checked before any pixel is decoded (a small file can
declare a billion pixels), and a truncated or broken file is one clear error.

How a picture is prepared (:func:`prepare`):

1. EXIF rotation applied (phone photos); the first frame of an animation;
   transparent pixels composited onto white, as a product photo would be;
2. converted to grey (ITU-R 601 luma, Pillow's ``L``);
3. background decided by the mean of the border pixels (a frame 1/20 of the
   shorter side wide): above mid-grey it is light and the picture is
   inverted, since Fashion-MNIST shows bright items on black (its own
   pictures were negated product photos);
4. padded to a square with the background's grey (the item keeps its
   proportions, as Fashion-MNIST's items did), then resized.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
MAX_PIXELS = 40_000_000        # 40 megapixels: any camera photo, not a decompression bomb
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
        with warnings.catch_warnings():   # Pillow warns about large pictures; the size check below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path, formats=FORMATS)
        with img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{path} declares {width}x{height} pixels, more than the {MAX_PIXELS // 10**6} "
                                 "megapixels accepted; scale the picture down first")
            if width < 1 or height < 1:
                raise ImageError(f"{path} has no pixels ({width}x{height})")
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            grey = np.asarray(img.convert("L"), dtype=np.uint8)
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
