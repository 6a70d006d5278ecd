def my_nin_block_bn(in_channels, out_channels, kernel, stride, padding):
    """NiN block with batch normalization between each convolution and its ReLU (sample answer)."""
    layers = []
    for k, (size, s, p) in enumerate([(kernel, stride, padding), (1, 1, 0), (1, 1, 0)]):
        layers.append(nn.Conv2D(in_channels if k == 0 else out_channels, out_channels, size, stride=s, padding=p))
        layers.append(nn.BatchNorm2D(out_channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)
