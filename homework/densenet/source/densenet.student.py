def my_dense_bottleneck(in_channels, growth_rate):
    """DenseNet-B's conv block: BN, ReLU, 1x1 conv to 4k channels, BN, ReLU, 3x3 conv to k channels (sample answer)."""
    width = 4 * growth_rate
    return nn.Sequential(
        nn.BatchNorm2D(in_channels), nn.ReLU(), nn.Conv2D(in_channels, width, kernel_size=1),
        nn.BatchNorm2D(width), nn.ReLU(), nn.Conv2D(width, growth_rate, kernel_size=3, padding=1))
