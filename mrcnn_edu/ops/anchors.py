"""Anchors (lesson 02_anchors), torch twin of `mrcnn_edu.reference.anchors`.

Shape legend: A anchors per cell, (h, w) = (ceil(H / s), ceil(W / s)) cells of a level.
Same conventions as the reference: aspect ratio = h / w, area = size**2, no rounding, centres at
(j * s, i * s), location-major order.

Reference -> twin:
    check_anchor_config, grid_shape -> imported from the reference (pure Python, no arrays)
    base_anchors                    -> base_anchors (plus dtype and device)
    generate_anchors                -> generate_anchors (plus keyword-only dtype and device)
"""
import torch

from ..reference.anchors import check_anchor_config, grid_shape


def base_anchors(size, aspect_ratios, dtype=torch.float32, device=None):
    """Torch twin of `mrcnn_edu.reference.anchors.base_anchors`: (A, 4) centred on (0, 0)."""
    h_ratios = torch.tensor(aspect_ratios, dtype=torch.float64, device=device).sqrt()  # (A,)
    ws, hs = size / h_ratios, size * h_ratios  # (A,), (A,)
    # computed in float64 and cast once, so float32 anchors are the float64 ones rounded
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).to(dtype)  # (A, 4)


def generate_anchors(image_size, strides=(4, 8, 16, 32, 64), sizes=(32, 64, 128, 256, 512),
                     aspect_ratios=(0.5, 1.0, 2.0), *, dtype=torch.float32, device=None):
    """Torch twin of `mrcnn_edu.reference.anchors.generate_anchors`: same contract, plus the
    keyword-only `dtype` and `device` of the returned tensors (there is no input tensor to take
    them from). Returns a list with one (ceil(H/s) * ceil(W/s) * A, 4) tensor per level."""
    check_anchor_config(image_size, strides, sizes, aspect_ratios)
    levels = []
    for stride, size in zip(strides, sizes):  # a loop over the ~5 levels
        rows, cols = grid_shape(image_size, stride)
        ys = torch.arange(rows, dtype=torch.float64, device=device) * stride  # (h,)
        xs = torch.arange(cols, dtype=torch.float64, device=device) * stride  # (w,)
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")  # (h, w), (h, w)
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)  # (h*w, 1, 4)
        cell = base_anchors(size, aspect_ratios, torch.float64, device)[None]  # (1, A, 4)
        levels.append((shifts + cell).reshape(-1, 4).to(dtype))  # (h*w*A, 4) location-major
    return levels
