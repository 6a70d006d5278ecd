def my_vgg_block_bn(num_convs, in_channels, out_channels):
    """VGG block with batch normalization between each convolution and its ReLU (sample answer)."""
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2D(in_channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2D(out_channels),
                   nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2D(kernel_size=2, stride=2))
    return nn.Sequential(*layers)
