"""Batch norm, pooling and ReLU through the oneDNN operators (norm_pool_onednn.cc, issue #24):
functional ``batch_norm``, ``max_pool2d``, ``avg_pool2d``, ``relu``, and the per-layer routing
that :func:`paddle_cnn.accel.apply` installs beside the convolutions'.

Paddle's eager CPU kernels for these run on one thread; oneDNN's use the
same OpenMP threads as the oneDNN convolution. Routing follows conv.py:
only the ``forward`` of a chosen ``nn.BatchNorm2D`` / ``nn.MaxPool2D`` /
``nn.AvgPool2D`` / ``nn.ReLU`` *instance* is replaced, so parameters, buffers
and the state dict stay as they are. At call time, an input the operators do
not cover (not float32/bfloat16, not 4-D on the CPU, empty) and every call
outside dynamic mode (``paddle.jit.to_static`` / ``paddle.jit.save``) go to
Paddle's own forward, so exported programs hold Paddle's standard operators.

The operators take float32 or bfloat16 activations; batch norm's scale,
shift and statistics stay float32 (the master copies), and its running
statistics are updated in place with Paddle's rule
``running = momentum * running + (1 - momentum) * batch`` (biased variance).
"""
from __future__ import annotations

import math

import paddle
from paddle import nn

from .build import Unavailable, load_library, verdict
from .conv import current_threads

ACTIVATION_DTYPES = (paddle.float32, paddle.bfloat16)
ROUTE_KEY = "_pcnn_accel_layer_route"  # conv.py's routed convolutions carry "_pcnn_accel_route"


def _threads(threads) -> int:
    return current_threads() if threads is None else int(threads)


def _needs_grad(*tensors) -> bool:
    return paddle.is_grad_enabled() and any(t is not None and not t.stop_gradient for t in tensors)


def _check4(x, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D NCHW input, got {x.ndim}-D")
    if x.dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"{name} takes float32 or bfloat16 inputs, got {x.dtype}")


# ------------------------------------------------------------- functional

def batch_norm(x, running_mean, running_var, weight, bias, training: bool, momentum: float = 0.9,
               epsilon: float = 1e-5, threads: int | None = None):
    """``F.batch_norm`` (NCHW, scale and shift given) through oneDNN.

    ``training=True`` normalises with the batch statistics and updates
    ``running_mean`` / ``running_var`` in place (Paddle's momentum rule);
    ``False`` uses the running statistics, which then stay unchanged.
    Gradients reach ``x``, ``weight`` and ``bias``.
    """
    _check4(x, "batch_norm")
    ops = load_library().ops
    if training:
        y, _, _ = ops.pcnn_batch_norm_train(x, weight, bias, running_mean, running_var, float(epsilon),
                                            float(momentum), _threads(threads))
        return y
    return ops.pcnn_batch_norm_infer(x, weight, bias, running_mean, running_var, float(epsilon),
                                     _threads(threads))


def batch_norm_relu(x, running_mean, running_var, weight, bias, momentum: float = 0.9, epsilon: float = 1e-5,
                    threads: int | None = None):
    """``F.relu(F.batch_norm(x, ..., training=True))`` in one oneDNN primitive (its fused ReLU, with a workspace
    for the backward); updates the running statistics as :func:`batch_norm` does. Training only."""
    _check4(x, "batch_norm_relu")
    y, _, _, _ = load_library().ops.pcnn_batch_norm_relu_train(x, weight, bias, running_mean, running_var,
                                                               float(epsilon), float(momentum), _threads(threads))
    return y


def _two(value, name: str) -> list:
    if isinstance(value, int):
        return [value, value]
    value = list(value)
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"{name} must be a positive int or two positive ints, got {value!r}")
    return value


