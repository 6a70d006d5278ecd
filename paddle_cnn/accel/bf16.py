"""Whether this CPU runs bfloat16 arithmetic natively (issue #24).

oneDNN's bf16 kernels are fast only where the CPU has AVX512-BF16 (Zen 4,
Cooper Lake and later Xeons) or AMX-BF16 (Sapphire Rapids); elsewhere they
emulate bf16 in fp32 and run slower than fp32 itself, so bf16 training is
offered only on those CPUs.
"""
from __future__ import annotations

import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names


def cpu_flags(cpuinfo: str) -> set:
    """The feature flags of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def bf16_supported(cpuinfo_path: str = "/proc/cpuinfo") -> tuple:
    """(True, "avx512_bf16") if the CPU has a native bf16 instruction set, else (False, why not).

    Reads the CPU flags from ``/proc/cpuinfo`` (Linux); the reason names the
    missing feature, so a caller can print it as it is.
    """
    path = Path(cpuinfo_path)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False, (f"cannot read {path} to look for the CPU's bf16 support ({' or '.join(BF16_FLAGS)}); "
                       f"bf16 training on the CPU needs Linux ({platform.system()} here)")
    flags = cpu_flags(text)
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, "+".join(found)
    model = next((line.partition(":")[2].strip() for line in text.splitlines()
                  if line.startswith("model name")), "this CPU")
    return False, f"{model} lacks {' and '.join(BF16_FLAGS)} (native bf16 arithmetic); use fp32 on it"


# ------------------------------------------------- bf16 convolutions and linear layers
#
# A bf16 training step here keeps float32 tensors between layers and float32 master weights: the
# Conv2D and Linear layers compute in bf16 inside oneDNN (bf16_onednn.cc: inputs and weights are
# rounded to bf16 where they are reordered for the primitive, results and gradients come back in
# float32). Paddle's CPU has no bf16 conv2d, matmul or add, so bf16 tensors could not flow through
# a model's residual adds; batch norm, pooling, ReLU (accel.layers) and the loss stay float32.

BF16_KEY = "_pcnn_accel_bf16"  # the state a bf16-routed layer carries (plain data and its previous forward)
BF16_RTOL = 2e-2  # bf16 has an 8-bit mantissa; oneDNN accumulates in float32

# bf16 activations (issue 38): with this switch on, a model whose every layer is one the operators cover
# (activation_blockers) keeps its activations in bf16 from one routed layer to the next -- conv -> batch
# norm -> ReLU -> pooling, the residual add -- instead of converting to float32 between layers: the first
# convolution rounds the input to bf16, batch norm normalises bf16 with float32 statistics, scale and
# shift, the linear layers take bf16 and give float32, so the head, the loss and softmax stay float32;
# the weights stay float32 (master copies). Off by default until measured faster (benchmarks/README.md).
ACTIVATIONS_ENV = "PADDLE_CNN_BF16_ACTIVATIONS"
DEFAULT_ACTIVATIONS = "0"
ACT_ROUTED_KEY = "_pcnn_bf16_act_routed"  # on layers that enable_bf16 routed for bf16 activations


def activations_requested(value: str | None = None) -> bool:
    """Whether bf16 activations are asked for: ``value``, else the environment variable ACTIVATIONS_ENV."""
    import os

    raw = os.environ.get(ACTIVATIONS_ENV, DEFAULT_ACTIVATIONS) if value is None else value
    word = raw.strip().lower()
    if word in ("1", "on", "true", "yes"):
        return True
    if word in ("0", "off", "false", "no", ""):
        return False
    raise ValueError(f"{ACTIVATIONS_ENV}={raw!r}: use 1 (bf16 activations between routed layers) or 0 "
                     "(float32 between layers)")


def conv2d_bf16(x, weight, bias=None, stride=1, padding=0, dilation=1, threads: int | None = None):
    """``F.conv2d`` (float32 NCHW, groups 1) computed in bf16: float32 in and out, gradients in float32."""
    from .build import load_library
    from .conv import _pair, current_threads, explicit_padding

    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d_bf16 expects x [N, C, H, W] and weight [O, C, kh, kw], got {x.shape} and "
                         f"{weight.shape}")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads, dilation = explicit_padding(padding, x.shape[2:], weight.shape[2:], stride, dilation)
    n = current_threads() if threads is None else int(threads)
    ops = load_library().ops
    if bias is None:
        return ops.pcnn_conv2d_bf16(x, weight, stride, pads, dilation, n, not x.stop_gradient)
    return ops.pcnn_conv2d_bias_bf16(x, weight, bias, stride, pads, dilation, n, not x.stop_gradient)


def linear_bf16(x, weight, bias, threads: int | None = None):
    """``F.linear`` (weight [in, out], a bias) computed in bf16: float32 in and out, any leading dims."""
    from .build import load_library
    from .conv import current_threads

    if x.ndim < 2 or weight.ndim != 2 or x.shape[-1] != weight.shape[0] or bias is None:
        raise ValueError(f"linear_bf16 expects x [..., {weight.shape[0]}], weight [in, out] and a bias; got x "
                         f"{x.shape}")
    n = current_threads() if threads is None else int(threads)
    flat = x if x.ndim == 2 else x.reshape([-1, x.shape[-1]])
    y = load_library().ops.pcnn_linear_bf16(flat, weight, bias, n)
    return y if x.ndim == 2 else y.reshape(list(x.shape[:-1]) + [weight.shape[1]])


def add_relu(x, y, threads: int | None = None):
    """``F.relu(x + y)`` in one oneDNN pass (float32 or bfloat16, same shape and type); gradients to both."""
    from .build import load_library
    from .conv import current_threads

    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(f"add_relu expects two tensors of one shape and type, got {x.shape} {x.dtype} and "
                         f"{y.shape} {y.dtype}")
    n = current_threads() if threads is None else int(threads)
    return load_library().ops.pcnn_add_relu(x, y, n)


def _fallback(self, x, *args):
    previous = self.__dict__[BF16_KEY]["previous"]
    return previous(x, *args) if previous is not None else type(self).forward(self, x, *args)


def _plain_float32(x) -> bool:
    import paddle

    return paddle.in_dynamic_mode() and x.dtype == paddle.float32 and x.place.is_cpu_place() and x.size > 0


def _activation(x) -> bool:
    """A float32 or bfloat16 CPU tensor in dynamic mode (what the bf16-activation routes take)."""
    import paddle

    return (paddle.in_dynamic_mode() and x.dtype in (paddle.float32, paddle.bfloat16) and x.place.is_cpu_place()
            and x.size > 0)


def _conv_bf16_forward(self, x):
    state = self.__dict__[BF16_KEY]
    if state.get("activations") and _activation(x) and x.ndim == 4:
        import paddle

        if x.dtype == paddle.float32:  # the chain's start: the input rounded to bf16 once
            x = x.astype("bfloat16")
    elif not (_plain_float32(x) and x.ndim == 4):
        return _fallback(self, x)
    from .conv import explicit_padding

    pads, dilation = state["pads"], self._dilation
    if pads is None:  # "SAME": depends on the input size
        pads, dilation = explicit_padding(self._padding_algorithm, x.shape[2:], self._kernel_size, self._stride,
                                          self._dilation)
    return conv2d_bf16(x, self.weight, self.bias, self._stride, pads, dilation, state["threads"])


def _linear_bf16_forward(self, x):
    ok = _activation(x) if self.__dict__[BF16_KEY].get("activations") else _plain_float32(x)
    if not (ok and x.ndim >= 2):
        return _fallback(self, x)
    return linear_bf16(x, self.weight, self.bias, self.__dict__[BF16_KEY]["threads"])


def bf16_layer_supported(layer) -> str | None:
    """None if ``layer`` can compute in bf16 here; "not a conv or linear layer", or why not."""
    import paddle
    from paddle import nn

    from .conv import layer_supported

    if isinstance(layer, nn.Conv2DTranspose):
        return "Conv2DTranspose (no bf16 operator)"
    if isinstance(layer, nn.Conv2D):
        why = layer_supported(layer)
        if why is None and layer._padding_mode != "zeros":
            why = f"padding_mode={layer._padding_mode}"
        return why
    if isinstance(layer, nn.Linear):
        if type(layer).forward is not nn.Linear.forward:
            return "a Linear subclass with its own forward"
        if layer.bias is None:
            return "a Linear without bias"
        if layer.weight.dtype != paddle.float32:
            return f"weight dtype {layer.weight.dtype}"
        return None
    return "not a conv or linear layer"


def _adaptive_avg_pool_forward(self, x):
    """AdaptiveAvgPool2D(1) as a whole-map average pool through oneDNN (Paddle's CPU pool2d has no bf16)."""
    if not (_activation(x) and x.ndim == 4):  # first: export (dy2static) rewrites this function's code
        return type(self).forward(self, x)
    from .layers import avg_pool2d

    h, w = x.shape[2:]
    return avg_pool2d(x, [h, w], [h, w], 0, threads=self.__dict__[BF16_KEY]["threads"])


def _residual_forward(self, x):
    """blocks.Residual.forward with the sum and the last ReLU in one oneDNN operator (bf16 or float32)."""
    if not _activation(x) or x.ndim != 4:
        return type(self).forward(self, x)
    from . import layers

    y = self.conv1(x)
    bn = self.bn1
    if bn.training and layers.is_routed(bn) and layers.is_routed(self.relu):  # batch norm and ReLU in one pass
        y = layers.batch_norm_relu(y, bn._mean, bn._variance, bn.weight, bn.bias, bn._momentum, bn._epsilon,
                                   self.__dict__[BF16_KEY]["threads"])
    else:
        y = self.relu(bn(y))
    y = self.bn2(self.conv2(y))
    if not self.residual:
        return self.relu(y)
    shortcut = x if self.conv3 is None else self.conv3(x)
    if shortcut.dtype != y.dtype:  # a float32 input reaching a block whose convolutions turn it into bf16
        shortcut = shortcut.astype(y.dtype)
    return add_relu(y, shortcut, self.__dict__[BF16_KEY]["threads"])


def _whole_map_pool(layer) -> bool:
    size = layer._output_size
    return layer._data_format == "NCHW" and size in (1, [1, 1], (1, 1))


def activation_blockers(model) -> list:
    """Why ``model`` cannot keep bf16 activations between layers: one phrase per layer that blocks it.

    Every layer must be one whose forward the operators cover in bf16 (Paddle's CPU has no bf16 add,
    ReLU, pooling or batch norm, so any other layer -- or a container whose forward does its own
    arithmetic -- could meet a bf16 tensor it cannot take). Empty: the model qualifies.
    """
    from paddle import nn

    from .. import blocks
    from . import layers

    def known(layer, base, *methods) -> bool:
        return type(layer).forward is base.forward and all(
            getattr(type(layer), name) in allowed for name, allowed in methods)

    from ..models.resnet import ResNet

    blockers = []
    for name, layer in model.named_sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Linear)) and not isinstance(layer, nn.Conv2DTranspose):
            why = bf16_layer_supported(layer)
        elif isinstance(layer, layers.KINDS):
            why = layers.layer_supported(layer)
        elif isinstance(layer, nn.AdaptiveAvgPool2D):
            why = None if known(layer, nn.AdaptiveAvgPool2D) and _whole_map_pool(layer) else "not a 1x1 output"
        elif isinstance(layer, (nn.Flatten, nn.Dropout, nn.Sequential)):
            base = next(b for b in (nn.Flatten, nn.Dropout, nn.Sequential) if isinstance(layer, b))
            why = None if known(layer, base) else "its own forward"
        elif isinstance(layer, blocks.Residual):
            why = None if known(layer, blocks.Residual) else "its own forward"
        elif isinstance(layer, blocks.Classifier):
            ok = known(layer, blocks.Classifier,
                       ("forward_features", (blocks.Classifier.forward_features, ResNet.forward_features)),
                       ("forward_head", (blocks.Classifier.forward_head,)))
            why = None if ok else "its own forward"
        else:
            why = "a layer the bf16 operators do not cover"
        if why is not None:
            blockers.append(f"{name or 'the model'} ({type(layer).__name__}: {why})")
    # The output must come from a linear layer (float32 out), so that the loss and softmax see float32.
    last = model.head if isinstance(model, blocks.Classifier) else model
    while isinstance(last, nn.Sequential) and len(last):
        last = last[len(last) - 1]
    if not isinstance(last, nn.Linear):
        blockers.append(f"the output ({type(last).__name__ if last is not None else 'no head'}: the last layer "
                        "must be a Linear, so that the loss sees float32)")
    return blockers


