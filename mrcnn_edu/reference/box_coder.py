"""Box deltas (lesson 03_box_deltas): encode a target box relative to an anchor, and decode back.

Shape legend: N anchors (or proposals) paired one-to-one with N targets; C classes when a head
predicts one box per class (deltas (N, 4 * C)).
Names follow the direction of the transform: `encode_boxes(anchors, targets) -> deltas`,
`decode_boxes(anchors, deltas) -> boxes`. This is torchvision's BoxCoder:

    w = x2 - x1,  cx = x1 + 0.5 * w         (same for h, cy; no +1)
    dx = wx * (gx - ax) / aw                dy = wy * (gy - ay) / ah
    dw = ww * log(gw / aw)                  dh = wh * log(gh / ah)

The RPN uses weights (1, 1, 1, 1); the box head uses (10, 10, 5, 5), which scales the deltas
to roughly unit variance.

numpy in, numpy out. The torch twin is `mrcnn_edu.ops.box_coder`.
"""
import math

import numpy as np

from .boxes import as_boxes

# Largest log-scale a decoded box may grow by: exp(clip) = 1000 / 16 = 62.5 (torchvision's value).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def check_weights(weights):
    if len(weights) != 4:
        raise ValueError(f"weights must be (wx, wy, ww, wh), got {weights!r}")
    return tuple(float(w) for w in weights)


def centres_and_sizes(boxes):
    """(cx, cy, w, h) of xyxy boxes: four (N,) arrays, centres at x1 + 0.5 * w."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # (N,), (N,)
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def encode_boxes(anchors, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    """Deltas (N, 4) = (dx, dy, dw, dh) that move each anchor onto its target.

    anchors (N, 4), targets (N, 4) xyxy, both with positive widths and heights (the log needs them).
    dx = wx * (gx - ax) / aw, dy = wy * (gy - ay) / ah, dw = ww * log(gw / aw),
    dh = wh * log(gh / ah). `decode_boxes(anchors, encode_boxes(anchors, targets))` gives the
    targets back, unless a target is more than 1000 / 16 times wider or taller than its anchor
    (see the clamp in `decode_boxes`).
    """
    anchors, targets = as_boxes(anchors, "anchors"), as_boxes(targets, "targets")
    if len(anchors) != len(targets):
        raise ValueError(f"anchors and targets must pair up, got {len(anchors)} and {len(targets)} boxes")
    wx, wy, ww, wh = check_weights(weights)
    ax, ay, aw, ah = centres_and_sizes(anchors)  # 4 x (N,)
    gx, gy, gw, gh = centres_and_sizes(targets)  # 4 x (N,)
    dx = wx * (gx - ax) / aw
    dy = wy * (gy - ay) / ah
    dw = ww * np.log(gw / aw)  # log: a ratio, so growing x2 and shrinking /2 cost the same
    dh = wh * np.log(gh / ah)
    return np.stack([dx, dy, dw, dh], axis=1)  # (N, 4)


def decode_boxes(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Boxes (N, 4) obtained by applying deltas (N, 4) to anchors (N, 4); the inverse of encode.

    gx = dx / wx * aw + ax, gw = exp(min(dw / ww, log(1000 / 16))) * aw, same for y and h;
    x1 = gx - 0.5 * gw, x2 = gx + 0.5 * gw. The clamp keeps a wild prediction from overflowing
    exp, so decode undoes encode everywhere except where dw / ww or dh / wh exceeds log(1000 / 16).
    deltas may also be (N, 4 * C), one box per class; the result is then (N, 4 * C).
    """
    anchors = as_boxes(anchors, "anchors")
    deltas = np.asarray(deltas)
    if deltas.ndim != 2 or deltas.shape[1] % 4 != 0 or len(deltas) != len(anchors):
        raise ValueError(f"deltas must have shape (N, 4 * C) with N = {len(anchors)} anchors, "
                         f"got {deltas.shape}")
    wx, wy, ww, wh = check_weights(weights)
    ax, ay, aw, ah = (v[:, None] for v in centres_and_sizes(anchors))  # 4 x (N, 1)
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy  # (N, C), (N, C)
    dw = np.minimum(deltas[:, 2::4] / ww, BBOX_XFORM_CLIP)  # (N, C)
    dh = np.minimum(deltas[:, 3::4] / wh, BBOX_XFORM_CLIP)
    cx, cy = dx * aw + ax, dy * ah + ay  # (N, C)
    w, h = np.exp(dw) * aw, np.exp(dh) * ah  # (N, C)
    boxes = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=2)  # (N, C, 4)
    return boxes.reshape(deltas.shape)  # (N, 4 * C)