def pool_pads(padding, in_hw, kernel, stride, ceil_mode: bool) -> list:
    """Paddle's pooling padding as explicit [top, bottom, left, right].

    ``ceil_mode`` becomes extra bottom/right padding: Paddle's output size
    ``(in + pads - kernel + stride - 1) // stride + 1`` is oneDNN's floor
    size of the padded input. "SAME" / "VALID" raise ValueError (the routed
    layers leave those to Paddle).
    """
    if isinstance(padding, str):
        raise ValueError(f"padding {padding!r} is not supported here; use numbers")
    if isinstance(padding, int):
        pads = [padding] * 4
    else:
        padding = list(padding)
        if len(padding) == 4 and all(isinstance(p, (list, tuple)) for p in padding):
            pads = [*padding[2], *padding[3]]
        elif len(padding) == 4:
            pads = padding
        elif len(padding) == 2:
            pads = [padding[0], padding[0], padding[1], padding[1]]
        elif len(padding) == 1:
            pads = padding * 4
        else:
            raise ValueError(f"padding must have 1, 2 or 4 values, got {padding!r}")
    pads = [int(p) for p in pads]
    if min(pads) < 0:
        raise ValueError(f"padding must be >= 0, got {pads}")
    for axis in (0, 1):
        size = in_hw[axis] + pads[2 * axis] + pads[2 * axis + 1] - kernel[axis]
        if size < 0:
            raise ValueError(f"the pooling window {kernel} does not fit the padded input {list(in_hw)}")
        if ceil_mode:
            out = math.ceil(size / stride[axis]) + 1
            pads[2 * axis + 1] += (out - 1) * stride[axis] - size
    return pads


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, threads: int | None = None):
    """``F.max_pool2d`` (NCHW, no ``return_mask``) through oneDNN; gradients go to each window's maximum."""
    _check4(x, "max_pool2d")
    kernel = _two(kernel_size, "kernel_size")
    stride = kernel if stride is None else _two(stride, "stride")
    pads = pool_pads(padding, x.shape[2:], kernel, stride, ceil_mode)
    y, _ = load_library().ops.pcnn_max_pool2d(x, kernel, stride, pads, _threads(threads), _needs_grad(x))
    return y


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, exclusive: bool = True,
               threads: int | None = None):
    """``F.avg_pool2d`` (NCHW, no ``divisor_override``) through oneDNN.

    ``exclusive=True`` (Paddle's default) averages over the window's
    positions inside the input; ``False`` divides by the whole window.
    """
    _check4(x, "avg_pool2d")
    if ceil_mode and not exclusive:
        # Paddle then divides by the window clipped to the explicitly padded input, oneDNN by the whole window.
        raise ValueError("avg_pool2d: ceil_mode=True with exclusive=False is left to F.avg_pool2d")
    kernel = _two(kernel_size, "kernel_size")
    stride = kernel if stride is None else _two(stride, "stride")
    pads = pool_pads(padding, x.shape[2:], kernel, stride, ceil_mode)
    return load_library().ops.pcnn_avg_pool2d(x, kernel, stride, pads, bool(exclusive), _threads(threads))


def relu(x, threads: int | None = None):
    """``F.relu`` through oneDNN (float32 or bfloat16, any shape)."""
    if x.dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"relu takes float32 or bfloat16 inputs, got {x.dtype}")
    return load_library().ops.pcnn_relu(x, _threads(threads))


# ------------------------------------------------------------ layer routing

KINDS = (nn.BatchNorm2D, nn.MaxPool2D, nn.AvgPool2D, nn.ReLU)
KIND_NAMES = {"batch_norm": nn.BatchNorm2D, "max_pool": nn.MaxPool2D, "avg_pool": nn.AvgPool2D, "relu": nn.ReLU}
# Which kinds apply() routes: "all", "none", or names from KIND_NAMES, comma-separated. For
# experiments (benchmarks.throughput --env paddle_cnn+nobn:PADDLE_CNN_ACCEL_LAYERS=max_pool,avg_pool,relu).
KINDS_ENV = "PADDLE_CNN_ACCEL_LAYERS"
# The default routes pooling only: oneDNN's max pooling trained about 2x faster than Paddle's, while its
# batch norm on plain NCHW (no blocked layout) and its ReLU backward were slower than Paddle's kernels in
# op timings taken on a busy machine (benchmarks/README.md has the whole-step comparison).
DEFAULT_KINDS = "max_pool,avg_pool"