CHAIN_ENV = "PADDLE_CNN_ACCEL_CHAIN"  # "1": float32 chains too (accel.apply), off by default until measured


def chain_requested(value: str | None = None) -> bool:
    """Whether ``accel.apply`` routes float32 chains: ``value``, else the environment variable CHAIN_ENV."""
    import os

    raw = os.environ.get(CHAIN_ENV, "0") if value is None else value
    word = raw.strip().lower()
    if word in ("1", "on", "true", "yes"):
        return True
    if word in ("0", "off", "false", "no", ""):
        return False
    raise ValueError(f"{CHAIN_ENV}={raw!r}: use 1 (batch norm, ReLU and residual sums through oneDNN) or 0")


def _route_activations(model, threads) -> int:
    """Route what bf16 activations need besides the convolutions and linear layers; how many layers."""
    from paddle import nn

    from .. import blocks
    from . import layers

    count = 0
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, layers.KINDS) and not layers.is_routed(layer):
            layers.route(layer, threads)  # batch norm / ReLU / pooling even where KINDS_ENV leaves them
            object.__setattr__(layer, ACT_ROUTED_KEY, True)
            count += 1
        elif isinstance(layer, (nn.AdaptiveAvgPool2D, blocks.Residual)) and BF16_KEY not in layer.__dict__:
            forward = _residual_forward if isinstance(layer, blocks.Residual) else _adaptive_avg_pool_forward
            object.__setattr__(layer, BF16_KEY, {"threads": threads, "previous": layer.__dict__.get("forward")})
            object.__setattr__(layer, "forward", forward.__get__(layer, type(layer)))
            count += 1
    return count


