"""Scaffold of exercise densebox_boxes (densebox section): what exercises.scaffold() hands out."""


def my_densebox_boxes(targets, stride=4):
    """Decode DenseBox targets back into boxes: the inverse of the section's target encoding.

    targets is a float32 NumPy array [n, 7, G, G] (channels: 0 confidence, 1 valid, 2-5 distances
    (cx - x1, cy - y1, x2 - cx, y2 - cy) / 16, 6 label). Cell (row r, column c) has its centre at
    cx = (c + 0.5) * stride, cy = (r + 0.5) * stride. Every positive cell (channel 0 == 1) decodes to
    the box (cx - 16 * d0, cy - 16 * d1, cx + 16 * d2, cy + 16 * d3), rounded to whole pixels, with the
    label in channel 6. Keep each distinct (box, label) once, sorted by x1, then y1, then x2, then y2.
    Returns (boxes [n, K, 4] float32, labels [n, K] int64, counts [n] int64), K the largest count;
    rows j >= counts[i] are padding: zero boxes, label -1.
    """
    raise NotImplementedError
