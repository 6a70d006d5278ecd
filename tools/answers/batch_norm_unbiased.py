"""Sample answer of exercise batch_norm_unbiased: what tools/execute_notebooks.py puts in the exercise cell of the executed copy."""
import paddle


def my_batch_norm_unbiased(X, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """Batch normalization whose moving variance tracks the unbiased batch variance (sample answer)."""
    if not training:
        X_hat = (X - moving_mean) / paddle.sqrt(moving_var + eps)
        return gamma * X_hat + beta, moving_mean, moving_var
    axes = [0] if X.ndim == 2 else [0, 2, 3]
    m = X.size // X.shape[1]                        # values per channel
    mean = X.mean(axis=axes, keepdim=True)
    var = ((X - mean) ** 2).mean(axis=axes, keepdim=True)
    X_hat = (X - mean) / paddle.sqrt(var + eps)
    new_mean = momentum * moving_mean + (1 - momentum) * mean.detach()
    new_var = momentum * moving_var + (1 - momentum) * var.detach() * m / (m - 1)
    return gamma * X_hat + beta, new_mean, new_var
