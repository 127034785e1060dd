"""Lesson 03's "your turn": `encode_boxes` and `decode_boxes`, torchvision's BoxCoder.

Shape legend: N anchors paired one-to-one with N targets (or N rows of deltas); C boxes per row
when a head predicts one box per class (deltas (N, 4 * C)).
    w = x2 - x1, cx = x1 + 0.5 * w;  dx = wx (gx - ax) / aw,  dw = ww log(gw / aw)  (same for y, h)
Decoding clamps dw / ww and dh / wh at log(1000 / 16) before exp (README, Conventions).
"""
import math

import numpy as np

from mrcnn_edu import reference
from .core import Case, Exercise, Mutant, prefix_shrinker
from .solutions import stage_03_box_deltas as solutions

CLIP = math.log(1000 / 16)
HEAD = (10.0, 10.0, 5.0, 5.0)  # the box head's weights


def b(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def random_pairs(rng, n, jitter=0.3):
    """n anchors and targets near them, as the RoI heads see them (IoU mostly >= 0.5)."""
    xy = rng.uniform(0, 500, (n, 2))
    wh = rng.uniform(8, 300, (n, 2))
    anchors = np.concatenate([xy, xy + wh], axis=1)
    shift = rng.normal(0, jitter, (n, 2)) * wh
    scale = np.exp(rng.normal(0, jitter, (n, 2)))
    centre = xy + wh / 2 + shift
    targets = np.concatenate([centre - wh * scale / 2, centre + wh * scale / 2], axis=1)
    return anchors, targets


# ---------------------------------------------------------------- encode

def encode_cases():
    rng = np.random.default_rng(3)
    anchors, targets = random_pairs(rng, 1000)
    return [
        Case("lesson 03: anchor (0,0,10,10), target (5,0,25,40)", "hand",
             (b([0, 0, 10, 10]), b([5, 0, 25, 40]))),
        Case("lesson 03's pair with the head's weights (10,10,5,5)", "hand",
             (b([0, 0, 10, 10]), b([5, 0, 25, 40])), {"weights": HEAD}),
        Case("target equals its anchor: all deltas 0", "edge", (b([3, 4, 13, 24]), b([3, 4, 13, 24]))),
        Case("target smaller than its anchor (dw < 0)", "edge", (b([0, 0, 40, 20]), b([10, 5, 20, 15]))),
        Case("target off-centre, not square, weights (10,10,5,5)", "edge",
             (b([10, 20, 50, 40], [0, 0, 16, 16]), b([14, 18, 62, 34], [-4, 2, 12, 30])), {"weights": HEAD}),
        Case("weights (2, 3, 4, 5): every weight differs", "edge",
             (b([10, 20, 50, 40]), b([14, 18, 62, 34])), {"weights": (2.0, 3.0, 4.0, 5.0)}),
        Case("no boxes (N = 0)", "edge", (b(), b())),
        Case("1000 proposals and their gt boxes, weights (10,10,5,5)", "random",
             (anchors, targets), {"weights": HEAD}),
        Case("1000 anchors and gt boxes, weights (1,1,1,1)", "random", random_pairs(rng, 1000, 0.6)),
    ]


def encode_with(anchors, targets, weights=(1.0, 1.0, 1.0, 1.0), *, centre=0.5, log_of="ratio",
                centre_weights=True, invert=False, divide_by_target=False):
    """An encode_boxes with one knob per slip; the defaults give the right answer."""
    wx, wy, ww, wh = weights
    if invert:
        wx, wy, ww, wh = 1 / wx, 1 / wy, 1 / ww, 1 / wh
    if not centre_weights:
        wx = wy = 1.0
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    gw, gh = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    ax, ay = anchors[:, 0] + centre * aw, anchors[:, 1] + centre * ah
    gx, gy = targets[:, 0] + centre * gw, targets[:, 1] + centre * gh
    nx, ny = (gw, gh) if divide_by_target else (aw, ah)
    with np.errstate(divide="ignore", invalid="ignore"):
        if log_of == "ratio":
            lw, lh = np.log(gw / aw), np.log(gh / ah)
        else:  # log of the relative difference
            lw, lh = np.log((gw - aw) / aw), np.log((gh - ah) / ah)
    return np.stack([wx * (gx - ax) / nx, wy * (gy - ay) / ny, ww * lw, wh * lh], axis=1)


def encode_knob(**kw):
    return lambda anchors, targets, weights=(1.0, 1.0, 1.0, 1.0): encode_with(
        anchors, targets, weights, **kw)


ENCODE_BOXES = Exercise(
    name="encode_boxes",
    lesson=3,
    contract='''encode_boxes(anchors, targets, weights=(1.0, 1.0, 1.0, 1.0)) -> deltas

    The deltas that move each anchor onto its target (torchvision's BoxCoder.encode).
    anchors (N, 4) and targets (N, 4): (x1, y1, x2, y2) with positive widths and heights;
    weights (wx, wy, ww, wh). With w = x2 - x1, cx = x1 + 0.5 * w (same for h, cy):
    dx = wx * (gx - ax) / aw, dy = wy * (gy - ay) / ah, dw = ww * log(gw / aw),
    dh = wh * log(gh / ah), where a is the anchor and g its target.
    Returns deltas (N, 4) float: columns (dx, dy, dw, dh).''',
    reference=reference.encode_boxes,
    cases=encode_cases,
    hints=(
        "Turn both boxes into centre, width and height first; then the shift of the centre is "
        "measured in anchor widths (heights), and the change of size as a log of a ratio.",
        "aw = x2 - x1, ax = x1 + 0.5 * aw (same for the target g and for y, h); "
        "dx = wx * (gx - ax) / aw, dy = wy * (gy - ay) / ah, dw = ww * log(gw / aw), "
        "dh = wh * log(gh / ah); np.stack([dx, dy, dw, dh], axis=1).",
    ),
    solution=solutions.encode_boxes,
    mutants=(
        Mutant("log_relative_difference", "dw = log((w - w') / w'): the log of the relative "
               "difference; it is dw = log(w / w'), the log of the ratio", encode_knob(log_of="difference")),
        Mutant("centre_without_weights", "your dx, dy leave out the weights wx, wy "
               "(dx = wx * (gx - ax) / aw)", encode_knob(centre_weights=False)),
        Mutant("weights_inverted", "you divide by the weights; encode multiplies by them "
               "(decode divides)", encode_knob(invert=True)),
        Mutant("centre_x1_plus_w", "your centres are x1 + w (the right edge), not x1 + w / 2",
               encode_knob(centre=1.0)),
        Mutant("divide_by_target_size", "you divide the centre shift by the target's width and "
               "height; it is measured in the anchor's (aw, ah)", encode_knob(divide_by_target=True)),
    ),
    shrink=prefix_shrinker([(0, 0), (1, 0)]),
)


# ---------------------------------------------------------------- decode

def decode_cases():
    rng = np.random.default_rng(4)
    anchors, targets = random_pairs(rng, 1000)
    head_deltas = reference.encode_boxes(anchors, targets, HEAD)
    wild = rng.normal(0, 1.5, (500, 4)) * np.array([1, 1, 3, 3])  # some beyond the clamp
    return [
        Case("lesson 03: anchor (0,0,10,10), deltas (1, 1.5, log 2, log 4)", "hand",
             (b([0, 0, 10, 10]), np.array([[1.0, 1.5, math.log(2), math.log(4)]]))),
        Case("zero deltas give the anchor back", "edge", (b([3, 4, 13, 24]), np.zeros((1, 4)))),
        Case("weights (10,10,5,5)", "edge",
             (b([10, 20, 50, 40], [0, 0, 16, 16]), np.array([[2.0, -3, 1.5, -2], [-1, 4, 3, 0.5]])),
             {"weights": HEAD}),
        Case("lesson 03's wild delta dw = 20: needs the clamp", "edge",
             (b([0, 0, 10, 10]), np.array([[0.0, 0, 20, 0]]))),
        Case("dw = 10 with weight 5: 2 after dividing, no clamp", "edge",
             (b([0, 0, 10, 10]), np.array([[0.0, 0, 10, 0]])), {"weights": HEAD}),
        Case("dw = 25 with weight 5: clamped after dividing", "edge",
             (b([0, 0, 10, 10]), np.array([[0.0, 0, 25, 0]])), {"weights": HEAD}),
        Case("a large shrink dw = -6 is not clamped", "edge",
             (b([0, 0, 100, 100]), np.array([[0.0, 0, -6, 1]]))),
        Case("two classes per row: deltas (N, 8)", "edge",
             (b([0, 0, 10, 10], [5, 5, 25, 15]),
              np.array([[1.0, 0, 0, 0, 0, 1, 0.5, 0], [0, 0, 1, 1, -1, 0, 0, -1]]))),
        Case("no boxes (N = 0)", "edge", (b(), np.zeros((0, 4)))),
        Case("deltas of 1000 proposals, weights (10,10,5,5)", "random",
             (anchors, head_deltas), {"weights": HEAD}),
        Case("500 predicted deltas, some beyond the clamp", "random", (anchors[:500], wild)),
    ]


def decode_with(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0), *, centre=0.5, clamp="after",
                invert=False):
    """A decode_boxes with one knob per slip; the defaults give the right answer."""
    wx, wy, ww, wh = weights
    if invert:
        wx, wy, ww, wh = 1 / wx, 1 / wy, 1 / ww, 1 / wh
    aw = (anchors[:, 2] - anchors[:, 0])[:, None]
    ah = (anchors[:, 3] - anchors[:, 1])[:, None]
    ax, ay = anchors[:, 0:1] + centre * aw, anchors[:, 1:2] + centre * ah
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw, dh = deltas[:, 2::4], deltas[:, 3::4]
    if clamp == "before":  # clamped before dividing by the weights
        dw, dh = np.minimum(dw, CLIP) / ww, np.minimum(dh, CLIP) / wh
    elif clamp == "both":
        dw, dh = np.clip(dw / ww, -CLIP, CLIP), np.clip(dh / wh, -CLIP, CLIP)
    elif clamp == "none":
        dw, dh = dw / ww, dh / wh
    else:
        dw, dh = np.minimum(dw / ww, CLIP), np.minimum(dh / wh, CLIP)
    cx, cy = ax + dx * aw, ay + dy * ah
    with np.errstate(over="ignore"):
        w, h = aw * np.exp(dw), ah * np.exp(dh)
    boxes = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=2)
    return boxes.reshape(deltas.shape)


