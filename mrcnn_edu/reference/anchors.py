"""Anchors (lesson 02_anchors): one grid of reference boxes per FPN level.

Shape legend: A anchors per cell (one per aspect ratio), (h, w) = (ceil(H / s), ceil(W / s)) cells
of a level with stride s, (H, W) the input image size.

Conventions, fixed here once:
- aspect ratio = h / w; an anchor of size s has area s**2, so for ratio r it is
  w = s / sqrt(r) wide and h = s * sqrt(r) tall (torchvision's AnchorGenerator, same formula).
- No rounding: torchvision rounds its base anchors to whole pixels; we keep exact areas and
  ratios so that the numbers in the lesson are the numbers in the formula.
- Cell (i, j) of a level with stride s puts its anchors' centre at (x, y) = (j * s, i * s):
  torchvision's grid, offset 0 (not the cell's pixel centre j * s + s / 2).
- Location-major order: the A anchors of cell (0, 0), then of cell (0, 1), ... row by row, which
  is the order of a (h, w, A) RPN output flattened.

numpy in, numpy out (float64). The torch twin is `mrcnn_edu.ops.anchors`.
"""
import math

import numpy as np


def check_anchor_config(image_size, strides, sizes, aspect_ratios):
    """ValueError unless image_size is (H, W) and there is one size per stride."""
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}")
    if len(strides) != len(sizes):
        raise ValueError(f"need one size per stride, got {len(strides)} strides and {len(sizes)} sizes")
    if len(aspect_ratios) == 0:
        raise ValueError("aspect_ratios must not be empty")


def grid_shape(image_size, stride):
    """(ceil(H / s), ceil(W / s)): the cells of a level, as a stride-s conv with padding gives."""
    height, width = image_size
    return math.ceil(height / stride), math.ceil(width / stride)


def base_anchors(size, aspect_ratios):
    """The A anchors of one cell centred on (0, 0): (A, 4) float64, unrounded.

    For ratio r = h / w: h_ratio = sqrt(r), w_ratio = 1 / h_ratio, w = w_ratio * size,
    h = h_ratio * size, so w * h = size**2 and h / w = r.
    """
    h_ratios = np.sqrt(np.asarray(aspect_ratios, dtype=np.float64))  # (A,)
    ws, hs = size / h_ratios, size * h_ratios  # (A,), (A,)
    return np.stack([-ws, -hs, ws, hs], axis=1) / 2  # (A, 4)


def generate_anchors(image_size, strides=(4, 8, 16, 32, 64), sizes=(32, 64, 128, 256, 512),
                     aspect_ratios=(0.5, 1.0, 2.0)):
    """Anchors of every level for an image of size (H, W).

    Level l has stride strides[l] and anchor size sizes[l] (area sizes[l]**2), with one anchor
    per aspect ratio (h / w) in every cell. Returns a list with one (ceil(H/s) * ceil(W/s) * A, 4)
    float64 array per level, location-major (all A anchors of a cell together, cells row by row),
    centres at (j * s, i * s), no rounding (see the module docstring).
    For 1024 x 1024 and the defaults: 196608 + 49152 + 12288 + 3072 + 768 = 261888 anchors.
    """
    check_anchor_config(image_size, strides, sizes, aspect_ratios)
    levels = []
    for stride, size in zip(strides, sizes):  # a loop over the ~5 levels
        rows, cols = grid_shape(image_size, stride)
        ys = np.arange(rows, dtype=np.float64) * stride  # (h,)
        xs = np.arange(cols, dtype=np.float64) * stride  # (w,)
        shift_y, shift_x = np.meshgrid(ys, xs, indexing="ij")  # (h, w), (h, w)
        shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)  # (h*w, 1, 4)
        cell = base_anchors(size, aspect_ratios)[None]  # (1, A, 4)
        levels.append((shifts + cell).reshape(-1, 4))  # (h*w*A, 4) location-major
    return levels
