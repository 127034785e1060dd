"""Lesson 07: mask targets (ground truth cut to an M x M grid per RoI) and pasting masks back.

Shape legend: G ground-truth masks of one image, K RoIs, M x M mask grid (28 in Mask R-CNN),
H x W image. Boxes are float (x1, y1, x2, y2) in image pixels; pixel (i, j) has centre
(j + 0.5, i + 0.5).

Targets (training): RoIAlign of the binary ground-truth mask over the RoI to M x M, then >= 0.5.
We use aligned=True (the project's convention; torchvision's `project_masks_on_boxes` uses the
legacy aligned=False) and sampling_ratio=-1 (ceil(bin size) samples per bin side).

Pasting (inference): the inverse map. An image pixel whose centre (x + 0.5, y + 0.5) lies in the
box, x1 <= x + 0.5 < x2 and y1 <= y + 0.5 < y2, reads the mask at

    u = (x + 0.5 - x1) / (x2 - x1) * M - 0.5,   v = (y + 0.5 - y1) / (y2 - y1) * M - 0.5

(mask cell j has its centre at u = j), clamped to [0, M - 1] and interpolated bilinearly, first
along v then along u; the pixel is on when that value >= threshold. Pixels outside the box are off.
"""
import math

import numba
import numpy as np

from .roi_align import roi_align

# A mask probability at or above this is "on" (pasting, drawing, COCO results): the README's rule.
MASK_THRESHOLD = 0.5


def mask_targets(gt_masks, matched_gt_index, rois, size=28):
    """M x M binary targets for the RoIs of ONE image.

    gt_masks (G, H, W) uint8/bool/float for one image; matched_gt_index (K,) int: the ground-truth
    mask each RoI learns; rois (K, 4) xyxy boxes in image pixels (no batch column).
    Returns (K, size, size) in {0, 1}, float32 (or the rois' float dtype).
    """
    gt_masks = np.asarray(gt_masks)
    matched_gt_index = np.asarray(matched_gt_index)
    rois = np.asarray(rois)
    if gt_masks.ndim != 3:
        raise ValueError(f"gt_masks must have shape (G, H, W), got {gt_masks.shape}")
    if rois.ndim != 2 or rois.shape[1] != 4:
        raise ValueError(f"rois must have shape (K, 4), got {rois.shape}")
    if matched_gt_index.shape != (len(rois),):
        raise ValueError(f"matched_gt_index must have shape ({len(rois)},), "
                         f"got {matched_gt_index.shape}")
    dtype = rois.dtype if rois.dtype.kind == "f" else np.float32
    if len(rois) == 0:
        return np.zeros((0, size, size), dtype)
    with_batch = np.concatenate([matched_gt_index[:, None].astype(np.float64), rois], 1)  # (K, 5)
    soft = roi_align(gt_masks[:, None].astype(np.float64), with_batch, size, 1.0,
                     sampling_ratio=-1, aligned=True)[:, 0]  # (K, size, size) fraction covered
    return (soft >= 0.5).astype(dtype)


@numba.njit(cache=True)
def mask_coordinate(pixel, start, end, cells):
    """Mask coordinate (low cell, high cell, fraction) read by image pixel `pixel` of a box side."""
    u = (pixel + 0.5 - start) / (end - start) * cells - 0.5
    u = min(max(u, 0.0), cells - 1.0)
    low = int(math.floor(u))
    high = min(low + 1, cells - 1)
    return low, high, u - low


@numba.njit(cache=True, parallel=True)
def _paste_kernel(masks, boxes, height, width, threshold):
    K, Mh, Mw = masks.shape
    out = np.zeros((K, height, width), np.bool_)
    for k in numba.prange(K):
        x1, y1, x2, y2 = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        for y in range(height):
            if not (y1 <= y + 0.5 < y2):
                continue
            v0, v1, fv = mask_coordinate(y, y1, y2, Mh)
            for x in range(width):
                if not (x1 <= x + 0.5 < x2):
                    continue
                u0, u1, fu = mask_coordinate(x, x1, x2, Mw)
                left = (1.0 - fv) * masks[k, v0, u0] + fv * masks[k, v1, u0]  # along v first
                right = (1.0 - fv) * masks[k, v0, u1] + fv * masks[k, v1, u1]
                out[k, y, x] = (1.0 - fu) * left + fu * right >= threshold
    return out


def paste_masks(masks, boxes, image_size, threshold=MASK_THRESHOLD):
    """Paste M x M mask probabilities into the image: (K, H, W) bool.

    masks (K, M, M) probabilities (any M x M' grid works); boxes (K, 4) xyxy in image pixels;
    image_size (H, W). Sampling rule in the module docstring; output >= threshold inside the box.
    """
    masks = np.asarray(masks, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (K, M, M), got {masks.shape}")
    if boxes.shape != (len(masks), 4):
        raise ValueError(f"boxes must have shape ({len(masks)}, 4), got {boxes.shape}")
    height, width = (int(s) for s in image_size)
    return _paste_kernel(masks, boxes, height, width, float(threshold))
