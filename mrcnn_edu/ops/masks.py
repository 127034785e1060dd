"""Lesson 07: torch twin of `mrcnn_edu.reference.masks` (mask targets, pasting masks back).

Shape legend: G ground-truth masks of one image, K RoIs, M x M mask grid, H x W image.

Pasting is two matrix products per RoI: a (H, M) matrix Ry whose row y holds the two bilinear
weights of image row y (zero outside the box), and a (W, M) matrix Rx for the columns, so that
pasted = Ry @ mask @ Rx^T. RoIs go through in chunks so that at most CHUNK_PIXELS floats exist.

Reference -> twin:
    mask_targets    -> mask_targets (and `batch_mask_targets`, the same for several images)
    mask_coordinate -> _interpolation_matrix (the same clamped coordinate, as matrix weights)
    _paste_kernel   -> the chunked matrix products in `paste_masks`
    paste_masks     -> paste_masks
"""
import torch

from ..reference.masks import MASK_THRESHOLD
from .roi_align import _align_on_maps

CHUNK_PIXELS = 1 << 24  # image pixels computed at once (K_chunk * H * W): 64 MB of float32


def mask_targets(gt_masks, matched_gt_index, rois, size=28):
    """Torch twin of `mrcnn_edu.reference.masks.mask_targets`: same contract.

    Tensors on any device; returns (K, size, size) in the rois' float dtype (float32 otherwise),
    computed in that dtype (float64 rois reproduce the reference exactly).
    """
    return _targets_of_images([gt_masks], [matched_gt_index], [rois], size)


def batch_mask_targets(gt_masks, matched_gt_index, rois, size=28):
    """`mask_targets` of several images at once: lists of each image's gt_masks (G_b, H_b, W_b),
    matched_gt_index (K_b,) and rois (K_b, 4) -> (sum K_b, size, size), the images' targets
    one after the other, bit for bit what `mask_targets` gives image by image.

    One RoIAlign for the whole batch: each RoI samples its own image's masks at that image's
    size, so the bags of every RoI are built together, not image by image.
    """
    return _targets_of_images(gt_masks, matched_gt_index, rois, size)


def _targets_of_images(gt_masks, matched_gt_index, rois, size):
    """The work of `mask_targets` and `batch_mask_targets` (which `exercises.use` may swap)."""
    for g, m, r in zip(gt_masks, matched_gt_index, rois):
        if g.ndim != 3:
            raise ValueError(f"gt_masks must have shape (G, H, W), got {tuple(g.shape)}")
        if r.ndim != 2 or r.shape[1] != 4:
            raise ValueError(f"rois must have shape (K, 4), got {tuple(r.shape)}")
        if m.shape != (len(r),):
            raise ValueError(f"matched_gt_index must have shape ({len(r)},), "
                             f"got {tuple(m.shape)}")
    dtype = rois[0].dtype if rois[0].is_floating_point() else torch.float32
    device = rois[0].device
    if sum(len(r) for r in rois) == 0:
        return torch.zeros((0, size, size), dtype=dtype, device=device)
    maps, with_index, image = [], [], []
    for b, (g, m, r) in enumerate(zip(gt_masks, matched_gt_index, rois)):
        # only the masks some RoI uses, in the RoIs' precision: a full-size float64 copy of
        # every ground-truth mask would cost G x H x W x 8 bytes per image
        used, index = torch.unique(m.long(), return_inverse=True)  # (U_b,), (K_b,)
        maps.append(g[used][:, None].to(dtype))  # (U_b, 1, H_b, W_b)
        with_index.append(torch.cat([index[:, None].to(dtype), r.to(dtype)], 1))  # (K_b, 5)
        image.append(torch.full((len(r),), b, dtype=torch.long, device=device))  # (K_b,)
    soft = _align_on_maps(maps, torch.cat(with_index), torch.cat(image), (size, size),
                          [1.0] * len(maps), sampling_ratio=-1, aligned=True)[:, 0]  # (K, M, M)
    return (soft >= 0.5).to(dtype)


def _batch_mask_targets_image_by_image(gt_masks, matched_gt_index, rois, size=28):
    """`batch_mask_targets` as one `mask_targets` call per image: what `exercises.use` runs
    when a learner's mask_targets replaces this module's, so that the model trains with it."""
    parts = [mask_targets(g, m, r, size) for g, m, r in zip(gt_masks, matched_gt_index, rois)]
    return torch.cat(parts)


def _interpolation_matrix(start, end, cells, length):
    """Bilinear weights of image rows (or columns) over mask cells: (K, length, cells), 0 for
    pixels outside the box, and `inside` (K, length), which pixels are in the box."""
    centres = torch.arange(length, dtype=start.dtype, device=start.device) + 0.5  # (length,)
    inside = (centres[None] >= start[:, None]) & (centres[None] < end[:, None])  # (K, length)
    extent = (end - start).clamp(min=torch.finfo(start.dtype).tiny)[:, None]  # (K, 1)
    u = ((centres[None] - start[:, None]) / extent * cells - 0.5).clamp(0, cells - 1)  # (K, length)
    low = u.floor()
    frac = u - low
    high = (low + 1).clamp(max=cells - 1)
    matrix = start.new_zeros((len(start), length, cells))
    matrix.scatter_add_(2, low.long()[..., None], ((1 - frac) * inside)[..., None])
    matrix.scatter_add_(2, high.long()[..., None], (frac * inside)[..., None])
    return matrix, inside


def paste_masks(masks, boxes, image_size, threshold=MASK_THRESHOLD):
    """Torch twin of `mrcnn_edu.reference.masks.paste_masks`: same contract.

    masks (K, M, M) float tensor, boxes (K, 4) on the same device. Returns (K, H, W) bool.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (K, M, M), got {tuple(masks.shape)}")
    if boxes.shape != (len(masks), 4):
        raise ValueError(f"boxes must have shape ({len(masks)}, 4), got {tuple(boxes.shape)}")
    height, width = (int(s) for s in image_size)
    K, Mh, Mw = masks.shape
    masks = masks if masks.is_floating_point() else masks.float()
    boxes = boxes.to(masks.dtype)
    out = torch.zeros((K, height, width), dtype=torch.bool, device=masks.device)
    step = max(1, CHUNK_PIXELS // max(height * width, 1))
    for i in range(0, K, step):  # chunks of RoIs, not single RoIs
        part = slice(i, i + step)
        rows, row_in = _interpolation_matrix(boxes[part, 1], boxes[part, 3], Mh, height)  # (k,H,M)
        cols, col_in = _interpolation_matrix(boxes[part, 0], boxes[part, 2], Mw, width)  # (k, W, M)
        pasted = rows @ masks[part] @ cols.transpose(1, 2)  # (k, H, W)
        out[part] = (pasted >= threshold) & row_in[:, :, None] & col_in[:, None, :]
    return out
