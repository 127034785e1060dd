"""Box deltas (lesson 03_box_deltas), torch twin of `mrcnn_edu.reference.box_coder`.

Shape legend: N anchors paired with N targets; C classes (deltas (N, 4 * C)).
dx = wx * (gx - ax) / aw, dw = ww * log(gw / aw); centres at x1 + 0.5 * w; decode clamps
dw / ww and dh / wh at log(1000 / 16) before exp (torchvision's BoxCoder).

Reference -> twin:
    BBOX_XFORM_CLIP, check_weights -> imported from the reference (constants and plain Python)
    as_boxes (boxes.py)            -> _check_boxes (the shape check only: the twin keeps the dtype)
    centres_and_sizes              -> centres_and_sizes
    encode_boxes                   -> encode_boxes
    decode_boxes                   -> decode_boxes
"""
import torch

from ..reference.box_coder import BBOX_XFORM_CLIP, check_weights


def _check_boxes(boxes, name):
    """ValueError unless boxes is (N, 4): the check `reference.boxes.as_boxes` makes."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    return boxes


def centres_and_sizes(boxes):
    """(cx, cy, w, h) of xyxy boxes: four (N,) tensors, centres at x1 + 0.5 * w."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # (N,), (N,)
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def encode_boxes(anchors, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    """Torch twin of `mrcnn_edu.reference.box_coder.encode_boxes`: same contract.
    anchors (N, 4), targets (N, 4) -> deltas (N, 4)."""
    anchors, targets = _check_boxes(anchors, "anchors"), _check_boxes(targets, "targets")
    if len(anchors) != len(targets):
        raise ValueError(f"anchors and targets must pair up, got {len(anchors)} and "
                         f"{len(targets)} boxes")
    wx, wy, ww, wh = check_weights(weights)
    ax, ay, aw, ah = centres_and_sizes(anchors)  # 4 x (N,)
    gx, gy, gw, gh = centres_and_sizes(targets)  # 4 x (N,)
    dx = wx * (gx - ax) / aw
    dy = wy * (gy - ay) / ah
    dw = ww * torch.log(gw / aw)
    dh = wh * torch.log(gh / ah)
    return torch.stack([dx, dy, dw, dh], dim=1)  # (N, 4)


def decode_boxes(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Torch twin of `mrcnn_edu.reference.box_coder.decode_boxes`: same contract, the same clamp
    (decode undoes encode except where dw / ww or dh / wh > log(1000 / 16)).
    anchors (N, 4), deltas (N, 4 * C) -> boxes (N, 4 * C)."""
    anchors = _check_boxes(anchors, "anchors")
    if deltas.ndim != 2 or deltas.shape[1] % 4 != 0 or len(deltas) != len(anchors):
        raise ValueError(f"deltas must have shape (N, 4 * C) with N = {len(anchors)} anchors, "
                         f"got {tuple(deltas.shape)}")
    wx, wy, ww, wh = check_weights(weights)
    ax, ay, aw, ah = (v[:, None] for v in centres_and_sizes(anchors))  # 4 x (N, 1)
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy  # (N, C), (N, C)
    dw = (deltas[:, 2::4] / ww).clamp(max=BBOX_XFORM_CLIP)  # (N, C)
    dh = (deltas[:, 3::4] / wh).clamp(max=BBOX_XFORM_CLIP)
    cx, cy = dx * aw + ax, dy * ah + ay  # (N, C)
    w, h = torch.exp(dw) * aw, torch.exp(dh) * ah  # (N, C)
    boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)  # (N, C, 4)
    return boxes.reshape(deltas.shape)  # (N, 4 * C)
