"""Convolution through the oneDNN operator: functional ``conv2d`` and
``conv2d_transpose``, and the per-layer routing that :func:`paddle_cnn.accel.apply`
installs.

Routing replaces the ``forward`` of each chosen ``nn.Conv2D`` /
``nn.Conv2DTranspose`` *instance*; the class, the parameters, their names and
the state dict stay as they are, so checkpoints move freely between
accelerated and plain models. Inputs the operator does not cover (not
float32, not on the CPU, empty, an explicit ``output_size``) go to Paddle's
own forward at call time, and so does every call outside dynamic mode
(``paddle.jit.to_static``, ``paddle.jit.save``): an exported program holds
Paddle's standard operators only, loadable wherever Paddle Inference runs.
"""
from __future__ import annotations

import ctypes
import os
from typing import Sequence

import paddle
import paddle.nn.functional as F
from paddle import nn

from .build import Library, load_library

_MKL = None  # ctypes handle of the MKL Paddle loaded, once it is loaded


def current_threads() -> int:
    """The thread count Paddle's MKL runs with now (``core.set_num_threads`` sets it).

    Paddle loads MKL on its first matmul; before that, MKL will start from
    ``MKL_NUM_THREADS`` (set by paddle_cnn.runtime), so that is the answer.
    """
    global _MKL
    if _MKL is None:
        try:
            _MKL = ctypes.CDLL("libmklml_intel.so", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            _MKL = None
    if _MKL is not None:
        return max(1, int(_MKL.MKL_Get_Max_Threads()))
    for key in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    from ..runtime import physical_cores

    return physical_cores()


def _pair(value, name: str) -> list:
    if isinstance(value, int):
        return [value, value]
    value = list(value)
    if len(value) == 1:
        return value * 2
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be an int or two ints, got {value!r}")
    return value


def explicit_padding(padding, in_hw: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                     dilation: Sequence[int]) -> tuple:
    """Paddle's padding forms as ([top, bottom, left, right], dilation).

    Accepts what ``F.conv2d`` accepts for NCHW: an int, [ph, pw],
    [top, bottom, left, right], [[0, 0], [0, 0], [t, b], [l, r]], "VALID" and
    "SAME". "SAME" follows Paddle's rule: output = ceil(input / stride), the
    extra pixel at the bottom/right, and dilation treated as 1.
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return [0, 0, 0, 0], list(dilation)
        if mode != "SAME":
            raise ValueError(f"unknown padding {padding!r}; use 'SAME', 'VALID' or numbers")
        pads = []
        for size, k, s in zip(in_hw, kernel, stride):
            out = (size + s - 1) // s
            total = max((out - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return pads, [1, 1]
    if isinstance(padding, int):
        pads = [padding] * 4
    else:
        padding = list(padding)
        if len(padding) == 4 and all(isinstance(p, (list, tuple)) for p in padding):
            if any(p != 0 for pair in padding[:2] for p in pair):
                raise ValueError(f"non-zero padding in the batch or channel dimension: {padding!r}")
            pads = [*padding[2], *padding[3]]
        elif len(padding) == 4:
            pads = padding
        elif len(padding) == 2:
            pads = [padding[0], padding[0], padding[1], padding[1]]
        else:
            raise ValueError(f"padding must have 1, 2 or 4 values, got {padding!r}")
    pads = [int(p) for p in pads]
    if min(pads) < 0:
        raise ValueError(f"padding must be >= 0, got {pads}")
    return pads, list(dilation)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, threads: int | None = None):
    """``F.conv2d`` for float32 NCHW CPU tensors with groups 1, through oneDNN.

    Same values and gradients as ``paddle.nn.functional.conv2d`` (to float32
    rounding). ``threads=None`` follows Paddle's current MKL thread count.
    Backward-data is skipped when ``x.stop_gradient`` (a network's input).

    Example::

        y = conv2d(paddle.randn([8, 3, 32, 32]), paddle.randn([16, 3, 3, 3]), padding=1)
        y.shape  # [8, 16, 32, 32]
    """
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d expects a 4-D NCHW input and 4-D weight, got {x.ndim}-D and {weight.ndim}-D")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"weight expects {weight.shape[1]} input channels, the input has {x.shape[1]} "
                         "(groups must be 1 here)")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads, dilation = explicit_padding(padding, x.shape[2:], weight.shape[2:], stride, dilation)
    return _run(load_library(), x, weight, bias, stride, pads, dilation, threads)


def conv2d_transpose(x, weight, bias=None, stride=1, padding=0, dilation=1, threads: int | None = None):
    """``F.conv2d_transpose`` for float32 NCHW CPU tensors with groups 1, through oneDNN.

    ``weight`` is [in_channels, out_channels, kh, kw] as in Paddle. Explicit
    paddings and "VALID" only, no ``output_padding`` / ``output_size`` (use
    Paddle's for those).
    """
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d_transpose expects a 4-D NCHW input and 4-D weight, got {x.ndim}-D and "
                         f"{weight.ndim}-D")
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"weight expects {weight.shape[0]} input channels, the input has {x.shape[1]} "
                         "(groups must be 1 here)")
    if isinstance(padding, str) and padding.upper() == "SAME":
        raise ValueError("padding='SAME' is not supported by the oneDNN conv2d_transpose; use F.conv2d_transpose")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads, dilation = explicit_padding(padding, x.shape[2:], weight.shape[2:], stride, dilation)
    return _run(load_library(), x, weight, bias, stride, pads, dilation, threads, transposed=True)


def _run(library: Library, x, weight, bias, stride, pads, dilation, threads, transposed: bool = False):
    if hasattr(x, "is_contiguous") and not x.is_contiguous():
        x = x.contiguous()
    n_threads = current_threads() if threads is None else int(threads)
    need_dx = not x.stop_gradient
    ops = library.ops
    if transposed:
        if bias is None:
            return ops.pcnn_conv2d_transpose(x, weight, stride, pads, dilation, n_threads, need_dx)
        return ops.pcnn_conv2d_transpose_bias(x, weight, bias, stride, pads, dilation, n_threads, need_dx)
    if bias is None:
        return ops.pcnn_conv2d(x, weight, stride, pads, dilation, n_threads, need_dx)
    return ops.pcnn_conv2d_bias(x, weight, bias, stride, pads, dilation, n_threads, need_dx)


# ------------------------------------------------------------ layer routing

def _zero(value) -> bool:
    return all(v == 0 for v in (value if isinstance(value, (list, tuple)) else [value]))


def layer_supported(layer: nn.Layer) -> str | None:
    """None if ``layer`` can be routed, else why not (a short phrase)."""
    if isinstance(layer, nn.Conv2DTranspose):
        base = nn.Conv2DTranspose
    elif isinstance(layer, nn.Conv2D):
        base = nn.Conv2D
    else:
        return "not a convolution"
    if type(layer).forward is not base.forward:
        return f"a {base.__name__} subclass with its own forward"
    if layer._groups != 1:
        return f"groups={layer._groups}"
    if layer._data_format != "NCHW":
        return f"data_format={layer._data_format}"
    if layer.weight.dtype != paddle.float32:
        return f"weight dtype {layer.weight.dtype}"
    allowed = ("EXPLICIT", "VALID") if base is nn.Conv2DTranspose else ("EXPLICIT", "SAME", "VALID")
    if getattr(layer, "_padding_algorithm", None) not in allowed:
        return f"padding {layer._padding!r}"
    if base is nn.Conv2DTranspose and not _zero(layer.output_padding):
        return "output_padding"
    return None


def _routed_forward(self, x):
    """Conv2D.forward through oneDNN (installed on an instance by route())."""
    route = self.__dict__["_pcnn_accel_route"]
    if (not paddle.in_dynamic_mode() or x.dtype != paddle.float32 or x.ndim != 4 or not x.place.is_cpu_place()
            or x.shape[0] == 0):
        return type(self).forward(self, x)
    if self._padding_mode != "zeros":
        x = F.pad(x, self._reversed_padding_repeated_twice, mode=self._padding_mode,
                  data_format=self._data_format)
    pads, dilation = route["pads"], self._dilation
    if pads is None:  # "SAME" / "VALID": depends on the input size
        pads, dilation = explicit_padding(self._padding_algorithm, x.shape[2:], self._kernel_size,
                                          self._stride, self._dilation)
    return _run(load_library(), x, self.weight, self.bias, self._stride, pads, dilation, route["threads"])


def _routed_transpose_forward(self, x, output_size=None):
    """Conv2DTranspose.forward through oneDNN; an explicit output_size goes to Paddle's."""
    route = self.__dict__["_pcnn_accel_route"]
    if (not paddle.in_dynamic_mode() or output_size is not None or x.dtype != paddle.float32 or x.ndim != 4
            or not x.place.is_cpu_place() or x.shape[0] == 0):
        return type(self).forward(self, x, output_size)
    return _run(load_library(), x, self.weight, self.bias, self._stride, route["pads"], self._dilation,
                route["threads"], transposed=True)


def route(layer: nn.Layer, threads: int | None) -> None:
    """Send ``layer``'s forward through the operator (layer_supported() must be None).

    Only plain data goes on the layer (the thread setting and the padding),
    so deep copies of a routed model work and stay routed.
    """
    pads = None
    if layer._padding_algorithm in ("EXPLICIT", "VALID") or isinstance(layer, nn.Conv2DTranspose):
        padding = "VALID" if layer._padding_algorithm == "VALID" else layer._updated_padding
        pads, _ = explicit_padding(padding, (0, 0), layer._kernel_size, layer._stride, layer._dilation)
    forward = _routed_transpose_forward if isinstance(layer, nn.Conv2DTranspose) else _routed_forward
    # object.__setattr__: plain attributes, invisible to parameters() and state_dict().
    object.__setattr__(layer, "_pcnn_accel_route", {"threads": threads, "pads": pads})
    object.__setattr__(layer, "forward", forward.__get__(layer, type(layer)))


def unroute(layer: nn.Layer) -> bool:
    """Give ``layer`` back Paddle's forward; True if it was routed."""
    if "_pcnn_accel_route" not in layer.__dict__:
        return False
    del layer.__dict__["_pcnn_accel_route"]
    layer.__dict__.pop("forward", None)
    return True


def is_routed(layer: nn.Layer) -> bool:
    return "_pcnn_accel_route" in layer.__dict__
