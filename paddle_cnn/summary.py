"""Layer tables, parameter counts and FLOPs: the numbers the course asks students to check by hand.

``layer_summary`` prints the table the course builds by feeding a dummy batch
through ``net`` layer by layer ("Conv2D output shape: [1, 96, 54, 54]"), but
with hooks, so it works for any model, including ones whose ``forward`` is
not a plain chain (Inception, Residual, DenseBlock).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np
import paddle
from paddle import nn

from .runtime import evaluating


def count_params(model: nn.Layer, trainable_only: bool = False) -> int:
    """Number of scalars in ``model.parameters()``.

    Paddle stores ``nn.BatchNorm*D``'s moving mean and variance as
    non-trainable parameters, so they count here unless ``trainable_only``;
    buffers (such as the from-scratch BatchNorm's moving statistics) never do.
    This matches the "Total params" / "Trainable params" of ``paddle.summary``.
    """
    return sum(int(np.prod(p.shape)) for p in model.parameters()
               if not (trainable_only and p.stop_gradient))


def _batch_shape(input_shape: Sequence[int]) -> List[int]:
    shape = [int(s) for s in input_shape]
    if len(shape) == 3:  # [C, H, W]: one example
        shape = [1] + shape
    return shape


def _run(model: nn.Layer, input_shape: Sequence[int], hooks: Dict[nn.Layer, Callable]) -> None:
    """One forward pass on zeros with ``hooks`` attached, in eval mode and without gradients.

    Eval mode keeps dropout off and batch norm's moving statistics untouched;
    the model's own mode is restored afterwards.
    """
    handles = [layer.register_forward_post_hook(hook) for layer, hook in hooks.items()]
    try:
        with evaluating(model), paddle.no_grad():
            model(paddle.zeros(_batch_shape(input_shape)))
    finally:
        for handle in handles:
            handle.remove()


def _shape(output) -> list:
    if isinstance(output, (list, tuple)):
        return [_shape(o) for o in output]
    return [int(s) for s in output.shape]


def layer_summary(model: nn.Layer, input_shape: Sequence[int], print_fn: Callable | None = print,
                  depth: int | None = None) -> List[dict]:
    """Run one forward pass and list each layer's output shape and parameter count.

    ``input_shape`` is ``[C, H, W]`` (batch of one) or ``[N, C, H, W]``. With
    ``depth=None`` every leaf layer (one without sub-layers) is listed; with
    ``depth=k`` the layers ``k`` levels below ``model`` are listed as units
    (e.g. GoogLeNet's stages with ``depth=2``), plus any leaf above that
    level. Layers appear in the order they ran; a layer that runs twice is
    listed twice. Returns the rows as dicts with keys ``name`` (dotted path),
    ``type``, ``output_shape`` (with the batch dimension) and ``params``
    (scalars in the listed layer, including its sub-layers).

    >>> from paddle_cnn.models import get_model
    >>> rows = layer_summary(get_model("alexnet"), [1, 224, 224], print_fn=None)
    >>> rows[0]["type"], rows[0]["output_shape"]
    ('Conv2D', [1, 96, 54, 54])
    """
    rows: List[dict] = []

    def record(name: str) -> Callable:
        def hook(layer, inputs, output):
            rows.append(dict(name=name, type=type(layer).__name__, output_shape=_shape(output),
                             params=count_params(layer)))
        return hook

    hooks = {}
    for name, layer in model.named_sublayers():
        level = name.count(".") + 1
        is_leaf = not layer.sublayers()
        if (depth is None and is_leaf) or (depth is not None and (level == depth or (level < depth and is_leaf))):
            hooks[layer] = record(name)
    _run(model, input_shape, hooks)

    if print_fn is not None:
        width = max([len(r["name"]) + len(r["type"]) + 3 for r in rows] + [24])
        print_fn(f"{'Layer (type)':<{width}}  {'Output shape':<22}  {'Params':>12}")
        print_fn("-" * (width + 38))
        for r in rows:
            print_fn(f"{r['name'] + ' (' + r['type'] + ')':<{width}}  {str(r['output_shape']):<22}  {r['params']:>12,}")
        print_fn("-" * (width + 38))
        print_fn(f"Total params: {count_params(model):,}  (trainable: {count_params(model, True):,})")
    return rows


def _conv_macs(layer: nn.Conv2D, output) -> int:
    # Every output element is a dot product over (in_channels / groups) * kh * kw inputs.
    kh, kw = layer._kernel_size
    return int(np.prod(output.shape)) * (layer._in_channels // layer._groups) * kh * kw


def _conv_transpose_macs(layer: nn.Conv2DTranspose, inputs) -> int:
    # The mirror image: every input element is scattered into (out_channels / groups) * kh * kw outputs.
    kh, kw = layer._kernel_size
    return int(np.prod(inputs[0].shape)) * (layer._out_channels // layer._groups) * kh * kw


def _linear_macs(layer: nn.Linear, output) -> int:
    in_features = layer.weight.shape[0]  # Paddle stores Linear weights as [in, out]
    return int(np.prod(output.shape)) * in_features


def count_flops(model: nn.Layer, input_shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass, counted as 2 x multiply-accumulates.

    Only ``nn.Conv2D``, ``nn.Conv2DTranspose`` and ``nn.Linear`` are counted (they are >99% of the
    work in these networks); bias additions, activations, pooling, batch norm
    and concatenations are not. A Conv2D with ``C_in`` inputs, groups ``g``,
    a ``k_h x k_w`` kernel and output ``[N, C_out, H_out, W_out]`` does
    ``N * C_out * H_out * W_out * (C_in / g) * k_h * k_w`` MACs; a Linear
    with ``in_features`` inputs and output ``[N, out_features]`` does
    ``N * out_features * in_features``; a transposed convolution does
    ``N * C_in * H_in * W_in * (C_out / g) * k_h * k_w``. ``input_shape`` is ``[C, H, W]``
    (FLOPs per example) or ``[N, C, H, W]`` (for the whole batch). A training
    step costs about three times this (forward, and twice for backward).

    >>> count_flops(nn.Conv2D(1, 6, 5, padding=2), [1, 28, 28])  # 2 * 6*28*28 * 1*5*5
    235200
    """
    macs = [0]

    def conv_hook(layer, inputs, output):
        macs[0] += _conv_macs(layer, output)

    def linear_hook(layer, inputs, output):
        macs[0] += _linear_macs(layer, output)

    def conv_transpose_hook(layer, inputs, output):
        macs[0] += _conv_transpose_macs(layer, inputs)

    hooks = {}
    for layer in [model] + list(model.sublayers()):
        if isinstance(layer, nn.Conv2D):
            hooks[layer] = conv_hook
        elif isinstance(layer, nn.Conv2DTranspose):
            hooks[layer] = conv_transpose_hook
        elif isinstance(layer, nn.Linear):
            hooks[layer] = linear_hook
    _run(model, input_shape, hooks)
    return 2 * macs[0]
