"""Our from-scratch BatchNorm against Paddle's nn.BatchNorm1D / nn.BatchNorm2D.

Same input, same gamma and beta: outputs, gradients (w.r.t. input, gamma and
beta) and moving statistics must agree in training mode, and outputs and
gradients in eval mode after the moving statistics have been updated.
"""
import paddle_cnn  # noqa: F401  (first: CPU tuning must precede ``import paddle``)

import numpy as np
import paddle
import pytest
from paddle import nn

from paddle_cnn.models.batchnorm import BatchNorm, batch_norm

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track:UserWarning")
TOL = dict(rtol=1e-5, atol=1e-5)
CASES = [  # (num_dims, Paddle's layer, input shape)
    (4, nn.BatchNorm2D, [8, 3, 5, 5]),
    (2, nn.BatchNorm1D, [16, 6]),
]


def _pair(num_dims, paddle_layer, channels, seed=0):
    """Our layer and Paddle's, with the same (non-trivial) gamma and beta."""
    rng = np.random.RandomState(seed)
    gamma = rng.uniform(0.5, 2.0, channels).astype("float32")
    beta = rng.normal(size=channels).astype("float32")
    ours, ref = BatchNorm(channels, num_dims), paddle_layer(channels)
    ours.gamma.set_value(gamma.reshape(ours.gamma.shape))
    ours.beta.set_value(beta.reshape(ours.beta.shape))
    ref.weight.set_value(gamma)
    ref.bias.set_value(beta)
    return ours, ref


def _run(layer, x_np, upstream, gamma, beta):
    """Output and gradients w.r.t. input, gamma and beta for loss = sum(upstream * y)."""
    x = paddle.to_tensor(x_np, stop_gradient=False)
    y = layer(x)
    (y * paddle.to_tensor(upstream)).sum().backward()
    grads = [x.grad.numpy(), gamma.grad.numpy().ravel(), beta.grad.numpy().ravel()]
    gamma.clear_gradient()
    beta.clear_gradient()
    return [y.numpy()] + grads


def _batch(shape, step):
    rng = np.random.RandomState(100 + step)
    # Shifted and scaled per step, so the moving statistics have something to track.
    x = (rng.normal(size=shape) * (1.5 + step) + step).astype("float32")
    return x, rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("num_dims, paddle_layer, shape", CASES)
def test_matches_paddle_in_train_and_eval_mode(num_dims, paddle_layer, shape):
    channels = shape[1]
    ours, ref = _pair(num_dims, paddle_layer, channels)
    ours.train()
    ref.train()
    for step in range(3):
        x, upstream = _batch(shape, step)
        got = _run(ours, x, upstream, ours.gamma, ours.beta)
        want = _run(ref, x, upstream, ref.weight, ref.bias)
        for label, a, b in zip(("output", "d input", "d gamma", "d beta"), got, want):
            np.testing.assert_allclose(a, b, **TOL, err_msg=f"train step {step}: {label}")
        np.testing.assert_allclose(ours.moving_mean.numpy().ravel(), ref._mean.numpy(), **TOL,
                                   err_msg=f"moving mean after step {step}")
        np.testing.assert_allclose(ours.moving_var.numpy().ravel(), ref._variance.numpy(), **TOL,
                                   err_msg=f"moving variance after step {step}")

    ours.eval()
    ref.eval()
    x, upstream = _batch(shape, 7)
    got = _run(ours, x, upstream, ours.gamma, ours.beta)
    want = _run(ref, x, upstream, ref.weight, ref.bias)
    for label, a, b in zip(("output", "d input", "d gamma", "d beta"), got, want):
        np.testing.assert_allclose(a, b, **TOL, err_msg=f"eval mode: {label}")
    # Eval mode leaves the moving statistics alone.
    np.testing.assert_allclose(ours.moving_mean.numpy().ravel(), ref._mean.numpy(), **TOL)


def test_moving_statistics_use_paddle_momentum_and_biased_variance():
    x = np.arange(8, dtype="float32").reshape(4, 2) ** 2  # columns: 0, 4, 16, 36 and 1, 9, 25, 49
    layer = BatchNorm(2, num_dims=2)
    layer(paddle.to_tensor(x))
    mean, var = x.mean(0), x.var(0)  # var with ddof=0: Paddle's running variance is biased
    np.testing.assert_allclose(layer.moving_mean.numpy().ravel(), 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(layer.moving_var.numpy().ravel(), 0.9 * 1.0 + 0.1 * var, rtol=1e-6)


def test_buffers_are_saved_but_not_trained():
    layer = BatchNorm(3, num_dims=4)
    assert {"moving_mean", "moving_var", "gamma", "beta"} <= set(layer.state_dict())
    assert sorted(p.name for p in layer.parameters()) == sorted([layer.gamma.name, layer.beta.name])
    layer(paddle.randn([2, 3, 4, 4]))
    moving_mean = layer.state_dict()["moving_mean"]
    assert not np.allclose(moving_mean.numpy(), 0)  # updated in place, state_dict sees it


def test_function_rejects_other_ranks():
    with pytest.raises(ValueError, match=r"\[N, C\] or \[N, C, H, W\]"):
        batch_norm(paddle.zeros([2, 3, 4]), 1.0, 0.0, 0.0, 1.0, 1e-5, 0.9, True)
    with pytest.raises(ValueError, match="num_dims"):
        BatchNorm(3, num_dims=3)
