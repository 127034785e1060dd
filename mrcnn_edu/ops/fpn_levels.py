"""Lesson 05: torch twin of `mrcnn_edu.reference.fpn_levels` (which FPN level pools each RoI).

Shape legend: K RoIs. Boxes are float (x1, y1, x2, y2) in input-image pixels.

Reference -> twin: assign_fpn_levels -> assign_fpn_levels.
"""
import torch


def assign_fpn_levels(boxes, k_min=2, k_max=5, canonical_size=224, canonical_level=4):
    """Torch twin of `mrcnn_edu.reference.fpn_levels.assign_fpn_levels`: same contract.

    boxes (K, 4) float tensor on any device. Returns (K,) int64 on the same device.
    The arithmetic runs in float64 so float32 boxes land on the same level as the reference.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {tuple(boxes.shape)}")
    if k_min > k_max:
        raise ValueError(f"k_min must be <= k_max, got {k_min} > {k_max}")
    boxes = boxes.to(torch.float64)
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)  # (K,)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)  # (K,)
    scale = torch.sqrt(widths * heights)  # (K,)
    levels = torch.floor(canonical_level + torch.log2(scale / canonical_size) + 1e-6)  # (K,)
    return levels.clamp(k_min, k_max).to(torch.int64)
