"""Solution of lesson 05's "your turn": the FPN level that pools each RoI."""
import numpy as np


def assign_fpn_levels(boxes, k_min=2, k_max=5, canonical_size=224, canonical_level=4):
    """(K,) int64 levels of boxes (K, 4): floor(k0 + log2(sqrt(w h) / 224) + 1e-6), clamped."""
    widths = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)  # (K,)
    heights = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    scale = np.sqrt(widths * heights)  # (K,) side of the square of the same area
    with np.errstate(divide="ignore"):  # a zero-area box: log2(0) = -inf, clamped to k_min below
        # the 1e-6 keeps a box of exactly 224 * 2**j on level k0 + j despite rounding in log2
        levels = np.floor(canonical_level + np.log2(scale / canonical_size) + 1e-6)  # (K,)
    return np.clip(levels, k_min, k_max).astype(np.int64)
