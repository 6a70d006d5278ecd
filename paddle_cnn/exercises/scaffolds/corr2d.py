"""Scaffold of exercise corr2d (lenet section): what exercises.scaffold() hands out."""


def my_corr2d(X, K):
    """2-D cross-correlation of X [h, w] with the kernel K [kh, kw]: no padding, stride 1.

    Returns Y [h - kh + 1, w - kw + 1] with Y[i, j] = (X[i:i + kh, j:j + kw] * K).sum().
    Use Paddle operations only, so that gradients reach X and K.
    """
    raise NotImplementedError
