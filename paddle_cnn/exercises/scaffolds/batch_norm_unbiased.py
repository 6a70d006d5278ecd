"""Scaffold of exercise batch_norm_unbiased (batchnorm section): what exercises.scaffold() hands out."""


def my_batch_norm_unbiased(X, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """Batch normalization whose moving variance tracks the unbiased batch variance (as PyTorch's does).

    X is [N, C] (per feature) or [N, C, H, W] (per channel, over N, H and W); gamma, beta and the
    moving statistics are shaped [1, C] or [1, C, 1, 1]. Let m be the number of values per channel.
    training=True: normalize with the batch mean and the biased variance (divide by m), and return
    moving_mean = momentum * moving_mean + (1 - momentum) * mean and
    moving_var = momentum * moving_var + (1 - momentum) * var * m / (m - 1) (the unbiased variance);
    no gradient flows into the moving statistics.
    training=False: normalize with the moving statistics and return them unchanged.
    Returns (gamma * X_hat + beta, moving_mean, moving_var).
    """
    raise NotImplementedError
