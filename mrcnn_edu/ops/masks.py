"""Lesson 07: torch twin of `mrcnn_edu.reference.masks` (mask targets, pasting masks back).

Shape legend: G ground-truth masks of one image, K RoIs, M x M mask grid, H x W image.

Pasting is two matrix products per RoI: a (H, M) matrix Ry whose row y holds the two bilinear
weights of image row y (zero outside the box), and a (W, M) matrix Rx for the columns, so that
pasted = Ry @ mask @ Rx^T. RoIs go through in chunks so that at most CHUNK_PIXELS floats exist.

Mask targets are the reference's RoIAlign (aligned, adaptive sampling) of each RoI's ground-truth
mask, computed separably: bilinear sampling weighs rows and columns independently, and the mean
over a bin's gh x gw samples is the mean over its gh rows times the mean over its gw columns,
so a RoI's M x M average is Ay @ crop @ Ax^T, with Ay (M, h) the mean row weights of each bin
over the h mask rows the RoI touches, Ax (M, w) those of the columns, and crop (h, w) the mask
there. Two small matrix products per RoI replace a table of 4 x gh x gw (row, weight) pairs per
bin, which is what a one-channel map at full resolution would need (lesson 06's bags).

Reference -> twin:
    mask_targets    -> mask_targets (and `batch_mask_targets`, the same for several images)
    roi_align over the masks -> `_axis_weights` (Ay, Ax from `roi_align.axis_samples`, the twin's
                       own sample rule) and the products in `_image_targets`
    mask_coordinate -> _interpolation_matrix (the same clamped coordinate, as matrix weights)
    _paste_kernel   -> the chunked matrix products in `paste_masks`
    paste_masks     -> paste_masks
"""
import torch

from ..reference.masks import MASK_THRESHOLD
from .roi_align import _roi_geometry, axis_samples

CHUNK_PIXELS = 1 << 24  # image pixels computed at once (K_chunk * H * W): 64 MB of float32


def mask_targets(gt_masks, matched_gt_index, rois, size=28):
    """Torch twin of `mrcnn_edu.reference.masks.mask_targets`: same contract.

    Tensors on any device; returns (K, size, size) in the rois' float dtype (float32 otherwise),
    computed in that dtype. In float64 it agrees with the reference except where a bin's
    average is 0.5 to within rounding (sums taken in another order may land on either side);
    such ties are rare outside boxes with integer corners over axis-aligned masks.
    """
    return _targets_of_images([gt_masks], [matched_gt_index], [rois], size)


def batch_mask_targets(gt_masks, matched_gt_index, rois, size=28):
    """`mask_targets` of several images at once: lists of each image's gt_masks (G_b, H_b, W_b),
    matched_gt_index (K_b,) and rois (K_b, 4) -> (sum K_b, size, size), the images' targets
    one after the other, bit for bit what `mask_targets` gives image by image.

    Each image's RoIs are computed together (two batched matrix products), from that image's
    own masks at its own size.
    """
    return _targets_of_images(gt_masks, matched_gt_index, rois, size)


def _targets_of_images(gt_masks, matched_gt_index, rois, size):
    """The work of `mask_targets` and `batch_mask_targets` (which `exercises.use` may swap):
    each image's targets from its own masks, one image after the other."""
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
    parts = [_image_targets(g, m, r.to(dtype), size)
             for g, m, r in zip(gt_masks, matched_gt_index, rois) if len(r)]
    if not parts:
        return torch.zeros((0, size, size), dtype=dtype, device=device)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _image_targets(gt_masks, matched_gt_index, rois, size):
    """One image: gt_masks (G, H, W), matched_gt_index (K,), rois (K, 4) float -> (K, M, M)."""
    K, (H, W) = len(rois), gt_masks.shape[-2:]
    with_batch = torch.cat([rois.new_zeros((K, 1)), rois], 1)  # (K, 5) the twin's RoI layout
    g = _roi_geometry(with_batch, size, size, 1.0, -1, True, (H, W))  # adaptive, aligned
    ay, row0 = _axis_weights(g["start_y"], g["bin_h"], g["grid_h"], size, H)  # (K, M, h), (K,)
    ax, col0 = _axis_weights(g["start_x"], g["bin_w"], g["grid_w"], size, W)  # (K, M, w), (K,)
    ax = ax / torch.clamp(g["grid_h"] * g["grid_w"], min=1).to(ax.dtype)[:, None, None]  # the mean
    h, w = ay.shape[-1], ax.shape[-1]
    rows = (row0[:, None] + torch.arange(h, device=rois.device)).clamp(max=H - 1)  # (K, h)
    cols = (col0[:, None] + torch.arange(w, device=rois.device)).clamp(max=W - 1)  # (K, w)
    # only the masks some RoI uses, in the RoIs' precision: a float64 copy of every
    # ground-truth mask would cost G x H x W x 8 bytes
    used, which = torch.unique(matched_gt_index.long(), return_inverse=True)  # (U,), (K,)
    masks = gt_masks[used].to(rois.dtype)  # (U, H, W)
    soft = rois.new_empty((K, size, size))
    step = max(1, CHUNK_PIXELS // max(h * w, 1))
    for i in range(0, K, step):  # chunks of RoIs: at most CHUNK_PIXELS cropped mask pixels
        part = slice(i, i + step)
        crop = masks[which[part, None, None], rows[part, :, None], cols[part, None, :]]  # (k, h, w)
        soft[part] = ay[part] @ crop @ ax[part].transpose(1, 2)  # (k, M, M)
    return (soft >= 0.5).to(rois.dtype)


def _axis_weights(start, bin_size, counts, pooled, limit):
    """One axis of RoIAlign as a matrix: (K, pooled, n) weights and first cell (K,), where
    row p holds the bilinear weights of bin p's counts[k] samples summed onto the n cells
    first..first + n - 1 (n: the most cells any RoI touches; the rest of a row is 0).
    Samples outside the map weigh 0, and so does every sample of a RoI with no samples."""
    grid = max(int(counts.max()), 1) if len(counts) else 1
    low, high, w_low, w_high = axis_samples(start, bin_size, pooled, grid, limit,
                                            counts.clamp(min=1))  # (K, pooled, grid) each
    real = (torch.arange(grid, device=counts.device) < counts[:, None])[:, None, :]  # (K, 1, grid)
    first = low[:, 0, 0]  # (K,) positions grow along the axis: the first sample's cell is lowest
    last = torch.where(real, high, first[:, None, None]).amax((1, 2))  # (K,) past it: padding
    n = int((last - first).max()) + 1 if len(first) else 1
    matrix = start.new_zeros((len(start), pooled, n))
    for cell, weight in ((low, w_low), (high, w_high)):
        at = (cell - first[:, None, None]).clamp(0, n - 1)  # padding slots weigh 0 wherever
        matrix.scatter_add_(2, at, weight * real)
    return matrix, first


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
