class MyInception3x3(Layer):
    def __init__(self, in_channels, c1, c2, c3, c4):
        super().__init__()
        self.p1 = nn.Conv2D(in_channels, c1, 1)
        self.p2_1 = nn.Conv2D(in_channels, c2[0], 1)
        self.p2_2 = nn.Conv2D(c2[0], c2[1], 3, padding=1)
        self.p3_1 = nn.Conv2D(in_channels, c3[0], 1)
        self.p3_2 = nn.Conv2D(c3[0], c3[1], 3, padding=1)
        self.p3_3 = nn.Conv2D(c3[1], c3[1], 3, padding=1)
        self.p4_1 = nn.MaxPool2D(3, stride=1, padding=1)
        self.p4_2 = nn.Conv2D(in_channels, c4, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        r = self.relu
        y1 = r(self.p1(x))
        y2 = r(self.p2_2(r(self.p2_1(x))))
        y3 = r(self.p3_3(r(self.p3_2(r(self.p3_1(x))))))
        y4 = r(self.p4_2(self.p4_1(x)))
        return paddle.concat([y1, y2, y3, y4], axis=1)