def selected_kinds(value: str | None = None) -> tuple:
    """The layer classes :func:`route_model` routes, from ``value`` or the environment variable KINDS_ENV."""
    import os

    value = (os.environ.get(KINDS_ENV, DEFAULT_KINDS) if value is None else value).strip().lower()
    if value in ("", "all"):
        return KINDS
    if value == "none":
        return ()
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in KIND_NAMES]
    if unknown:
        raise ValueError(f"{KINDS_ENV}: unknown layer kind(s) {', '.join(unknown)}; use all, none or "
                         f"{', '.join(KIND_NAMES)}")
    return tuple(KIND_NAMES[n] for n in names)


def _kind(layer):
    for base in KINDS:
        if isinstance(layer, base):
            return base
    return None


def layer_supported(layer: nn.Layer) -> str | None:
    """None if ``layer`` can be routed, "not a routed layer" for other kinds, else why not."""
    base = _kind(layer)
    if base is None:
        return "not a routed layer"
    if type(layer).forward is not base.forward:
        return f"a {base.__name__} subclass with its own forward"
    if base is nn.BatchNorm2D:
        if layer._data_format != "NCHW":
            return f"data_format={layer._data_format}"
        if layer.weight is None or layer.bias is None:
            return "batch norm without scale or shift"
        if layer._use_global_stats is not None:
            return f"use_global_stats={layer._use_global_stats}"
        if not all(t.dtype == paddle.float32 for t in (layer.weight, layer.bias, layer._mean, layer._variance)):
            return f"batch norm parameters in {layer.weight.dtype}"
    elif base is nn.ReLU:
        return None
    else:
        if layer.data_format != "NCHW":
            return f"data_format={layer.data_format}"
        if isinstance(layer.padding, str):
            return f"padding {layer.padding!r}"
        if base is nn.MaxPool2D and layer.return_mask:
            return "return_mask"
        if base is nn.AvgPool2D and layer.divisor is not None:
            return "divisor_override"
        if base is nn.AvgPool2D and layer.ceil_mode and not layer.exclusive:
            return "ceil_mode with exclusive=False"
        try:
            kernel = _two(layer.ksize, "kernel_size")
            stride = kernel if layer.stride is None else _two(layer.stride, "stride")
            pool_pads(layer.padding, (10**6, 10**6), kernel, stride, False)
        except (TypeError, ValueError) as e:
            return f"pooling arguments ({e})"
    return None


def _covered(x) -> bool:
    return (paddle.in_dynamic_mode() and x.dtype in ACTIVATION_DTYPES and x.ndim == 4 and x.place.is_cpu_place()
            and x.shape[0] > 0 and all(d > 0 for d in x.shape))


def _batch_norm_forward(self, x):
    if not _covered(x):
        return type(self).forward(self, x)
    return batch_norm(x, self._mean, self._variance, self.weight, self.bias, self.training, self._momentum,
                      self._epsilon, self.__dict__[ROUTE_KEY]["threads"])


def _max_pool_forward(self, x):
    route = self.__dict__[ROUTE_KEY]
    if not _covered(x):
        return type(self).forward(self, x)
    return max_pool2d(x, route["kernel"], route["stride"], self.padding, self.ceil_mode, route["threads"])


def _avg_pool_forward(self, x):
    route = self.__dict__[ROUTE_KEY]
    if not _covered(x):
        return type(self).forward(self, x)
    return avg_pool2d(x, route["kernel"], route["stride"], self.padding, self.ceil_mode, self.exclusive,
                      route["threads"])


def _relu_forward(self, x):
    if not (paddle.in_dynamic_mode() and x.dtype in ACTIVATION_DTYPES and x.place.is_cpu_place() and x.size > 0):
        return type(self).forward(self, x)
    return relu(x, self.__dict__[ROUTE_KEY]["threads"])


