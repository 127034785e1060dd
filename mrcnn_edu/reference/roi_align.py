"""Lesson 06: RoIAlign, its backward pass, and multi-scale RoIAlign over FPN levels.

Shape legend: N images, C channels, H x W feature map, K RoIs, h x w output bins (output_size),
gh x gw bilinear samples per bin. RoIs are (K, 5) rows [batch_index, x1, y1, x2, y2] in
input-image pixels; `spatial_scale` (1 / stride) takes them onto the map.

The semantics are torchvision's `roi_align` kernel, exactly:

    offset = 0.5 if aligned else 0             # aligned: a map cell's centre sits at j + 0.5
    x1' = x1 * spatial_scale - offset          # same for y1, x2, y2
    roi_w = x2' - x1'  (aligned=False: max(roi_w, 1))
    bin_w = roi_w / w
    gw = sampling_ratio if sampling_ratio > 0 else ceil(roi_w / w)     # per RoI
    sample x = x1' + pw * bin_w + (ix + 0.5) * bin_w / gw,   ix = 0 .. gw - 1
    a sample with y < -1 or y > H or x < -1 or x > W is 0; otherwise clamp a negative
    coordinate to 0, interpolate bilinearly, and use the last row/column past the edge.
    bin value = (sum of its samples) / max(gh * gw, 1)

Naming: `y_low`/`y_high` are the two rows a sample falls between, `ly` its distance past y_low.
"""
import math

import numba
import numpy as np

from .fpn_levels import assign_fpn_levels


def _output_hw(output_size):
    """(h, w) from an int or a pair."""
    if isinstance(output_size, (int, np.integer)):
        return int(output_size), int(output_size)
    h, w = output_size
    return int(h), int(w)


def _check_inputs(features, rois, output_size):
    features = np.asarray(features)
    if features.dtype.kind != "f":  # masks arrive as uint8 or bool
        features = features.astype(np.float64)
    rois = np.asarray(rois)
    if features.ndim != 4:
        raise ValueError(f"features must have shape (N, C, H, W), got {features.shape}")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must have shape (K, 5) [batch_index, x1, y1, x2, y2], "
                         f"got {rois.shape}")
    h, w = _output_hw(output_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    if len(rois) and (rois[:, 0].min() < 0 or rois[:, 0].max() >= features.shape[0]):
        raise ValueError(f"rois[:, 0] must be batch indices in [0, {features.shape[0]}), "
                         f"got range [{rois[:, 0].min()}, {rois[:, 0].max()}]")
    return features, rois.astype(np.float64), h, w


@numba.njit(cache=True)
def roi_axis_samples(start, bin_size, pooled, grid, limit):
    """Sample positions along one axis of one RoI: (low, high, frac, inside), each (pooled * grid,).

    Sample s = p * grid + i sits at start + p * bin_size + (i + 0.5) * bin_size / grid; it reads
    cells low and high with weights 1 - frac and frac. `inside` is False beyond [-1, limit].
    """
    n = pooled * grid
    low = np.zeros(n, np.int64)
    high = np.zeros(n, np.int64)
    frac = np.zeros(n, np.float64)
    inside = np.zeros(n, np.bool_)
    for p in range(pooled):
        for i in range(grid):
            s = p * grid + i
            y = start + p * bin_size + (i + 0.5) * bin_size / grid
            if y < -1.0 or y > limit:
                continue  # outside the map and its one-cell margin: the sample counts as 0
            inside[s] = True
            if y <= 0:
                y = 0.0
            y_low = int(y)
            if y_low >= limit - 1:  # on or past the last cell centre: no neighbour below
                y_low = limit - 1
                y_high = limit - 1
                y = float(y_low)
            else:
                y_high = y_low + 1
            low[s] = y_low
            high[s] = y_high
            frac[s] = y - y_low
    return low, high, frac, inside


@numba.njit(cache=True)
def roi_geometry(roi, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned):
    """(start_y, start_x, bin_h, bin_w, grid_h, grid_w) of one RoI row [b, x1, y1, x2, y2]."""
    offset = 0.5 if aligned else 0.0
    start_x = roi[1] * spatial_scale - offset
    start_y = roi[2] * spatial_scale - offset
    roi_w = roi[3] * spatial_scale - offset - start_x
    roi_h = roi[4] * spatial_scale - offset - start_y
    if not aligned:  # the legacy kernel never lets a RoI be thinner than one cell
        roi_w = max(roi_w, 1.0)
        roi_h = max(roi_h, 1.0)
    bin_h = roi_h / pooled_h
    bin_w = roi_w / pooled_w
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / pooled_h))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / pooled_w))
    return start_y, start_x, bin_h, bin_w, max(grid_h, 0), max(grid_w, 0)