def enable_bf16(model, threads: int | None = None, activations: bool | None = None, log=None) -> dict:
    """Make ``model``'s Conv2D and Linear layers compute in bf16 ({"Conv2D": n, "Linear": m}).

    Call after :func:`paddle_cnn.accel.apply` (it keeps each layer's routed
    forward as the fallback for inputs the bf16 operators do not take and
    for export); :func:`disable_bf16` undoes it. Parameters and the state
    dict are unchanged (float32 master weights).

    ``activations`` (None: the environment variable ACTIVATIONS_ENV, off by
    default) also keeps the activations in bf16 between layers when every
    layer of ``model`` allows it (:func:`activation_blockers`); the answer
    then has ``"activations": "bf16"`` and ``"chain_layers"`` (batch norm,
    ReLU, pooling and residual blocks routed for it); where a layer blocks
    it, ``log`` is told which and the activations stay float32.
    """
    from paddle import nn

    from .conv import explicit_padding

    counts = {}
    if activations is None:
        activations = activations_requested()
    if activations:
        blockers = activation_blockers(model)
        if blockers:
            activations = False
            if log is not None:
                more = f" and {len(blockers) - 3} more" if len(blockers) > 3 else ""
                log(f"bf16: activations stay float32 between layers: {'; '.join(blockers[:3])}{more}")
    for layer in model.sublayers(include_self=True):
        if BF16_KEY in layer.__dict__ or bf16_layer_supported(layer) is not None:
            continue
        state = {"threads": threads, "previous": layer.__dict__.get("forward"), "activations": activations}
        if isinstance(layer, nn.Conv2D):
            state["pads"] = None
            if layer._padding_algorithm in ("EXPLICIT", "VALID"):
                padding = "VALID" if layer._padding_algorithm == "VALID" else layer._updated_padding
                state["pads"], _ = explicit_padding(padding, (0, 0), layer._kernel_size, layer._stride,
                                                    layer._dilation)
            forward, kind = _conv_bf16_forward, "Conv2D"
        else:
            forward, kind = _linear_bf16_forward, "Linear"
        object.__setattr__(layer, BF16_KEY, state)
        object.__setattr__(layer, "forward", forward.__get__(layer, type(layer)))
        counts[kind] = counts.get(kind, 0) + 1
    if activations:  # the answer says so only when the switch took effect: today's records stay as they were
        counts["activations"] = "bf16"
        counts["chain_layers"] = _route_activations(model, threads)
    return counts


