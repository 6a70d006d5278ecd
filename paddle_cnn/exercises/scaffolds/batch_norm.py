"""Scaffold of exercise batch_norm (batchnorm section): what exercises.scaffold() hands out."""


def my_batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """Batch normalization of X [N, C] (per feature) or [N, C, H, W] (per channel, over N, H and W).

    gamma, beta and the moving statistics are shaped [1, C] or [1, C, 1, 1].
    training=True: normalize with the batch mean and biased variance (divide by m), and return
    moving statistics updated as momentum * moving + (1 - momentum) * batch statistic.
    training=False: normalize with the moving statistics and return them unchanged.
    Returns (gamma * X_hat + beta, moving_mean, moving_var).
    """
    raise NotImplementedError
