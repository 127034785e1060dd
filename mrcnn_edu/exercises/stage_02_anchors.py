"""Lesson 02's "your turn": `level_anchors`, the anchors of one FPN level.

Shape legend: A anchors per cell (one per aspect ratio), (h, w) = (ceil(H / s), ceil(W / s))
cells of the level with stride s. `reference.generate_anchors` makes every level at once; this
exercise is one level, so its reference is the exact wrapper `generate_anchors(image_size,
(stride,), (size,), aspect_ratios)[0]`. Conventions (README): ratio = h / w, w = s / sqrt(r),
h = s * sqrt(r), no rounding, centres at (j * s, i * s), all A anchors of a cell together.
"""
import math

import numpy as np

from mrcnn_edu import reference
from .core import Case, Exercise, Mutant
from .solutions import stage_02_anchors as solutions


def level_anchors(image_size, stride, size, aspect_ratios=(0.5, 1.0, 2.0)):
    """The reference for one level: exactly `reference.generate_anchors` of that level."""
    return reference.generate_anchors(image_size, (stride,), (size,), aspect_ratios)[0]


def level_anchors_cases():
    return [
        Case("lesson 02: one cell, size 32, ratios 0.5, 1, 2", "hand", ((1, 1), 4, 32, (0.5, 1.0, 2.0))),
        Case("lesson 02: 8 x 8 image, stride 4, ratio 1", "hand", ((8, 8), 4, 32, (1.0,))),
        Case("wide image, 2 x 3 cells, three ratios", "edge", ((8, 12), 4, 16, (0.5, 1.0, 2.0))),
        Case("size not a multiple of the stride: ceil cells", "edge", ((30, 45), 8, 32, (0.5, 1.0, 2.0))),
        Case("tall and wide ratios 0.25 and 4", "edge", ((16, 16), 8, 64, (0.25, 4.0))),
        Case("one row of cells", "edge", ((4, 20), 4, 8, (1.0, 2.0))),
        Case("P4 of a 600 x 904 image", "random", ((600, 904), 16, 128, (0.5, 1.0, 2.0))),
        Case("P2 of a 256 x 320 image", "random", ((256, 320), 4, 32, (0.5, 1.0, 2.0))),
        Case("P6 of a 800 x 1216 image", "random", ((800, 1216), 64, 512, (0.5, 1.0, 2.0))),
    ]


# ---------------------------------------------------------------- mutants: classic slips

def anchors_from(image_size, stride, size, aspect_ratios, *, swap_hw=False, offset=0.0,
                 rounded=False, grid=math.ceil, ratio_major=False, column_major=False):
    """A level_anchors with one knob per slip; all knobs off is the right answer."""
    rows, cols = grid(image_size[0] / stride), grid(image_size[1] / stride)
    r = np.sqrt(np.asarray(aspect_ratios, dtype=np.float64))
    ws, hs = (size * r, size / r) if swap_hw else (size / r, size * r)
    cell = np.stack([-ws, -hs, ws, hs], axis=1) / 2  # (A, 4)
    if rounded:
        cell = cell.round()  # torchvision's AnchorGenerator rounds its base anchors
    ys, xs = (np.arange(rows) + offset) * stride, (np.arange(cols) + offset) * stride
    cy, cx = np.meshgrid(ys, xs, indexing="ij")  # (rows, cols)
    if column_major:
        cy, cx = cy.T, cx.T
    centres = np.stack([cx, cy, cx, cy], axis=-1).reshape(-1, 1, 4)  # (cells, 1, 4)
    out = centres + cell[None]  # (cells, A, 4)
    if ratio_major:
        out = out.transpose(1, 0, 2)  # (A, cells, 4): all cells for one ratio, then the next
    return out.reshape(-1, 4)


def knob(**kw):
    return lambda image_size, stride, size, aspect_ratios=(0.5, 1.0, 2.0): anchors_from(
        image_size, stride, size, aspect_ratios, **kw)


LEVEL_ANCHORS = Exercise(
    name="level_anchors",
    lesson=2,
    contract='''level_anchors(image_size, stride, size, aspect_ratios=(0.5, 1.0, 2.0)) -> anchors

    The anchors of one FPN level. image_size (H, W); the level has ceil(H / stride) x
    ceil(W / stride) cells; cell (i, j) is centred at (x, y) = (j * stride, i * stride).
    Each cell has one anchor per aspect ratio r = h / w, of area size**2:
    w = size / sqrt(r), h = size * sqrt(r), not rounded.
    Returns anchors (cells * A, 4) float64 (x1, y1, x2, y2): the A anchors of cell (0, 0) in the
    order of aspect_ratios, then those of cell (0, 1), ... row by row.''',
    reference=level_anchors,
    cases=level_anchors_cases,
    hints=(
        "Build the A anchors of one cell centred on (0, 0) first, then add the centre of every "
        "cell. np.meshgrid(ys, xs, indexing='ij') gives the centres row by row; shapes "
        "(cells, 1, 4) + (1, A, 4) broadcast to (cells, A, 4), which keeps a cell's anchors together.",
        "w = size / sqrt(r), h = size * sqrt(r); one cell: (-w/2, -h/2, w/2, h/2); "
        "centres x = j * stride for j in range(ceil(W / stride)), y = i * stride for "
        "i in range(ceil(H / stride)); anchors = centre (x, y, x, y) + cell, reshaped to (-1, 4).",
    ),
    solution=solutions.level_anchors,
    mutants=(
        Mutant("hw_swapped", "your anchors swap h/w in the ratio: the ratio is h / w, so "
               "w = size / sqrt(r) and h = size * sqrt(r)", knob(swap_hw=True)),
        Mutant("rounded", "your anchors are rounded to whole pixels (torchvision's "
               "AnchorGenerator does .round()); here they are exact", knob(rounded=True)),
        Mutant("centre_offset_half", "your centres are at ((j + 0.5) * stride, (i + 0.5) * stride); "
               "the convention (torchvision's) is (j * stride, i * stride)", knob(offset=0.5)),
        Mutant("floor_cells", "your grid has floor(H / stride) cells; it needs ceil(H / stride), "
               "as a stride-s convolution with padding gives", knob(grid=math.floor)),
        Mutant("ratio_major", "your anchors are ordered ratio by ratio (all cells of one ratio, "
               "then the next); the A anchors of a cell must be together", knob(ratio_major=True)),
        Mutant("column_major", "your cells go column by column; they go row by row "
               "(meshgrid(ys, xs, indexing='ij'))", knob(column_major=True)),
    ),
)

EXERCISES = (LEVEL_ANCHORS,)