def decode_knob(**kw):
    return lambda anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0): decode_with(
        anchors, deltas, weights, **kw)


DECODE_BOXES = Exercise(
    name="decode_boxes",
    lesson=3,
    contract='''decode_boxes(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)) -> boxes

    Apply deltas to anchors: the inverse of encode_boxes (torchvision's BoxCoder.decode).
    anchors (N, 4) (x1, y1, x2, y2); deltas (N, 4 * C): C boxes per anchor, columns
    (dx, dy, dw, dh) repeated; weights (wx, wy, ww, wh). With aw = x2 - x1,
    ax = x1 + 0.5 * aw: cx = dx / wx * aw + ax, w = aw * exp(min(dw / ww, log(1000 / 16)))
    (same for y and h); the box is (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2).
    Returns boxes (N, 4 * C) float, laid out like deltas.''',
    reference=reference.decode_boxes,
    cases=decode_cases,
    hints=(
        "Undo encode_boxes step by step: divide by the weights, move the anchor's centre by "
        "dx anchor widths, scale its width by exp(dw). Limit dw (after dividing by ww) so that a "
        "wild prediction cannot overflow exp. Slice deltas[:, 0::4] etc. to handle C boxes per row.",
        "dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy; "
        "dw = min(deltas[:, 2::4] / ww, log(1000 / 16)), dh likewise; cx = ax + dx * aw, "
        "w = aw * exp(dw); boxes = (cx - w/2, cy - h/2, cx + w/2, cy + h/2), stacked on a last "
        "axis of 4 and reshaped to deltas.shape.",
    ),
    solution=solutions.decode_boxes,
    mutants=(
        Mutant("no_clamp", "your decode has no clamp: dw / ww (and dh / wh) must be limited to "
               "log(1000 / 16) before exp", decode_knob(clamp="none")),
        Mutant("clamp_before_weights", "you clamp dw before dividing by the weight ww; the "
               "clamp applies to dw / ww", decode_knob(clamp="before")),
        Mutant("clamp_both_sides", "you clamp dw from below too; only growth is limited "
               "(min(dw / ww, log(1000 / 16))), a box may shrink freely", decode_knob(clamp="both")),
        Mutant("weights_inverted", "you multiply by the weights; decode divides by them "
               "(encode multiplies)", decode_knob(invert=True)),
        Mutant("centre_x1_plus_w", "your anchor centres are x1 + w (the right edge), not "
               "x1 + w / 2", decode_knob(centre=1.0)),
    ),
    shrink=prefix_shrinker([(0, 0), (1, 0)]),
)

EXERCISES = (ENCODE_BOXES, DECODE_BOXES)
