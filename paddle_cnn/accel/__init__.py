"""Optional CPU accelerator: ``nn.Conv2D`` and ``nn.Conv2DTranspose`` through oneDNN (issue #15).

Paddle's eager CPU convolution is im2col + one GEMM per example with a
separate bias add; the oneDNN library that Paddle already ships runs the
whole batch in one primitive with the bias fused. This package builds a
small Paddle custom operator around it (conv_onednn.cc, compiled on first
use and cached per Paddle version) and routes a model's convolutions through
it without touching the model's parameters or state dict::

    from paddle_cnn import accel
    status = accel.apply(model, mode="auto")   # {"enabled", "reason", "onednn_version", "layers"}
    accel.remove(model)                         # back to Paddle's conv

``auto`` uses the operator when training on the CPU (with Paddle's CPU
build, or its GPU build on the CPU) once it has built and passed a
numerical self-check against ``F.conv2d``, first in a separate process;
otherwise it logs one line saying why Paddle's conv stays, and never
raises. Outside dynamic mode (``paddle.jit.to_static`` / ``paddle.jit.save``)
routed layers run Paddle's own convolution, so an exported program holds
Paddle's standard operators only. ``on`` raises a
RuntimeError when the operator cannot be used; ``off`` does nothing.
"""
from __future__ import annotations

from pathlib import Path

from .build import Unavailable, build_note, load_library, verdict
from .conv import conv2d, conv2d_transpose, current_threads, layer_supported, route, unroute
from . import layers  # batch norm, pooling, ReLU (issue #24)
from .bf16 import (activation_blockers, activations_requested, add_relu, bf16_available, bf16_supported,
                   conv2d_bf16, disable_bf16, enable_bf16, linear_bf16)
from .layers import avg_pool2d, batch_norm, max_pool2d, relu

MODES = ("auto", "on", "off")
SELF_CHECK_RTOL = 1e-4

__all__ = ["MODES", "apply", "available", "remove", "conv2d", "conv2d_transpose", "current_threads",
           "onednn_version", "avg_pool2d", "batch_norm", "bf16_supported", "max_pool2d", "relu",
           "bf16_available", "conv2d_bf16", "disable_bf16", "enable_bf16", "linear_bf16", "activation_blockers",
           "activations_requested", "add_relu"]

_CHECKED: tuple | None = None  # available()'s answer, once the operator was tried


def _why_not_here() -> str | None:
    """What rules the operator out before any build: the device (the platform is build.check_prerequisites')."""
    import paddle

    device = paddle.get_device()
    if not device.startswith("cpu"):
        return f"the current device is {device}, not the CPU"
    return None


def onednn_version() -> str | None:
    """The version of the oneDNN the operator runs on ("3.6.2"), or None if it is not loaded."""
    from . import build

    library = build.loaded()
    if library is None:
        return None
    major, minor, patch, _ = library.dnnl_version()
    return f"{major}.{minor}.{patch}"


def _relative_error(value, reference) -> float:
    import numpy as np

    a, r = np.asarray(value.numpy(), dtype=np.float64), np.asarray(reference.numpy(), dtype=np.float64)
    return float(np.abs(a - r).max() / max(np.abs(r).max(), 1e-12))


def _self_check(library) -> None:
    """Compare the operator with F.conv2d / F.conv2d_transpose (values and all gradients).

    Raises Unavailable on a mismatch, or when the operator did not bind Paddle's oneDNN.
    """
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from .build import DNNL_RUNTIME_OMP, paddle_libs_dir

    major, minor, patch, runtime = library.dnnl_version()
    if major != 3:
        raise Unavailable(f"Paddle's oneDNN is {major}.{minor}.{patch}; the operator needs v3")
    if runtime != library.compiled_cpu_runtime() or runtime != DNNL_RUNTIME_OMP:
        raise Unavailable(f"Paddle's oneDNN uses CPU runtime {runtime}, the operator was compiled for "
                          f"{library.compiled_cpu_runtime()} (OpenMP is {DNNL_RUNTIME_OMP})")
    bound = Path(library.dnnl_library_path())
    expected = paddle_libs_dir() / "libdnnl.so.3"
    if not (bound.exists() and bound.resolve().samefile(expected)):
        raise Unavailable(f"the operator bound {bound} instead of Paddle's {expected}")
    rng = np.random.default_rng(0)  # numpy, so Paddle's own random stream is left alone
    cases = [  # transposed, x shape, weight shape, bias, stride, padding, dilation
        (False, (2, 3, 11, 13), (4, 3, 3, 3), True, (2, 1), [1, 0, 2, 1], (1, 1)),
        (False, (1, 5, 9, 8), (6, 5, 3, 3), False, (1, 1), [2, 2, 2, 2], (2, 2)),
        (False, (3, 2, 7, 7), (5, 2, 1, 1), True, (1, 1), [0, 0, 0, 0], (1, 1)),
        (True, (2, 4, 5, 6), (4, 3, 2, 2), True, (2, 2), [0, 0, 0, 0], (1, 1)),
        (True, (1, 3, 6, 5), (3, 2, 3, 3), False, (2, 1), [1, 0, 1, 1], (1, 2)),
    ]
    for transposed, x_shape, w_shape, with_bias, stride, padding, dilation in cases:
        tensors = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
        if with_bias:
            tensors.append(rng.standard_normal(w_shape[1] if transposed else w_shape[0]))
        errors = {}
        results = []
        for use_op in (True, False):
            x, w, *b = [paddle.to_tensor(t.astype("float32"), stop_gradient=False) for t in tensors]
            bias = b[0] if b else None
            ours, paddles = (conv2d_transpose, F.conv2d_transpose) if transposed else (conv2d, F.conv2d)
            if use_op:
                y = ours(x, w, bias, stride, padding, dilation)
            else:
                y = paddles(x, w, bias, stride=list(stride), padding=padding, dilation=list(dilation))
            upstream = paddle.to_tensor(np.cos(np.arange(int(np.prod(y.shape)))).reshape(y.shape).astype("float32"))
            grads = paddle.grad([y], [x, w] + b, [upstream])
            results.append([y, *grads])
        for name, mine, ref in zip(("out", "dx", "dw", "db"), results[0], results[1]):
            errors[name] = _relative_error(mine, ref)
        worst = max(errors, key=errors.get)
        if not errors[worst] <= SELF_CHECK_RTOL:
            raise Unavailable(f"self-check failed: {worst} differs from {paddles.__name__} by {errors[worst]:.2e} "
                              f"(relative) at x{list(x_shape)}, w{list(w_shape)}")


