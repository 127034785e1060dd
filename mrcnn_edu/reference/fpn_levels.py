"""Lesson 05: which FPN level pools each RoI (the FPN paper's equation 1).

Shape legend: K RoIs. Boxes are float (x1, y1, x2, y2) in input-image pixels, width = x2 - x1.

    k = floor(k0 + log2(sqrt(w * h) / 224) + 1e-6),  clamped to [k_min, k_max]

with k0 = 4 and a canonical size of 224 (the ImageNet crop): a 224 x 224 box pools from P4,
a 112 x 112 box from P3, a 448 x 448 box from P5. This is torchvision's `LevelMapper`; the 1e-6
keeps a box of exactly 224 * 2**j on level 4 + j despite log2's rounding. The FPN paper writes
k0 = 4 (Lin et al. 2017, eq. 1); write-ups that use k0 = 5 or a constant other than 224 count
levels differently (k0 = 5 with levels numbered from P2 = 1, say): only the pairing of a box size
with a stride matters, and here 224 px <-> P4 (stride 16).
"""
import numpy as np


def assign_fpn_levels(boxes, k_min=2, k_max=5, canonical_size=224, canonical_level=4):
    """FPN level of each box, an int64 in [k_min, k_max].

    boxes (K, 4) xyxy float. Returns (K,) int64:
    floor(canonical_level + log2(sqrt(w * h) / canonical_size) + 1e-6), clamped.
    Negative widths or heights count as 0; a zero-area box goes to k_min.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {boxes.shape}")
    if k_min > k_max:
        raise ValueError(f"k_min must be <= k_max, got {k_min} > {k_max}")
    boxes = boxes.astype(np.float64)
    widths = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)  # (K,)
    heights = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)  # (K,)
    scale = np.sqrt(widths * heights)  # (K,) the side of the square of the same area
    with np.errstate(divide="ignore"):  # log2(0) = -inf lands on k_min after the clip
        levels = np.floor(canonical_level + np.log2(scale / canonical_size) + 1e-6)  # (K,)
    return np.clip(levels, k_min, k_max).astype(np.int64)