_FORWARDS = {nn.BatchNorm2D: _batch_norm_forward, nn.MaxPool2D: _max_pool_forward,
             nn.AvgPool2D: _avg_pool_forward, nn.ReLU: _relu_forward}


def route(layer: nn.Layer, threads: int | None) -> None:
    """Send ``layer``'s forward through the operators (layer_supported() must be None).

    Plain data only goes on the layer, so deep copies stay routed.
    """
    base = _kind(layer)
    state = {"threads": threads}
    if base in (nn.MaxPool2D, nn.AvgPool2D):
        state["kernel"] = _two(layer.ksize, "kernel_size")
        state["stride"] = state["kernel"] if layer.stride is None else _two(layer.stride, "stride")
    object.__setattr__(layer, ROUTE_KEY, state)
    object.__setattr__(layer, "forward", _FORWARDS[base].__get__(layer, type(layer)))


def unroute(layer: nn.Layer) -> bool:
    """Give ``layer`` back Paddle's forward; True if it was routed here."""
    if ROUTE_KEY not in layer.__dict__:
        return False
    del layer.__dict__[ROUTE_KEY]
    layer.__dict__.pop("forward", None)
    return True


def is_routed(layer: nn.Layer) -> bool:
    return ROUTE_KEY in layer.__dict__


def unroute_model(model: nn.Layer) -> int:
    """Undo :func:`route_model`; how many layers got Paddle's forward back."""
    return sum(unroute(layer) for layer in model.sublayers(include_self=True))


def route_model(model: nn.Layer, threads: int | None) -> tuple:
    """Route every supported layer of ``model``: ({kind name: count}, {why not: count})."""
    routed, skipped = {}, {}
    kinds = selected_kinds()
    for layer in model.sublayers(include_self=True):
        if ROUTE_KEY in layer.__dict__:
            continue
        why = layer_supported(layer)
        if why is None and _kind(layer) not in kinds:
            why = f"not selected in {KINDS_ENV}"
        if why is None:
            route(layer, threads)
            name = _kind(layer).__name__
            routed[name] = routed.get(name, 0) + 1
        elif why != "not a routed layer":
            skipped[why] = skipped.get(why, 0) + 1
    return routed, skipped


# ----------------------------------------------------------------- self-check

def _relative_error(value, reference) -> float:
    import numpy as np

    a = np.asarray(value.astype("float32").numpy(), dtype=np.float64)
    r = np.asarray(reference.astype("float32").numpy(), dtype=np.float64)
    return float(np.abs(a - r).max() / max(np.abs(r).max(), 1e-12))


def compare_with_paddle(layer: nn.Layer, x_np, dtype: str = "float32") -> dict:
    """Run ``layer`` routed and with Paddle's forward on the same input; relative errors.

    Compares the output, the input gradient, the parameter gradients and (for
    batch norm) the running statistics afterwards. The layer's state is
    restored between the two runs, so both start from the same buffers.
    """
    import numpy as np


    state = {k: v.numpy().copy() for k, v in layer.state_dict().items()}
    results = []
    for use_op in (True, False):
        layer.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
        x = paddle.to_tensor(x_np.astype("float32")).astype(dtype)
        x.stop_gradient = False
        if use_op:
            route(layer, None)
            try:
                y = layer(x)
            finally:
                unroute(layer)
        else:
            y = layer(x)
        upstream = paddle.to_tensor(np.cos(np.arange(int(np.prod(y.shape)))).reshape(y.shape).astype("float32"))
        named = [(n, p) for n, p in layer.named_parameters() if not p.stop_gradient]
        grads = paddle.grad([y], [x] + [p for _, p in named], [upstream.astype(y.dtype)])
        # by the layer's own names (weight, bias): Paddle's unique names (w_0, b_3) depend on what was built before
        names = ["out", "dx"] + [f"d{n}" for n, _ in named]
        found = dict(zip(names, [y, *grads]))
        for key, value in layer.state_dict().items():
            if "_mean" in key or "_variance" in key:
                found[key] = value.clone()
        results.append(found)
    layer.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    return {name: _relative_error(results[0][name], results[1][name]) for name in results[1]}