@numba.njit(cache=True, parallel=True)
def channels_last(features):
    """(N, C, H, W) -> (N, H, W, C) copy, so that a cell's C values are contiguous."""
    N, C, H, W = features.shape
    out = np.empty((N, H, W, C), features.dtype)
    for row in numba.prange(N * H):
        n, y = row // H, row % H
        for c in range(C):
            for x in range(W):
                out[n, y, x, c] = features[n, c, y, x]
    return out


@numba.njit(cache=True, parallel=True)
def _roi_align_kernel(cells, rois, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned):
    _, H, W, C = cells.shape  # channels last: the four neighbours of a sample are C-vectors
    K = rois.shape[0]
    out = np.zeros((K, C, pooled_h, pooled_w), np.float64)
    for k in numba.prange(K):
        b = int(rois[k, 0])
        start_y, start_x, bin_h, bin_w, gh, gw = roi_geometry(
            rois[k], spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned)
        count = max(gh * gw, 1)
        y_low, y_high, ly, y_in = roi_axis_samples(start_y, bin_h, pooled_h, gh, H)
        x_low, x_high, lx, x_in = roi_axis_samples(start_x, bin_w, pooled_w, gw, W)
        total = np.zeros(C, np.float64)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                total[:] = 0.0
                for sy in range(ph * gh, (ph + 1) * gh):
                    for sx in range(pw * gw, (pw + 1) * gw):
                        if not (y_in[sy] and x_in[sx]):
                            continue  # outside the map's one-cell margin: the sample is 0
                        hy, hx = 1.0 - ly[sy], 1.0 - lx[sx]
                        w1, w2, w3, w4 = hy * hx, hy * lx[sx], ly[sy] * hx, ly[sy] * lx[sx]
                        v1 = cells[b, y_low[sy], x_low[sx]]  # (C,)
                        v2 = cells[b, y_low[sy], x_high[sx]]
                        v3 = cells[b, y_high[sy], x_low[sx]]
                        v4 = cells[b, y_high[sy], x_high[sx]]
                        for c in range(C):
                            total[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c]
                for c in range(C):
                    out[k, c, ph, pw] = total[c] / count
    return out


