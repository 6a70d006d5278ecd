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


def build_model(cfg: TrainConfig) -> nn.Layer:
    """The registered model for ``cfg``, seeded and initialised as ``cfg.init`` says.

    Training needs the weights about four times (weights, gradients, two
    optimizer slots); a model whose parameters alone cannot fit that way in
    this machine's memory is refused before initialisation touches them.
    """
    spec = get_spec(cfg.model)
    runtime.seed_everything(cfg.seed)
    kwargs = dict(cfg.model_args)
    kwargs.setdefault("input_size", cfg.resize)
    try:
        model = spec.constructor(**kwargs)
        need = 4 * 4 * sum(int(np.prod(p.shape)) for p in model.parameters())
        total = runtime.memory_bytes()
        if total and need > total:
            raise _too_big(cfg, f"{need / 2**30:.0f} GiB for weights, gradients and optimizer state; "
                                f"this machine has {total / 2**30:.0f} GiB")
        return init_weights(model, cfg.init)
    except MemoryError:
        raise _too_big(cfg, "the allocation of its weights failed") from None
    except TypeError as e:  # an unknown model argument from --set model_args.KEY=...
        if "argument" in str(e):
            known = [n for n in inspect.signature(spec.constructor).parameters if n != "input_size"]
            raise ValueError(f"{cfg.model} does not take that model argument ({e}); "
                             f"its arguments are {', '.join(known)}") from None
        raise
