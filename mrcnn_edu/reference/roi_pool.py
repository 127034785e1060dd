"""Lesson 06: RoIPool, the Fast R-CNN layer that RoIAlign replaced.

Shape legend: N images, C channels, H x W feature map, K RoIs, h x w output bins.
RoIs are (K, 5) rows [batch_index, x1, y1, x2, y2] in input-image pixels.

The semantics are torchvision's `roi_pool` kernel, exactly, with its two quantisations:

    x1' = round(x1 * spatial_scale)            # round half away from zero (C's std::round)
                                               # (all geometry in the map's dtype, as in C++)
    roi_w = max(x2' - x1' + 1, 1)              # cells counted inclusively: the old "+1"
    bin_w = roi_w / w                          # a float
    bin pw covers cells [x1' + floor(pw * bin_w), x1' + ceil((pw + 1) * bin_w)), clipped to [0, W]
    value = max over the bin's cells; an empty bin is 0

The "+1" is Fast R-CNN's inclusive pixel count, kept here because this layer is shown as it was;
everywhere else in the project width = x2 - x1.
"""
import math

import numba
import numpy as np

from .roi_align import _check_inputs


@numba.njit(cache=True)
def round_half_away(value):
    """Round to the nearest integer, halves away from zero (C's round, not numpy's)."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


@numba.njit(cache=True)
def roi_pool_bins(start, end, pooled, limit, single=False):
    """Cell ranges [lo, hi) of the `pooled` bins along one axis, clipped to [0, limit].

    `single`: compute the bin edges in float32, as the kernel does for float32 maps (it works in
    the map's precision): 7 * (58 / 7) is 58.0 in float32 but 58.00000000000001 in float64, where
    the last of 7 bins over 58 cells would reach one cell further.
    """
    roi_size = max(end - start + 1, 1)
    bin_size = roi_size / pooled
    bin_size32 = np.float32(roi_size) / np.float32(pooled)
    lo = np.zeros(pooled, np.int64)
    hi = np.zeros(pooled, np.int64)
    for p in range(pooled):
        if single:
            first, last = np.float32(p) * bin_size32, np.float32(p + 1) * bin_size32
        else:
            first, last = p * bin_size, (p + 1) * bin_size
        lo[p] = min(max(int(math.floor(first)) + start, 0), limit)
        hi[p] = min(max(int(math.ceil(last)) + start, 0), limit)
    return lo, hi


@numba.njit(cache=True, parallel=True)
def _roi_pool_kernel(features, rois, pooled_h, pooled_w, spatial_scale, single):
    _, C, H, W = features.shape
    K = rois.shape[0]
    out = np.zeros((K, C, pooled_h, pooled_w), np.float64)
    for k in numba.prange(K):
        b = int(rois[k, 0])
        corners = np.zeros(4, np.int64)  # x1, y1, x2, y2 in cells
        for i in range(4):  # scaled in the map's precision, as the kernel does
            scaled = (np.float32(rois[k, i + 1]) * np.float32(spatial_scale) if single
                      else rois[k, i + 1] * spatial_scale)
            corners[i] = int(round_half_away(scaled))
        x1, y1, x2, y2 = corners[0], corners[1], corners[2], corners[3]
        row_lo, row_hi = roi_pool_bins(y1, y2, pooled_h, H, single)
        col_lo, col_hi = roi_pool_bins(x1, x2, pooled_w, W, single)
        for c in range(C):
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    if row_hi[ph] <= row_lo[ph] or col_hi[pw] <= col_lo[pw]:
                        continue  # the bin fell off the map: 0
                    best = -np.inf
                    for i in range(row_lo[ph], row_hi[ph]):
                        for j in range(col_lo[pw], col_hi[pw]):
                            best = max(best, features[b, c, i, j])
                    out[k, c, ph, pw] = best
    return out


def roi_pool(features, rois, output_size, spatial_scale):
    """RoIPool: the max over each of h x w quantised bins of each RoI.

    features (N, C, H, W) float; rois (K, 5) [batch_index, x1, y1, x2, y2] in image pixels;
    output_size int or (h, w); spatial_scale = 1 / stride. Returns (K, C, h, w) in features' dtype.
    Rules (torchvision's kernel): see the module docstring.
    """
    features, rois, h, w = _check_inputs(features, rois, output_size)
    single = features.dtype == np.float32  # the kernel's geometry is in the map's precision
    out = _roi_pool_kernel(features, rois, h, w, float(spatial_scale), single)
    return out.astype(features.dtype)
