"""Lesson 06: torch twin of `mrcnn_edu.reference.roi_align` (RoIAlign, multi-scale RoIAlign).

Shape legend: N images, C channels, H x W feature map, K RoIs, h x w output bins,
gh x gw samples per bin, S samples in a chunk. RoIs are (K, 5) [batch_index, x1, y1, x2, y2].

Vectorised, no loop over RoIs: RoIs are grouped by their sample counts (gh, gw) -- one group when
sampling_ratio > 0 -- and each group is cut into chunks of bounded size. A chunk computes every
sample's four neighbours and weights at once, gathers the neighbours' C-vectors from the map laid
out as (N * H * W, C) rows with `index_select`, and averages. The backward pass runs the same
chunks and hands each sample's gradient to its four cells with `index_add_` into one buffer
(a small `torch.autograd.Function`), so memory stays at the output plus a few chunks.
"""
import torch

from .fpn_levels import assign_fpn_levels

CHUNK_ELEMENTS = 1 << 24  # values gathered at once: 64 MB of float32 per temporary


def _output_hw(output_size):
    if isinstance(output_size, int):
        return output_size, output_size
    h, w = output_size
    return int(h), int(w)


def _check_inputs(features, rois, output_size):
    if features.ndim != 4:
        raise ValueError(f"features must have shape (N, C, H, W), got {tuple(features.shape)}")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must have shape (K, 5) [batch_index, x1, y1, x2, y2], "
                         f"got {tuple(rois.shape)}")
    h, w = _output_hw(output_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    if len(rois):
        lo, hi = (v.item() for v in torch.aminmax(rois[:, 0]))  # on CUDA: an error, not an assert
        if lo < 0 or hi >= features.shape[0]:
            raise ValueError(f"rois[:, 0] must be batch indices in [0, {features.shape[0]}), "
                             f"got range [{lo}, {hi}]")
    if not features.is_floating_point():  # masks arrive as uint8 or bool
        features = features.to(torch.float64)
    return features, rois.to(features.dtype), h, w


def chunk_slices(count, per_item, budget=None):
    """Slices cutting `count` items of `per_item` elements each into chunks of <= budget elements
    (CHUNK_ELEMENTS by default); an item bigger than the budget still gets a chunk of its own."""
    step = max(1, (budget or CHUNK_ELEMENTS) // max(per_item, 1))
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def axis_samples(start, bin_size, pooled, grid, limit):
    """Sample positions along one axis for a group of RoIs sharing `grid` samples per bin.

    start, bin_size (G,) -> (low, high, weight_low, weight_high), each (G, pooled, grid):
    the two cells a sample falls between and their bilinear weights, both 0 beyond [-1, limit].
    """
    bins = torch.arange(pooled, dtype=start.dtype, device=start.device)  # (pooled,)
    steps = torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5  # (grid,)
    pos = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
           + steps[None, None, :] * bin_size[:, None, None] / grid)  # (G, pooled, grid)
    inside = (pos >= -1.0) & (pos <= limit)
    pos = pos.clamp(min=0)
    low = pos.floor().clamp(max=limit - 1)  # past the last cell centre both neighbours are it
    pos = torch.where(low >= limit - 1, low, pos)
    frac = pos - low
    high = (low + 1).clamp(max=limit - 1)
    weight_low = (1.0 - frac) * inside
    weight_high = frac * inside
    return low.long(), high.long(), weight_low, weight_high


def _sample_plan(rows_shape, batch, start_y, start_x, bin_h, bin_w, gh, gw, size):
    """Where the samples of G RoIs sharing (gh, gw) read: index, weight (4, G, h, gh, w, gw).

    index: rows of the (N * H * W, C) map read by each sample's four neighbours (low/high row x
    low/high column); weight: their bilinear weights, 0 for samples outside the map.
    """
    (H, W), (h, w) = size
    y_low, y_high, wy_low, wy_high = axis_samples(start_y, bin_h, h, gh, H)  # (G, h, gh)
    x_low, x_high, wx_low, wx_high = axis_samples(start_x, bin_w, w, gw, W)  # (G, w, gw)
    ys = torch.stack([y_low, y_low, y_high, y_high])[:, :, :, :, None, None]  # (4, G, h, gh, 1, 1)
    xs = torch.stack([x_low, x_high, x_low, x_high])[:, :, None, None]  # (4, G, 1, 1, w, gw)
    wy = torch.stack([wy_low, wy_low, wy_high, wy_high])[:, :, :, :, None, None]
    wx = torch.stack([wx_low, wx_high, wx_low, wx_high])[:, :, None, None]
    index = batch[:, None, None, None, None] * (H * W) + ys * W + xs  # (4, G, h, gh, w, gw)
    return index, wy * wx


def _roi_geometry(rois, h, w, spatial_scale, sampling_ratio, aligned):
    """Per-RoI start, bin size and sample counts: a dict of (K,) tensors (the reference's rules)."""
    offset = 0.5 if aligned else 0.0
    boxes = rois[:, 1:] * spatial_scale - offset  # (K, 4) on the map
    roi_w = boxes[:, 2] - boxes[:, 0]  # (K,)
    roi_h = boxes[:, 3] - boxes[:, 1]  # (K,)
    if not aligned:  # the legacy kernel never lets a RoI be thinner than one cell
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full((len(rois),), sampling_ratio, dtype=torch.long, device=rois.device)
        grid_w = grid_h
    else:  # RoIs of no size get no samples
        grid_h = torch.ceil(roi_h / h).long().clamp(min=0)  # (K,)
        grid_w = torch.ceil(roi_w / w).long().clamp(min=0)
    return {"batch": rois[:, 0].long(), "start_y": boxes[:, 1], "start_x": boxes[:, 0],
            "bin_h": roi_h / h, "bin_w": roi_w / w, "grid_h": grid_h, "grid_w": grid_w}


def _chunks(geometry, per_sample):
    """Yield (idx, gh, gw) chunks: RoIs sharing sample counts, <= CHUNK_ELEMENTS values each."""
    grid_h, grid_w = geometry["grid_h"], geometry["grid_w"]
    pairs = torch.stack([grid_h, grid_w], 1)  # (K, 2)
    for gh, gw in (torch.unique(pairs, dim=0).tolist() if len(pairs) else []):  # one if ratio > 0
        if gh == 0 or gw == 0:
            continue  # no samples: the bins stay 0
        members = torch.nonzero((grid_h == gh) & (grid_w == gw)).squeeze(1)  # (G,)
        for part in chunk_slices(len(members), 4 * gh * gw * per_sample):
            yield members[part], gh, gw


class _RoIAlign(torch.autograd.Function):
    """Chunked forward and backward sharing one sampling plan. A custom Function rather than
    autograd through the gather: autograd would keep every chunk's indices and give every chunk
    a gradient the size of the whole map; here the backward adds into one buffer."""

    @staticmethod
    def forward(ctx, features, rois, h, w, spatial_scale, sampling_ratio, aligned):
        N, C, H, W = features.shape
        geometry = _roi_geometry(rois, h, w, spatial_scale, sampling_ratio, aligned)
        rows = features.permute(0, 2, 3, 1).reshape(N * H * W, C)  # (N*H*W, C) one row per cell
        out = features.new_zeros((len(rois), C, h, w))
        for idx, gh, gw in _chunks(geometry, h * w * C):
            g = {k: v[idx] for k, v in geometry.items()}
            index, weight = _sample_plan(rows.shape, g["batch"], g["start_y"], g["start_x"],
                                         g["bin_h"], g["bin_w"], gh, gw, ((H, W), (h, w)))
            values = rows.index_select(0, index.reshape(-1)) * weight.reshape(-1, 1)  # (4S, C)
            total = values.reshape(4, len(idx), h, gh, w, gw, C).sum(dim=(0, 3, 5))  # (G, h, w, C)
            out[idx] = (total / (gh * gw)).permute(0, 3, 1, 2)  # (G, C, h, w)
        ctx.save_for_backward(rois)
        ctx.args = (features.shape, h, w, spatial_scale, sampling_ratio, aligned)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (rois,) = ctx.saved_tensors
        (N, C, H, W), h, w, spatial_scale, sampling_ratio, aligned = ctx.args
        geometry = _roi_geometry(rois, h, w, spatial_scale, sampling_ratio, aligned)
        grad_cells = grad_out.permute(0, 2, 3, 1)  # (K, h, w, C)
        grad_rows = grad_out.new_zeros((N * H * W, C))
        for idx, gh, gw in _chunks(geometry, h * w * C):
            g = {k: v[idx] for k, v in geometry.items()}
            index, weight = _sample_plan(grad_rows.shape, g["batch"], g["start_y"], g["start_x"],
                                         g["bin_h"], g["bin_w"], gh, gw, ((H, W), (h, w)))
            share = grad_cells[idx][None, :, :, None, :, None, :] / (gh * gw)  # (1,G,h,1,w,1,C)
            # every sample hands its bin's gradient to its four cells, weighted as in the forward
            contribution = (share * weight[..., None]).reshape(-1, C)  # (4S, C)
            grad_rows.index_add_(0, index.reshape(-1), contribution)
        grad_features = grad_rows.reshape(N, H, W, C).permute(0, 3, 1, 2)
        return grad_features, None, None, None, None, None, None


def roi_align(features, rois, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    """Torch twin of `mrcnn_edu.reference.roi_align.roi_align`: same contract.

    features (N, C, H, W) on any device, float32 or float64; rois (K, 5) on the same device.
    Returns (K, C, h, w), differentiable with respect to features (not with respect to rois):
    the backward pass is `roi_align_backward` written with `index_add_`, checked by gradcheck.
    Memory: the output plus about four chunks of CHUNK_ELEMENTS values, whatever K is.
    """
    if features.dtype in (torch.float16, torch.bfloat16):
        # Under autocast the maps arrive in half precision, but sample positions in pixels do
        # not survive it (float16 steps are 0.5 px above 512): compute in float32 and return
        # the input's dtype, as torchvision's autocast rule for roi_align does.
        out = roi_align(features.float(), rois.float(), output_size, spatial_scale,
                        sampling_ratio, aligned)
        return out.to(features.dtype)
    features, rois, h, w = _check_inputs(features, rois, output_size)
    return _RoIAlign.apply(features, rois.detach(), h, w, float(spatial_scale),
                           int(sampling_ratio), bool(aligned))


def gather_in_order(parts, order, empty):
    """Concatenate per-chunk results and put row order[i] back at position i: one copy in all."""
    if not parts:
        return empty
    out = torch.cat(parts)  # (K, ...) in chunk order
    order = torch.cat(order)  # (K,)
    return out[torch.argsort(order)]


def multiscale_roi_align(features_by_level, rois, output_size, spatial_scales=None,
                         sampling_ratio=2, aligned=True, k_min=2, k_max=5, canonical_size=224,
                         canonical_level=4):
    """Torch twin of `mrcnn_edu.reference.roi_align.multiscale_roi_align`: same contract.

    Loops over the levels (at most a handful), never over RoIs. Differentiable in every level.
    """
    levels_count = k_max - k_min + 1
    if len(features_by_level) != levels_count:
        raise ValueError(f"features_by_level must hold {levels_count} maps (levels "
                         f"{k_min}..{k_max}), got {len(features_by_level)}")
    if spatial_scales is None:
        spatial_scales = [2.0 ** -k for k in range(k_min, k_max + 1)]
    h, w = _output_hw(output_size)
    C = features_by_level[0].shape[1]
    levels = assign_fpn_levels(rois[:, 1:], k_min, k_max, canonical_size, canonical_level)  # (K,)
    parts, order = [], []
    for i, (feats, scale) in enumerate(zip(features_by_level, spatial_scales)):
        picked = torch.nonzero(levels == k_min + i).squeeze(1)
        if len(picked):
            parts.append(roi_align(feats, rois[picked], (h, w), scale, sampling_ratio, aligned))
            order.append(picked)
    return gather_in_order(parts, order, features_by_level[0].new_zeros((0, C, h, w)))
