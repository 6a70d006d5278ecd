"""An exponential moving average of a model's weights (``TrainConfig.ema``).

After every optimizer step each averaged tensor moves a little towards the
model's: ``avg <- d * avg + (1 - d) * w``. The average smooths out the last
steps' noise, so it often scores better than the weights the optimizer ended
on; evaluation swaps it in, and training never sees it. Batch-norm running
statistics are averaged with the weights, so that the averaged network is
evaluated with statistics of (roughly) its own weights.

Early on the average would be dominated by the random initial weights; as in
TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` the decay starts at
``(1 + t) / (10 + t)`` and grows to ``decay``.

>>> import paddle
>>> layer = paddle.nn.Linear(2, 1)
>>> avg = WeightAverage(layer, decay=0.5)
>>> _ = layer.weight.set_value(layer.weight + 1.0)
>>> avg.update(layer)                       # t = 1: d = min(0.5, 2 / 11)
>>> with avg.applied(layer):
...     moved = float((layer.weight - avg.backup["weight"]).abs().max())
>>> round(moved, 4)                         # the average lags the new weights by d = 2/11
0.1818
"""
from __future__ import annotations

import contextlib

import paddle


def _float_state(model):
    """(name, tensor) of every floating-point parameter and buffer (BN statistics; not counters)."""
    named = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b is not None]
    return [(n, t) for n, t in named if t.dtype in (paddle.float32, paddle.float64, paddle.float16, paddle.bfloat16)]


class WeightAverage:
    """Averaged copies of ``model``'s floating-point parameters and buffers, updated with :meth:`update`."""

    def __init__(self, model, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"ema decay must lie between 0 and 1 (e.g. 0.999), got {decay}")
        self.decay, self.updates = decay, 0
        self.shadow = {name: t.detach().clone() for name, t in _float_state(model)}
        self.backup = None

    @paddle.no_grad()
    def update(self, model) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, t in _float_state(model):
            s = self.shadow[name]
            paddle.assign(s * d + t.detach().astype(s.dtype) * (1 - d), output=s)

    @contextlib.contextmanager
    def applied(self, model):
        """Inside the block ``model`` holds the averaged weights; the trained ones come back after it."""
        state = _float_state(model)
        self.backup = {name: t.detach().clone() for name, t in state}
        with paddle.no_grad():
            for name, t in state:
                paddle.assign(self.shadow[name], output=t)
        try:
            yield model
        finally:
            with paddle.no_grad():
                for name, t in state:
                    paddle.assign(self.backup[name], output=t)

    @paddle.no_grad()
    def copy_to(self, model) -> None:
        """Leave the averaged weights in ``model`` for good (the end of training)."""
        for name, t in _float_state(model):
            paddle.assign(self.shadow[name], output=t)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": dict(self.shadow)}

    def set_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise ValueError(f"the saved weight average lacks {sorted(missing)[:3]}")
        self.updates = int(state["updates"])
        for name, value in state["shadow"].items():
            if name in self.shadow:
                value = value if isinstance(value, paddle.Tensor) else paddle.to_tensor(value)
                paddle.assign(value.astype(self.shadow[name].dtype), output=self.shadow[name])
