"""Scaffold of exercise densebox_targets (densebox section): what exercises.scaffold() hands out."""


def my_densebox_targets(boxes, labels, counts, canvas, stride=4):
    """DenseBox training targets, float32 NumPy array [n, 7, G, G] with G = canvas // stride.

    boxes [n, K, 4] (x1, y1, x2, y2 in pixels), labels [n, K], counts [n]: rows j < counts[i] are real.
    Cell (row r, column c) has its centre at ((c + 0.5) * stride, (r + 0.5) * stride). For a box with
    centre (bx, by) and size s = sqrt(w * h), a cell is positive when its centre lies within 0.3 * s of
    (bx, by), and always for the cell holding the box centre (column bx // stride, row by // stride).
    A cell several boxes claim belongs to the one with the nearest centre (the first on a tie).
    Channels: 0 confidence (1 on positive cells, else 0); 1 valid (0 on cells within
    0.3 * s + 2 * stride of a centre that are not positive, else 1); 2-5 the distances
    (cx - x1, cy - y1, x2 - cx, y2 - cy) / 16 from the cell centre to the owning box's sides on
    positive cells, else 0; 6 the owning box's label on positive cells, else -1.
    """
    raise NotImplementedError
