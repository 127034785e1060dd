"""Lesson 06: torch twin of `mrcnn_edu.reference.roi_pool` (RoIPool, Fast R-CNN's layer).

Shape legend: N images, C channels, H x W feature map, K RoIs, h x w output bins,
B cells in the largest bin of a chunk (smaller bins are padded).

Vectorised, no loop over RoIs: find each bin's winning cell per channel by gathering every bin's
cells from the map laid out as (N * H * W, C) rows (padded cells read an extra row of -inf) and
taking `argmax`; the output is the winners' values. The backward pass (a small
`torch.autograd.Function`) finds the winners again and `scatter_add_`s each output's gradient
to its winner, as Fast R-CNN's backward does, into one buffer.
RoIs are grouped by the shape of their largest bin, so only bins one cell smaller than their
RoI's largest are padded. An empty bin points at an extra row of zeros.
"""
import math

import torch

from .roi_align import _check_inputs, chunk_slices


def round_half_away(values):
    """Round halves away from zero, as C's round() does (torch.round rounds halves to even)."""
    return torch.sign(values) * torch.floor(values.abs() + 0.5)


def pool_bins(start, end, pooled, limit):
    """Cell ranges [lo, hi) of the bins along one axis: start, end (K,) -> lo, hi (K, pooled)."""
    roi_size = (end - start + 1).clamp(min=1)  # (K,) the inclusive "+1" count of Fast R-CNN
    bin_size = roi_size / pooled  # (K,) float
    steps = torch.arange(pooled, dtype=bin_size.dtype, device=bin_size.device)  # (pooled,)
    lo = torch.floor(steps[None] * bin_size[:, None]).long() + start[:, None]  # (K, pooled)
    hi = torch.ceil((steps[None] + 1) * bin_size[:, None]).long() + start[:, None]
    return lo.clamp(0, limit), hi.clamp(0, limit)


@torch.no_grad()
def _winners(rows, batch, row_lo, row_hi, col_lo, col_hi, map_size):
    """Row of `rows` holding each bin's maximum, per channel: (G, h, w, C) int64.

    rows (N * H * W + 2, C): the map, then a row of -inf (padding) and a row of 0 (empty bins).
    """
    H, W = map_size
    pad_row, zero_row = rows.shape[0] - 2, rows.shape[0] - 1
    bh = max(int((row_hi - row_lo).max()), 1)
    bw = max(int((col_hi - col_lo).max()), 1)
    r = row_lo[:, :, None] + torch.arange(bh, device=rows.device)  # (G, h, bh)
    c = col_lo[:, :, None] + torch.arange(bw, device=rows.device)  # (G, w, bw)
    valid = ((r < row_hi[:, :, None])[:, :, None, :, None]
             & (c < col_hi[:, :, None])[:, None, :, None, :])  # (G, h, w, bh, bw)
    cell = (batch[:, None, None, None, None] * (H * W) + r[:, :, None, :, None] * W
            + c[:, None, :, None, :])  # (G, h, w, bh, bw)
    cell = torch.where(valid, cell, pad_row).flatten(3)  # (G, h, w, B)
    values = rows.index_select(0, cell.reshape(-1))  # (G * h * w * B, C)
    values = values.reshape(*cell.shape, rows.shape[1])  # (G, h, w, B, C)
    best = values.argmax(dim=3)  # (G, h, w, C) the first maximum in row-major order, as in C
    winner = torch.gather(cell, 3, best)  # (G, h, w, C)
    empty = ~valid.flatten(3).any(dim=3)  # (G, h, w) bins that fell off the map
    return torch.where(empty[..., None], zero_row, winner)


