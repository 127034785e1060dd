"""Solution of lesson 02's "your turn": the anchors of one FPN level."""
import math

import numpy as np


def level_anchors(image_size, stride, size, aspect_ratios=(0.5, 1.0, 2.0)):
    """(ceil(H / stride) * ceil(W / stride) * A, 4) anchors, all A anchors of a cell together."""
    height, width = image_size
    rows, cols = math.ceil(height / stride), math.ceil(width / stride)
    ratios = np.asarray(aspect_ratios, dtype=np.float64)  # (A,) h / w
    ws, hs = size / np.sqrt(ratios), size * np.sqrt(ratios)  # (A,) area size**2, h / w = ratio
    cell = np.stack([-ws, -hs, ws, hs], axis=1) / 2  # (A, 4) centred on (0, 0)
    ys, xs = np.arange(rows) * stride, np.arange(cols) * stride  # cell centres at (j s, i s)
    cy, cx = np.meshgrid(ys, xs, indexing="ij")  # (rows, cols) each, row by row
    centres = np.stack([cx, cy, cx, cy], axis=-1).reshape(-1, 1, 4)  # (rows * cols, 1, 4)
    return (centres + cell[None]).reshape(-1, 4).astype(np.float64)  # (rows * cols * A, 4)
