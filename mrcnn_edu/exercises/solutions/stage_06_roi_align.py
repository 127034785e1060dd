"""Solutions to lesson 06's "your turn": one bilinear sample, then RoIAlign of one RoI."""
import math

import numpy as np


def bilinear_sample(feature, y, x):
    """One bilinear sample of a (H, W) map at (y, x), with torchvision's edge rules."""
    H, W = feature.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return 0.0  # beyond the one-cell margin around the map: the sample counts as 0
    y, x = max(y, 0.0), max(x, 0.0)  # inside the margin: clamp onto the map
    y_low, x_low = int(y), int(x)
    if y_low >= H - 1:  # on or past the last row's centre: use the last row alone
        y_low = y_high = H - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= W - 1:
        x_low = x_high = W - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low  # distance past the low neighbour
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * feature[y_low, x_low] + hy * lx * feature[y_low, x_high]
            + ly * hx * feature[y_high, x_low] + ly * lx * feature[y_high, x_high])


def roi_align_single(feature, box, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    """RoIAlign of one box on a (C, H, W) map: (C, h, w), each bin the mean of its samples."""
    C = feature.shape[0]
    h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (v * spatial_scale - offset for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # the legacy mode never lets a RoI be thinner than one cell
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_w, bin_h = roi_w / w, roi_h / h
    grid_w = sampling_ratio if sampling_ratio > 0 else max(math.ceil(bin_w), 0)
    grid_h = sampling_ratio if sampling_ratio > 0 else max(math.ceil(bin_h), 0)
    out = np.zeros((C, h, w))
    for ph in range(h):
        for pw in range(w):
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    for c in range(C):
                        out[c, ph, pw] += bilinear_sample(feature[c], y, x)
            out[:, ph, pw] /= max(grid_h * grid_w, 1)
    return out
