"""Boxes and IoU (lesson 01_boxes_and_iou): area, pairwise IoU, clipping, tiny-box removal,
scaling about the centre.

Shape legend: N, M numbers of boxes; (H, W) an image size (height, width).
Boxes are float (x1, y1, x2, y2) in input-image pixels, width = x2 - x1 (no +1); a box with
x1 <= x2 and y1 <= y2 is valid. Names: `boxes1`/`boxes2` for the two sides of a pairwise op.

numpy in, numpy out. The torch twin is `mrcnn_edu.ops.boxes`, same names and contracts.
"""
import numpy as np


def as_boxes(boxes, name="boxes"):
    """`boxes` as a float numpy array of shape (N, 4), or ValueError saying what was expected.

    Integer input becomes float64; float input keeps its dtype. Shared by the other reference
    modules that take boxes, so every message reads the same.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {boxes.shape}")
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float64)
    return boxes


def box_area(boxes):
    """Area of each box: (x2 - x1) * (y2 - y1).

    boxes (N, 4) xyxy with x1 <= x2, y1 <= y2. Returns (N,). Empty input gives (0,).
    """
    boxes = as_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)


def box_iou(boxes1, boxes2):
    """Pairwise intersection over union.

    boxes1 (N, 4), boxes2 (M, 4) xyxy with x1 <= x2, y1 <= y2.
    Returns (N, M) in [0, 1]: IoU = inter / (area1 + area2 - inter).
    Disjoint pairs give 0, and so do pairs whose union is 0 (two zero-area boxes): never NaN.
    """
    boxes1, boxes2 = as_boxes(boxes1, "boxes1"), as_boxes(boxes2, "boxes2")
    area1, area2 = box_area(boxes1), box_area(boxes2)  # (N,), (M,)
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2) top-left of overlap
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2) bottom-right
    wh = np.clip(rb - lt, 0, None)  # (N, M, 2) negative extent means no overlap
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = area1[:, None] + area2[None, :] - inter  # (N, M)
    # union == 0 only when inter == 0 too; flooring it at the tiniest normal float gives
    # 0 / tiny = 0 instead of 0 / 0 = NaN, and changes no real union (none is that small)
    return inter / np.maximum(union, np.finfo(union.dtype).tiny)  # (N, M)


def clip_boxes(boxes, image_size):
    """Clamp boxes to the image: x to [0, W], y to [0, H]. image_size is (H, W).

    boxes (N, 4). Returns a new (N, 4) array; a box wholly outside becomes zero-width or
    zero-height (drop it with `remove_small_boxes`).
    """
    boxes = as_boxes(boxes)
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}")
    height, width = image_size
    out = boxes.copy()
    out[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)  # x1, x2
    out[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)  # y1, y2
    return out


def remove_small_boxes(boxes, min_size):
    """Indices (int64, ascending) of the boxes with width >= min_size and height >= min_size."""
    boxes = as_boxes(boxes)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # (N,), (N,)
    keep = (widths >= min_size) & (heights >= min_size)  # (N,)
    return np.flatnonzero(keep).astype(np.int64)


def expand_boxes(boxes, scale):
    """Each box with its width and height times `scale`, about the same centre (torchvision's
    `expand_boxes`). boxes (N, 4) xyxy, scale > 0. Returns a new (N, 4) array.

    Scale 1 returns an exact copy: centre +- half width would round the corners in the last
    bit. The mask head uses it with `Config.mask_box_scale` (lessons 10 and 11).
    """
    boxes = as_boxes(boxes)
    if scale == 1:
        return boxes.copy()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)  # (N, 2)
    return np.concatenate([centre - half, centre + half], axis=1)  # (N, 4)
