"""Lesson 06: torch twin of `mrcnn_edu.reference.roi_pool` (RoIPool, Fast R-CNN's layer).

Shape legend: N images, C channels, H x W feature map, K RoIs, h x w output bins,
E cells in all bins together.

Vectorised, no loop over RoIs: each output bin is a *bag* of the map cells it covers, listed in
row-major order, over the map laid out as (N * H * W, C) rows; RoIPool is then
`torch.nn.functional.embedding_bag(..., mode="max")`, a compiled per-channel max over each bag.
An empty bag (a bin that fell off the map) gives 0, as the kernel does; the backward pass hands
each output's gradient to the first maximum of its bag, as Fast R-CNN's backward does.
Bags differ in size (bins of one RoI may differ by a cell, RoIs by much more), so they are
built flat with offsets; memory is the output plus the bags, of at most CHUNK_ELEMENTS cells
at a time.
"""
import torch

from .roi_align import _check_inputs, as_rows, divide, size_chunks


def round_half_away(values):
    """Round halves away from zero, as C's round() does (torch.round rounds halves to even)."""
    return torch.sign(values) * torch.floor(values.abs() + 0.5)


def pool_bins(start, end, pooled, limit, dtype=torch.float64):
    """Cell ranges [lo, hi) of the bins along one axis: start, end (K,) -> lo, hi (K, pooled).

    The bin edges are computed in `dtype`, the map's precision, as the kernel does (they differ:
    7 * (58 / 7) is 58.0 in float32, just above 58 in float64)."""
    roi_size = (end - start + 1).clamp(min=1)  # (K,) the inclusive "+1" count of Fast R-CNN
    bin_size = divide(roi_size.to(dtype), pooled)  # (K,) one division, on every device
    steps = torch.arange(pooled, dtype=bin_size.dtype, device=bin_size.device)  # (pooled,)
    lo = torch.floor(steps[None] * bin_size[:, None]).long() + start[:, None]  # (K, pooled)
    hi = torch.ceil((steps[None] + 1) * bin_size[:, None]).long() + start[:, None]
    return lo.clamp(0, limit), hi.clamp(0, limit)


def _bin_ranges(rois, h, w, spatial_scale, map_size):
    """Each bin's first row, first column and its numbers of rows and columns: (K, h, w) each."""
    H, W = map_size
    corners = round_half_away(rois[:, 1:] * spatial_scale).long()  # (K, 4) cells, inclusive
    row_lo, row_hi = pool_bins(corners[:, 1], corners[:, 3], h, H, rois.dtype)  # (K, h)
    col_lo, col_hi = pool_bins(corners[:, 0], corners[:, 2], w, W, rois.dtype)  # (K, w)
    K = len(rois)
    return (row_lo[:, :, None].expand(K, h, w), col_lo[:, None, :].expand(K, h, w),
            (row_hi - row_lo)[:, :, None].expand(K, h, w),
            (col_hi - col_lo)[:, None, :].expand(K, h, w))


def _cell_bags(batch, row_lo, col_lo, rows, cols, map_size):
    """Bags of map rows, one per bin: index (E,) and offsets (B,) for B = K * h * w bins.

    batch (K,); the four others (K, h, w). A bin's cells are listed row-major, so that a tie goes
    to the first maximum in row-major order, as in the C kernel.
    """
    H, W = map_size
    sizes = (rows * cols).reshape(-1)  # (B,) cells in each bin; 0 when it fell off the map
    bag = torch.repeat_interleave(torch.arange(len(sizes), device=sizes.device), sizes)  # (E,)
    offsets = torch.cumsum(sizes, 0) - sizes  # (B,)
    j = torch.arange(len(bag), device=bag.device) - offsets[bag]  # (E,) cell number in its bin
    n_cols = cols.reshape(-1)[bag]
    r = row_lo.reshape(-1)[bag] + j // n_cols  # (E,)
    c = col_lo.reshape(-1)[bag] + j % n_cols
    image = batch[:, None, None].expand_as(rows).reshape(-1)[bag]  # (E,) the bin's image
    return image * (H * W) + r * W + c, offsets


class MaxOverBags(torch.autograd.Function):
    """`embedding_bag(index, rows, offsets, mode="max")`: (bags, C), 0 for an empty bag. The
    backward hands each output's gradient to the row that won its bag and channel (the first
    maximum in bag order) with one scatter_add; embedding_bag's own max backward goes through
    the channels one at a time (about 4x slower for 512 RoIs at 14 x 14 on 256 channels)."""

    @staticmethod
    def forward(ctx, rows, index, offsets):
        out, _, _, winners = torch.embedding_bag(rows, index, offsets, False, 2)  # 2: max
        sizes = torch.diff(offsets, append=offsets.new_tensor([len(index)]))  # (bags,)
        ctx.save_for_backward(winners, sizes > 0)  # (bags, C) winning rows, (bags,) non-empty
        ctx.rows_shape = rows.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        winners, filled = ctx.saved_tensors
        grad_rows = grad.new_zeros(ctx.rows_shape)  # (N*H*W, C)
        # an empty bag's output is a constant 0: its gradient goes nowhere
        grad_rows.scatter_add_(0, winners, grad * filled[:, None].to(grad.dtype))
        return grad_rows, None, None


def roi_pool(features, rois, output_size, spatial_scale):
    """Torch twin of `mrcnn_edu.reference.roi_pool.roi_pool`: same contract.

    features (N, C, H, W) on any device, float32 or float64; rois (K, 5) on the same device.
    Returns (K, C, h, w), differentiable with respect to features: each output's gradient goes
    to the cell that won its bin (the first maximum in row-major order, as in torchvision).
    """
    features, rois, h, w = _check_inputs(features, rois, output_size)
    N, C, H, W = features.shape
    rows = as_rows(features)  # (N*H*W, C) one row per cell
    rois = rois.detach()
    row_lo, col_lo, n_rows, n_cols = _bin_ranges(rois, h, w, float(spatial_scale), (H, W))
    batch = rois[:, 0].long()
    parts = []
    for part in size_chunks((n_rows * n_cols).sum((1, 2))):  # (K,) cells per RoI
        index, offsets = _cell_bags(batch[part], row_lo[part], col_lo[part], n_rows[part],
                                    n_cols[part], (H, W))
        out = MaxOverBags.apply(rows, index, offsets)  # (G * h * w, C)
        parts.append(out.reshape(-1, h, w, C).permute(0, 3, 1, 2))
    return torch.cat(parts) if parts else features.new_zeros((0, C, h, w))