SELF_CHECK_RTOL = 1e-4


def self_check() -> None:
    """Compare each routed layer kind with Paddle's (values, gradients, running statistics).

    Raises Unavailable on a mismatch. Needs the library loaded.
    """
    import numpy as np

    rng = np.random.default_rng(1)  # numpy, so Paddle's own random stream is left alone
    with paddle.utils.unique_name.guard():  # the check's layers take no names from the user's models
        bn = nn.BatchNorm2D(3, momentum=0.8)
    bn.weight.set_value(paddle.to_tensor(rng.standard_normal(3).astype("float32")))
    bn.bias.set_value(paddle.to_tensor(rng.standard_normal(3).astype("float32")))
    bn._variance.set_value(paddle.to_tensor(rng.uniform(0.5, 2, 3).astype("float32")))
    cases = [
        ("BatchNorm2D train", bn, (4, 3, 5, 6), True),
        ("BatchNorm2D eval", bn, (2, 3, 4, 5), False),
        ("MaxPool2D(3, 2, ceil_mode)", nn.MaxPool2D(3, 2, padding=1, ceil_mode=True), (2, 3, 8, 9), True),
        ("AvgPool2D(2, 2, padding=1)", nn.AvgPool2D(2, 2, padding=1), (2, 3, 7, 6), True),
        ("AvgPool2D(3, 2, inclusive)", nn.AvgPool2D(3, 2, padding=1, exclusive=False), (1, 2, 7, 7), True),
        ("ReLU", nn.ReLU(), (2, 3, 4, 5), True),
    ]
    for name, layer, shape, training in cases:
        layer.train() if training else layer.eval()
        errors = compare_with_paddle(layer, rng.standard_normal(shape))
        worst = max(errors, key=errors.get)
        if not errors[worst] <= SELF_CHECK_RTOL:
            raise Unavailable(f"self-check failed: {name} {worst} differs from Paddle's by {errors[worst]:.2e} "
                              f"(relative) at x{list(shape)}")


_CHECKED: tuple | None = None  # checked()'s answer, once the operators were tried


def checked() -> tuple:
    """(True, description) once :func:`self_check` passed in this process, else (False, why not). Never raises.

    The convolution's library must load first (``accel.available()``); a
    failure here leaves the convolutions routed and these layers on Paddle's kernels.
    """
    global _CHECKED
    if _CHECKED is None:
        def check():
            load_library()
            self_check()

        _CHECKED = verdict(check, lambda: "batch norm, pooling and ReLU operators self-checked",
                           "self-check of batch norm / pooling / ReLU")
    return _CHECKED


def apply_layers(model: nn.Layer, threads: int | None) -> tuple:
    """Route ``model``'s batch norm, pooling and ReLU layers if :func:`checked` passed.

    Returns ({kind: count}, a phrase for accel.apply's log line, starting with "; ").
    """
    ok, reason = checked()
    if ok:
        try:
            selected_kinds()
        except ValueError as e:  # a bad setting: said in the log line, as apply() never raises in auto
            ok, reason = False, str(e)
    if not ok:
        return {}, f"; batch norm, pooling and ReLU stay on Paddle's kernels ({reason})"
    routed, skipped = route_model(model, threads)
    note = ", ".join(f"{n} {kind}" for kind, n in routed.items())
    note = f"; {note} through oneDNN" if note else ""
    note += "".join(f"; {n} left on Paddle's kernels ({why})" for why, n in skipped.items())
    return routed, note


__all__ = ["apply_layers", "checked", "is_routed", "unroute", "unroute_model", "avg_pool2d", "batch_norm",
           "batch_norm_relu", "layer_supported", "max_pool2d", "pool_pads", "relu", "route",
           "route_model", "self_check"]
