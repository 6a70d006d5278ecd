class MyPreActResidual(Layer):
    def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2D(in_channels)
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2D(out_channels)
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1)
        self.conv3 = nn.Conv2D(in_channels, out_channels, 1, stride=stride) if use_1x1conv else None
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv1(self.relu(self.bn1(x)))
        y = self.conv2(self.relu(self.bn2(y)))
        shortcut = x if self.conv3 is None else self.conv3(x)
        return y + shortcut
