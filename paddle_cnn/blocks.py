"""Reusable pieces shared by several model files.

Each block names the course section that introduces it.
"""
from __future__ import annotations


def out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a conv or pool layer: floor((size + 2p - k) / s) + 1 (LeNet section)."""
    return (size + 2 * padding - kernel) // stride + 1


def check_input(x, model: str, min_size: int, expected: int | None = None) -> None:
    """Raise one clear error when an image batch cannot go through ``model``.

    ``expected`` is the side a model with a fully connected head was built for
    (its flatten size depends on it); fully convolutional models pass None.
    """
    if len(x.shape) != 4:
        raise ValueError(f"{model} expects a batch of images [N, C, H, W], got shape {list(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {h}x{w}; "
            f"resize to {min_size} or more (e.g. --resize {min_size})"
        )
    if expected is not None and (h, w) != (expected, expected):
        raise ValueError(
            f"{model} was built for {expected}x{expected} inputs (its flatten size depends on it) "
            f"but got {h}x{w}; build it with input_size={h} or resize the images to {expected}"
        )
