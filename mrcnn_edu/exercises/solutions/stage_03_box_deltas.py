"""Solutions of lesson 03's "your turn": encode a target box relative to an anchor, decode back."""
import math

import numpy as np


def encode_boxes(anchors, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    """Deltas (N, 4) = (dx, dy, dw, dh) that move each anchor (N, 4) onto its target (N, 4)."""
    wx, wy, ww, wh = weights
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]  # (N,)
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah  # (N,) centres
    gw, gh = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    gx, gy = targets[:, 0] + 0.5 * gw, targets[:, 1] + 0.5 * gh
    return np.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                     ww * np.log(gw / aw), wh * np.log(gh / ah)], axis=1)  # (N, 4)


def decode_boxes(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Boxes (N, 4 * C) from anchors (N, 4) and deltas (N, 4 * C): the inverse of encode_boxes."""
    wx, wy, ww, wh = weights
    aw = (anchors[:, 2] - anchors[:, 0])[:, None]  # (N, 1), against (N, C) deltas
    ah = (anchors[:, 3] - anchors[:, 1])[:, None]
    ax, ay = anchors[:, 0:1] + 0.5 * aw, anchors[:, 1:2] + 0.5 * ah  # (N, 1)
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy  # (N, C)
    clip = math.log(1000 / 16)  # no box grows more than 62.5 times: keeps exp finite
    dw, dh = np.minimum(deltas[:, 2::4] / ww, clip), np.minimum(deltas[:, 3::4] / wh, clip)
    cx, cy, w, h = ax + dx * aw, ay + dy * ah, aw * np.exp(dw), ah * np.exp(dh)  # (N, C)
    boxes = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=2)  # (N, C, 4)
    return boxes.reshape(deltas.shape)  # (N, 4 * C)
