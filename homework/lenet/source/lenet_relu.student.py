class MyLeNetReLU(Layer):
    def __init__(self, num_classes=10, in_channels=1, input_size=28):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, 6, kernel_size=5, padding=2)
        self.pool1 = nn.MaxPool2D(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2D(6, 16, kernel_size=5)
        self.pool2 = nn.MaxPool2D(kernel_size=2, stride=2)
        side = (input_size // 2 - 4) // 2        # 28 -> 28 -> 14 -> 10 -> 5
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.pool2(self.relu(self.conv2(x)))
        x = paddle.flatten(x, start_axis=1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)