def _pool_plan(rois, size, spatial_scale, map_shape):
    """Per-RoI bin ranges and the chunks of RoI indices to process them in: (ranges, [idx, ...])."""
    (h, w), (C, H, W) = size, map_shape
    corners = round_half_away(rois[:, 1:] * spatial_scale).long()  # (K, 4) cells, inclusive
    row_lo, row_hi = pool_bins(corners[:, 1], corners[:, 3], h, H)  # (K, h)
    col_lo, col_hi = pool_bins(corners[:, 0], corners[:, 2], w, W)  # (K, w)
    K = len(rois)
    bin_h = (row_hi - row_lo).amax(1, keepdim=True) if K else row_lo.new_zeros((0, 1))  # (K, 1)
    bin_w = (col_hi - col_lo).amax(1, keepdim=True) if K else col_lo.new_zeros((0, 1))
    bin_shape = torch.cat([bin_h, bin_w], 1).clamp(min=1)  # (K, 2) the RoI's largest bin
    chunks = []
    for bh, bw in (torch.unique(bin_shape, dim=0).tolist() if K else []):  # groups of one bin shape
        members = torch.nonzero((bin_shape[:, 0] == bh) & (bin_shape[:, 1] == bw)).squeeze(1)
        chunks += [members[part] for part in chunk_slices(len(members), h * w * bh * bw * C)]
    return (row_lo, row_hi, col_lo, col_hi), chunks


def _padded_rows(features):
    """(N * H * W + 2, C): the map, one row per cell, then a row of -inf and a row of 0."""
    N, C, H, W = features.shape
    return torch.cat([features.permute(0, 2, 3, 1).reshape(N * H * W, C),
                      features.new_full((1, C), -math.inf), features.new_zeros((1, C))])


class _RoIPool(torch.autograd.Function):
    """Forward: find each bin's winner, gather it. Backward: find the winners again (cheaper in
    memory than keeping K x C x h x w indices) and add each output's gradient to its winner."""

    @staticmethod
    def forward(ctx, features, rois, h, w, spatial_scale):
        N, C, H, W = features.shape
        rows = _padded_rows(features)
        ranges, chunks = _pool_plan(rois, (h, w), spatial_scale, (C, H, W))
        row_lo, row_hi, col_lo, col_hi = ranges
        out = features.new_zeros((len(rois), C, h, w))
        for idx in chunks:
            winner = _winners(rows, rois[idx, 0].long(), row_lo[idx], row_hi[idx], col_lo[idx],
                              col_hi[idx], (H, W))  # (G, h, w, C)
            best = torch.gather(rows, 0, winner.reshape(-1, C)).reshape(winner.shape)  # (G,h,w,C)
            out[idx] = best.permute(0, 3, 1, 2)
        ctx.save_for_backward(features, rois)
        ctx.args = (h, w, spatial_scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        features, rois = ctx.saved_tensors
        h, w, spatial_scale = ctx.args
        N, C, H, W = features.shape
        rows = _padded_rows(features)
        ranges, chunks = _pool_plan(rois, (h, w), spatial_scale, (C, H, W))
        row_lo, row_hi, col_lo, col_hi = ranges
        grad_rows = grad_out.new_zeros(rows.shape)
        for idx in chunks:
            winner = _winners(rows, rois[idx, 0].long(), row_lo[idx], row_hi[idx], col_lo[idx],
                              col_hi[idx], (H, W))  # (G, h, w, C)
            grad = grad_out[idx].permute(0, 2, 3, 1).reshape(-1, C)  # (G * h * w, C)
            grad_rows.scatter_add_(0, winner.reshape(-1, C), grad)
        grad_features = grad_rows[:N * H * W].reshape(N, H, W, C).permute(0, 3, 1, 2)
        return grad_features, None, None, None, None


def roi_pool(features, rois, output_size, spatial_scale):
    """Torch twin of `mrcnn_edu.reference.roi_pool.roi_pool`: same contract.

    features (N, C, H, W) on any device, float32 or float64; rois (K, 5) on the same device.
    Returns (K, C, h, w), differentiable with respect to features: each output's gradient goes
    to the cell that won its bin (the first maximum in row-major order, as in torchvision).
    """
    features, rois, h, w = _check_inputs(features, rois, output_size)
    return _RoIPool.apply(features, rois.detach(), h, w, float(spatial_scale))