def available() -> tuple:
    """(True, description) if the operator can be used here, else (False, why not).

    Builds (or loads the cached build of) the operator if needed and runs a
    numerical self-check against ``F.conv2d``, once per process (a fresh
    build is checked in a child process first). Never builds when the device
    is not the CPU. Never raises.
    """
    global _CHECKED
    try:
        reason = _why_not_here()
    except Exception as e:
        return False, f"cannot inspect this Paddle build: {type(e).__name__}: {e}"
    if reason is not None:
        return False, reason
    if _CHECKED is None:
        def check():
            _self_check(load_library())
            layers.checked()  # its own verdict: a failure there leaves the convolutions routed

        _CHECKED = verdict(check, lambda: f"oneDNN {onednn_version()} operator built and self-checked")
    return _CHECKED


def apply(model, mode: str = "auto", threads: int | None = None, log=print) -> dict:
    """Route ``model``'s Conv2D and Conv2DTranspose layers (groups 1, NCHW, float32) through oneDNN.

    Parameters, their names, the structure and the state dict are unchanged:
    only each routed layer's ``forward`` is replaced, so checkpoints load in
    both directions. ``threads=None`` follows Paddle's MKL thread count
    (``paddle.base.core.set_num_threads``) at every call. ``log`` receives one
    line (None: silent).

    Returns ``{"enabled": bool, "reason": str, "onednn_version": str | None,
    "layers": int}``. ``mode="on"`` raises RuntimeError where the operator
    cannot be used; ``"auto"`` then reports why and leaves Paddle's conv.
    """
    from paddle import nn

    if mode not in MODES:
        raise ValueError(f"accel mode must be one of {', '.join(MODES)}; got {mode!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    if not isinstance(model, nn.Layer):
        raise TypeError(f"accel.apply expects a paddle.nn.Layer, got {type(model).__name__}")
    status = {"enabled": False, "reason": "", "onednn_version": None, "layers": 0}
    if mode == "off":
        status["reason"] = "accel=off: Paddle's own convolution"
        return status
    ok, reason = available()
    note = build_note()  # the first use in this environment compiled the operators: say so, once
    if note:
        _log(log, f"accel: {note}")
    if not ok:
        if mode == "on":
            raise RuntimeError(f"accel=on, but the oneDNN convolution cannot be used: {reason}")
        status["reason"] = reason
        _log(log, f"accel: using Paddle's convolution ({reason})")
        return status
    routed, transposed, skipped = 0, 0, {}
    for layer in model.sublayers(include_self=True):
        why = layer_supported(layer)
        if why is None:
            route(layer, threads)
            routed += 1
            transposed += isinstance(layer, nn.Conv2DTranspose)
        elif why != "not a convolution":
            skipped[why] = skipped.get(why, 0) + 1
    version = onednn_version()
    left = "".join(f"; {n} left on Paddle's conv ({why})" for why, n in skipped.items())
    other, other_note = layers.apply_layers(model, threads)  # batch norm, pooling, ReLU
    left += other_note
    chain = None
    if routed and layers.checked()[0]:
        from .bf16 import _route_activations, chain_requested

        try:
            wanted = chain_requested()
        except ValueError as e:  # a bad setting: said in the log line, as apply() never raises in auto
            wanted, left = False, f"{left}; {e}"
        if wanted:  # float32 chains (issue 38): every batch norm and ReLU, residual sums fused with their ReLU
            chain = _route_activations(model, threads)
            left += f"; {chain} layers routed for float32 chains"
    if routed:
        which = f" ({transposed} transposed)" if transposed else ""
        reason = f"{routed} convolution layers{which} through oneDNN {version}{left}"
    else:
        reason = f"no convolution layer the operator covers (float32, NCHW, groups 1){left}"
    status.update(enabled=routed > 0, reason=reason, onednn_version=version, layers=routed, other_layers=other)
    if chain is not None:
        status["chain_layers"] = chain
    def plural(n):
        return f"{n} thread" + ("s" if n != 1 else "")

    how_many = plural(threads) if threads else f"{plural(current_threads())}, following MKL"
    _log(log, f"accel: {reason} ({how_many})" if routed else f"accel: using Paddle's convolution ({reason})")
    return status


def remove(model) -> int:
    """Undo :func:`apply`: every routed layer gets Paddle's forward back. Returns how many."""
    from paddle import nn

    if not isinstance(model, nn.Layer):
        raise TypeError(f"accel.remove expects a paddle.nn.Layer, got {type(model).__name__}")
    from .bf16 import disable_bf16

    disable_bf16(model)  # bf16 routes, residual blocks and global pooling of chains first: they wrap the others
    convs = sum(unroute(layer) for layer in model.sublayers(include_self=True))
    layers.unroute_model(model)  # batch norm, pooling, ReLU too; the count stays the convolutions'
    return convs


def _log(log, line: str) -> None:
    if log is not None:
        log(line)
