"""Building a registered model for a :class:`~paddle_cnn.config.TrainConfig`: construction, memory check,
initialisation.

``build_model(cfg)`` is what the trainer, the benchmarks, the exporter and the
notebooks call; it reads the registry and the config, never the training loop.
"""
from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING

import numpy as np
import paddle
from paddle import nn

from .. import runtime
from .registry import get_spec

if TYPE_CHECKING:  # config sits on a higher floor; only its type is named here
    from ..config import TrainConfig


def init_weights(model: nn.Layer, kind: str = "xavier") -> nn.Layer:
    """Xavier-uniform for every Conv2D/Linear weight and zero biases (``default`` keeps Paddle's).

    Unlike d2l's Paddle code, which creates an initializer and never applies it,
    this really overwrites the weights; values come from Paddle's seeded RNG.
    """
    if kind == "default":
        return model
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose, nn.Linear)):
            w = layer.weight
            if isinstance(layer, nn.Linear):          # Paddle stores Linear weights as [in, out]
                fan_in, fan_out = w.shape
            else:                                      # [out, in, kh, kw] (transposed: [in, out, kh, kw])
                receptive = int(np.prod(w.shape[2:]))
                fan_out, fan_in = w.shape[0] * receptive, w.shape[1] * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w.set_value(paddle.uniform(w.shape, dtype=w.dtype, min=-bound, max=bound))
            if layer.bias is not None:
                layer.bias.set_value(paddle.zeros(layer.bias.shape, dtype=layer.bias.dtype))
    return model


def _too_big(cfg: TrainConfig, detail: str) -> ValueError:
    spec = get_spec(cfg.model)
    return ValueError(f"{cfg.model} at --resize {cfg.resize} does not fit in memory ({detail}); "
                      f"use a smaller --resize (its profiles use {spec.profiles['cpu'].get('resize')} on the CPU)")


def _declared(spec, kwargs) -> nn.Layer:
    """The model ``spec.constructor(**kwargs)`` builds, with no parameter allocated or initialised
    (``paddle.LazyGuard``) and its parameter names drawn apart from the process's own counter."""
    from paddle.utils import unique_name

    with unique_name.guard(), paddle.LazyGuard():
        return spec.constructor(**kwargs)


def declared_shapes(cfg: TrainConfig) -> dict:
    """{state_dict name: shape} of the model :func:`build_model` would build for ``cfg``, without
    allocating it: what a checkpoint's weights are checked against before anything is built."""
    kwargs = dict(cfg.model_args)
    kwargs.setdefault("input_size", cfg.resize)
    return {name: [int(d) for d in value.shape]
            for name, value in _declared(get_spec(cfg.model), kwargs).state_dict().items()}


def build_model(cfg: TrainConfig) -> nn.Layer:
    """The registered model for ``cfg``, seeded and initialised as ``cfg.init`` says.

    Training needs the weights about four times (weights, gradients, two
    optimizer slots); a model whose parameters alone cannot fit that way in
    this machine's memory is refused before they are allocated (its sizes come
    from a construction that allocates nothing, so ``--set`` channel counts of
    a billion parameters are one line, not minutes of swapping).
    """
    spec = get_spec(cfg.model)
    kwargs = dict(cfg.model_args)
    kwargs.setdefault("input_size", cfg.resize)
    try:
        need = 4 * 4 * sum(int(np.prod(p.shape)) for p in _declared(spec, kwargs).parameters())
        total = runtime.memory_bytes()
        if total and need > total:
            raise _too_big(cfg, f"{need / 2**30:.0f} GiB for weights, gradients and optimizer state; "
                                f"this machine has {total / 2**30:.0f} GiB")
        runtime.seed_everything(cfg.seed)
        model = spec.constructor(**kwargs)
        return init_weights(model, cfg.init)
    except MemoryError:
        raise _too_big(cfg, "the allocation of its weights failed") from None
    except TypeError as e:  # an unknown model argument from --set model_args.KEY=...
        if "argument" in str(e):
            known = [n for n in inspect.signature(spec.constructor).parameters if n != "input_size"]
            raise ValueError(f"{cfg.model} does not take that model argument ({e}); "
                             f"its arguments are {', '.join(known)}") from None
        raise