def roi_align(features, rois, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    """RoIAlign: the mean of bilinear samples over each of h x w bins of each RoI.

    features (N, C, H, W) float; rois (K, 5) [batch_index, x1, y1, x2, y2] in image pixels;
    output_size int or (h, w); spatial_scale = 1 / stride. Returns (K, C, h, w) in features' dtype.
    Rules (torchvision's kernel): see the module docstring. Runs on all cores (prange over RoIs).
    """
    features, rois, h, w = _check_inputs(features, rois, output_size)
    out = _roi_align_kernel(channels_last(features), rois, h, w, float(spatial_scale),
                            int(sampling_ratio), bool(aligned))
    return out.astype(features.dtype)


@numba.njit(cache=True, parallel=True)
def _roi_align_backward_kernel(grad_cells, rois, N, H, W, spatial_scale, sampling_ratio, aligned,
                               blocks):
    K, pooled_h, pooled_w, C = grad_cells.shape  # dL/d(output), channels last
    grad = np.zeros((N, H, W, C), np.float64)
    for block in numba.prange(blocks):  # a thread owns a block of channels: no two add to one cell
        c0, c1 = block * C // blocks, (block + 1) * C // blocks
        for k in range(K):
            b = int(rois[k, 0])
            start_y, start_x, bin_h, bin_w, gh, gw = roi_geometry(
                rois[k], spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned)
            count = max(gh * gw, 1)
            y_low, y_high, ly, y_in = roi_axis_samples(start_y, bin_h, pooled_h, gh, H)
            x_low, x_high, lx, x_in = roi_axis_samples(start_x, bin_w, pooled_w, gw, W)
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    g = grad_cells[k, ph, pw]  # (C,)
                    for sy in range(ph * gh, (ph + 1) * gh):
                        for sx in range(pw * gw, (pw + 1) * gw):
                            if not (y_in[sy] and x_in[sx]):
                                continue
                            hy, hx = 1.0 - ly[sy], 1.0 - lx[sx]
                            # the sample was a weighted sum of four cells: each gets its weight
                            w1, w2, w3, w4 = hy * hx, hy * lx[sx], ly[sy] * hx, ly[sy] * lx[sx]
                            for c in range(c0, c1):
                                share = g[c] / count
                                grad[b, y_low[sy], x_low[sx], c] += share * w1
                                grad[b, y_low[sy], x_high[sx], c] += share * w2
                                grad[b, y_high[sy], x_low[sx], c] += share * w3
                                grad[b, y_high[sy], x_high[sx], c] += share * w4
    return grad


@numba.njit(cache=True, parallel=True)
def channels_first(cells, out):
    """Write (N, H, W, C) `cells` into the preallocated (N, C, H, W) `out`, converting dtype."""
    N, H, W, C = cells.shape
    for row in numba.prange(N * C):
        n, c = row // C, row % C
        for y in range(H):
            for x in range(W):
                out[n, c, y, x] = cells[n, y, x, c]
    return out


def roi_align_backward(grad_output, rois, input_shape, spatial_scale, sampling_ratio=-1,
                       aligned=True):
    """Gradient of `roi_align` with respect to its features.

    grad_output (K, C, h, w) = dL/d(output); input_shape (N, C, H, W). Returns (N, C, H, W):
    every bilinear sample hands grad / (gh * gw) to its four cells, weighted as in the forward.
    """
    grad_output = np.asarray(grad_output)
    N, C, H, W = (int(s) for s in input_shape)
    if grad_output.ndim != 4 or grad_output.shape[1] != C:
        raise ValueError(f"grad_output must have shape (K, {C}, h, w), got {grad_output.shape}")
    _, rois, _, _ = _check_inputs(np.empty((N, C, 1, 1)), rois, grad_output.shape[2:])
    if len(rois) != len(grad_output):
        raise ValueError(f"grad_output has {len(grad_output)} rows but rois has {len(rois)}")
    grad_cells = np.ascontiguousarray(grad_output.transpose(0, 2, 3, 1), np.float64)  # (K, h, w, C)
    grad = _roi_align_backward_kernel(grad_cells, rois, N, H, W, float(spatial_scale),
                                      int(sampling_ratio), bool(aligned),
                                      min(C, 4 * numba.get_num_threads()))  # (N, H, W, C)
    dtype = grad_output.dtype if grad_output.dtype.kind == "f" else np.float64
    return channels_first(grad, np.empty((N, C, H, W), dtype))


def multiscale_roi_align(features_by_level, rois, output_size, spatial_scales=None,
                         sampling_ratio=2, aligned=True, k_min=2, k_max=5, canonical_size=224,
                         canonical_level=4):
    """RoIAlign of each RoI on the FPN level `assign_fpn_levels` gives it.

    features_by_level: list of (N, C, H_l, W_l) maps for levels k_min .. k_max (P2 .. P5), in that
    order; spatial_scales defaults to [1 / 2**k for k in k_min .. k_max]. rois (K, 5) as in
    `roi_align`. Returns (K, C, h, w) in the order of `rois`.
    Defaults: sampling_ratio=2 as in torchvision's MultiScaleRoIAlign, but aligned=True (this
    project's convention; torchvision's MultiScaleRoIAlign uses aligned=False).
    """
    levels_count = k_max - k_min + 1
    if len(features_by_level) != levels_count:
        raise ValueError(f"features_by_level must hold {levels_count} maps (levels "
                         f"{k_min}..{k_max}), got {len(features_by_level)}")
    if spatial_scales is None:
        spatial_scales = [2.0 ** -k for k in range(k_min, k_max + 1)]
    rois = np.asarray(rois)
    h, w = _output_hw(output_size)
    first = np.asarray(features_by_level[0])
    out = np.zeros((len(rois), first.shape[1], h, w), first.dtype)  # (K, C, h, w)
    levels = assign_fpn_levels(rois[:, 1:].reshape(-1, 4), k_min, k_max, canonical_size,
                               canonical_level)  # (K,)
    for i, (feats, scale) in enumerate(zip(features_by_level, spatial_scales)):
        picked = np.flatnonzero(levels == k_min + i)
        if len(picked):
            out[picked] = roi_align(feats, rois[picked], (h, w), scale, sampling_ratio, aligned)
    return out
