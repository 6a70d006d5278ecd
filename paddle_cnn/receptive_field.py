"""Receptive field arithmetic, layer by layer (DenseBox section; useful for every CNN).

For each layer output we track, along one axis (height; the models here are square):

* ``size``: the output side in units;
* ``jump``: the distance in input pixels between neighbouring output units (the cumulative stride);
* ``rf``: how many input pixels one output unit sees;
* ``start``: the input coordinate of the centre of the first output unit's field,
  with input pixel centres at 0, 1, ..., so a unit u of the layer is centred on
  ``start + u * jump``.

A conv or pool with kernel k, stride s, padding p and dilation d (k' = d(k-1)+1) gives
    size' = floor((size + 2p - k') / s) + 1,  jump' = jump * s,
    rf' = rf + (k' - 1) * jump,               start' = start + ((k' - 1) / 2 - p) * jump.
Up-sampling by s (``Conv2DTranspose`` or ``Upsample``) divides the jump by s,
moves ``start`` to the centre of the first output pixel (start + (p - (k'-1)/2) / s
* jump for a transposed conv, start + (1/(2s) - 1/2) * jump for ``Upsample``)
and widens the field by (ceil(k'/s) - 1) input units (transposed conv) or one
unit (bilinear; nearest adds none). Up-sampled units do not sit on a perfectly
regular grid of fields, so these two rows describe the average unit.
Every other layer (BN, ReLU, dropout, ...) leaves the field alone.

Branching models: the layers are walked in the order they were registered
(``named_children``, recursing into ``Sequential``, ``LayerList`` and custom
layers), as if they formed one chain. For a plain stack that is exact. For
our U-Net and DenseBox the registration order is the deepest path (encoder or
backbone down to the coarsest map, then back up through the decoder or the
fusion), and the skip branches that are concatenated onto it have smaller
fields centred at the same places, so the last row is the output's field.
For other branching models (Inception, ResNet) the rows are not meaningful.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from paddle import nn

_DOWN = (nn.Conv2D, nn.MaxPool2D, nn.AvgPool2D)
_UP = (nn.Conv2DTranspose, nn.Upsample)


@dataclass(frozen=True)
class RFRow:
    name: str      # dotted path of the layer in the model
    kind: str      # layer class
    size: int      # output side (units)
    jump: float    # input pixels between neighbouring output units
    rf: float      # receptive field side in input pixels
    start: float   # centre of the first unit's field, input pixel coordinates

    def __str__(self) -> str:
        return f"{self.name:<28} {self.kind:<16} {self.size:>5} {self.jump:>7g} {self.rf:>7g} {self.start:>8g}"


class RFTable(list):
    """A list of :class:`RFRow` that prints as a table."""

    def __str__(self) -> str:
        head = f"{'layer':<28} {'type':<16} {'size':>5} {'jump':>7} {'rf':>7} {'start':>8}"
        return "\n".join([head] + [str(r) for r in self])


def _first(v) -> int:
    """The height component of an int or a 2-/4-element list (Paddle stores both forms)."""
    return int(v[0]) if isinstance(v, (list, tuple)) else int(v)


def _padding(layer, kernel: int, dilation: int) -> int:
    p = layer._padding if isinstance(layer, nn.Conv2D) else layer.padding
    if isinstance(p, str):
        return (dilation * (kernel - 1)) // 2 if p.lower() == "same" else 0
    if isinstance(p, (list, tuple)) and p and isinstance(p[0], (list, tuple)):  # [[0,0],[0,0],[t,b],[l,r]]
        return int(p[-2][0])
    return _first(p)


def _walk(layer: nn.Layer, prefix: str = ""):
    for name, child in layer.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, _DOWN + _UP):
            yield path, child
        else:
            yield from _walk(child, path)


def receptive_field(model: nn.Layer, input_size: int) -> RFTable:
    """Receptive field, jump and start after each Conv2D / pool / up-sampling layer of ``model``.

    >>> net = nn.Sequential(nn.Conv2D(1, 1, 3, padding=1), nn.MaxPool2D(2, 2))
    >>> [(r.rf, r.jump) for r in receptive_field(net, 28)]
    [(3, 1), (4, 2)]
    """
    size, jump, rf, start = int(input_size), 1, 1, 0.0
    rows = RFTable()
    for name, layer in _walk(model):
        kind = type(layer).__name__
        if isinstance(layer, nn.Conv2DTranspose):
            k, s, d = _first(layer._kernel_size), _first(layer._stride), _first(layer._dilation)
            p, op = _first(layer._padding), _first(getattr(layer, "_output_padding", 0) or 0)
            keff = d * (k - 1) + 1
            size = (size - 1) * s - 2 * p + keff + op
            start += (p - (keff - 1) / 2) / s * jump
            rf += (math.ceil(keff / s) - 1) * jump
            jump /= s
        elif isinstance(layer, nn.Upsample):
            s = layer.scale_factor if layer.size is None else _first(layer.size) / size
            s = _first(s) if isinstance(s, (list, tuple)) else s
            start += (0.5 / s - 0.5) * jump
            rf += jump if layer.mode in ("bilinear", "linear", "bicubic") else 0
            size, jump = int(size * s), jump / s
        else:
            if isinstance(layer, nn.Conv2D):
                k, s, d = _first(layer._kernel_size), _first(layer._stride), _first(layer._dilation)
            else:
                k = _first(layer.ksize)
                s, d = _first(layer.stride if layer.stride is not None else layer.ksize), 1
            p = _padding(layer, k, d)
            keff = d * (k - 1) + 1
            rounding = math.ceil if getattr(layer, "ceil_mode", False) else math.floor
            size = rounding((size + 2 * p - keff) / s) + 1
            rf += (keff - 1) * jump
            start += ((keff - 1) / 2 - p) * jump
            jump *= s
        rows.append(RFRow(name, kind, size, jump, rf, start))
    return rows
