"""Boxes and IoU (lesson 01_boxes_and_iou), torch twin of `mrcnn_edu.reference.boxes`.

Shape legend: N, M numbers of boxes; (H, W) an image size (height, width).
Boxes are float (x1, y1, x2, y2) in input-image pixels, width = x2 - x1 (no +1).
torch in, torch out, on the input's device and in its float dtype.

Reference -> twin: box_area, box_iou, clip_boxes, remove_small_boxes, expand_boxes -> the
same names. The reference's `as_boxes` (shape check, integer -> float) has no twin here: these
are the model's innermost calls and take the boxes the model made.
"""
import torch


def box_area(boxes):
    """Torch twin of `mrcnn_edu.reference.boxes.box_area`: same contract. boxes (N, 4) -> (N,)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)


def box_iou(boxes1, boxes2):
    """Torch twin of `mrcnn_edu.reference.boxes.box_iou`: same contract, any device and float
    dtype. boxes1 (N, 4), boxes2 (M, 4) -> (N, M); disjoint or zero-union pairs give 0."""
    area1, area2 = box_area(boxes1), box_area(boxes2)  # (N,), (M,)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp(min=0)  # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = area1[:, None] + area2[None, :] - inter  # (N, M)
    # union == 0 only when inter == 0 too; the floor gives 0 / tiny = 0 there, not 0 / 0 = NaN,
    # and a zero gradient through the clamp (gradients stay finite)
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)  # (N, M)


def clip_boxes(boxes, image_size):
    """Torch twin of `mrcnn_edu.reference.boxes.clip_boxes`: same contract; image_size is (H, W)."""
    height, width = image_size
    x = boxes[:, 0::2].clamp(0, width)  # (N, 2) x1, x2
    y = boxes[:, 1::2].clamp(0, height)  # (N, 2) y1, y2
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)  # (N, 4)


def remove_small_boxes(boxes, min_size):
    """Torch twin of `mrcnn_edu.reference.boxes.remove_small_boxes`: same contract, int64 indices."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # (N,), (N,)
    keep = (widths >= min_size) & (heights >= min_size)  # (N,)
    return torch.nonzero(keep).flatten()  # (K,) int64


def expand_boxes(boxes, scale):
    """Torch twin of `mrcnn_edu.reference.boxes.expand_boxes`: same contract. (N, 4) -> (N, 4)."""
    if scale == 1:
        return boxes.clone()  # exact, as the reference
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)  # (N, 2)
    return torch.cat([centre - half, centre + half], dim=1)  # (N, 4)