def disable_bf16(model) -> int:
    """Undo :func:`enable_bf16`: each layer gets back the forward it had. Returns how many."""
    from . import layers

    count = 0
    for layer in model.sublayers(include_self=True):
        if layer.__dict__.pop(ACT_ROUTED_KEY, None):
            layers.unroute(layer)
        state = layer.__dict__.pop(BF16_KEY, None)
        if state is None:
            continue
        if state["previous"] is not None:
            layer.__dict__["forward"] = state["previous"]
        else:
            layer.__dict__.pop("forward", None)
        count += 1
    return count


def bf16_self_check() -> None:
    """The bf16 conv and linear operators against Paddle's float32 ones on bf16-rounded numbers.

    Raises :class:`~paddle_cnn.accel.build.Unavailable` on a mismatch.
    """
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from .build import Unavailable

    rng = np.random.default_rng(2)

    def rounded(shape):
        return paddle.to_tensor(rng.standard_normal(shape).astype("float32")).astype("bfloat16").astype("float32")

    cases = [("conv2d", (2, 3, 9, 8), (4, 3, 3, 3), 4, dict(stride=[2, 1], padding=[1, 0, 2, 1])),
             ("conv2d", (1, 5, 6, 6), (6, 5, 1, 1), None, dict(stride=[1, 1], padding=0)),
             ("linear", (5, 7), (7, 3), 3, {})]
    for kind, x_shape, w_shape, b_size, kw in cases:
        tensors = [rounded(x_shape), rounded(w_shape)] + ([rounded([b_size])] if b_size else [])
        results = []
        for ours in (True, False):
            xs = [t.clone() for t in tensors]
            for t in xs:
                t.stop_gradient = False
            x, w, *b = xs
            bias = b[0] if b else None
            if kind == "linear":
                y = linear_bf16(x, w, bias) if ours else F.linear(x, w, bias)
            elif ours:
                y = conv2d_bf16(x, w, bias, **kw)
            else:
                y = F.conv2d(x, w, bias, **kw)
            upstream = paddle.to_tensor(np.cos(np.arange(y.size)).reshape(y.shape).astype("float32"))
            upstream = upstream.astype("bfloat16").astype("float32")
            results.append([y, *paddle.grad([y], xs, [upstream])])
        for name, mine, ref in zip(("out", "dx", "dw", "db"), *results):
            a, r = mine.numpy().astype("float64"), ref.numpy().astype("float64")
            error = float(np.abs(a - r).max() / max(np.abs(r).max(), 1e-12))
            if not error <= BF16_RTOL:
                raise Unavailable(f"bf16 self-check failed: {kind} {name} differs from Paddle's float32 by "
                                  f"{error:.2e} (relative) at x{list(x_shape)}")


_BF16_CHECKED: tuple | None = None


def bf16_available() -> tuple:
    """(True, description) if bf16 training can run here, else (False, one line why not). Never raises.

    Needs the CPU's native bf16 (:func:`bf16_supported`), the oneDNN library
    (``accel.available()``) and the bf16 operators' self-check.
    """
    global _BF16_CHECKED
    ok, reason = bf16_supported()
    if not ok:
        return False, reason
    if _BF16_CHECKED is None:
        from . import available

        lib_ok, lib_reason = available()
        if not lib_ok:
            return False, f"the oneDNN operators are not usable: {lib_reason}"
        import paddle

        try:
            with paddle.set_grad_enabled(True), paddle.amp.auto_cast(enable=False):
                bf16_self_check()
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            _BF16_CHECKED = (False, first)
        else:
            _BF16_CHECKED = (True, f"bf16 convolutions and linear layers through oneDNN on {reason}")
    return _BF16_CHECKED
