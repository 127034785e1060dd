"""Lesson 06: torch twin of `mrcnn_edu.reference.roi_align` (RoIAlign, multi-scale RoIAlign).

Shape legend: N images, C channels, H x W feature map, K RoIs, h x w output bins,
gh x gw samples per bin, G RoIs in a group, L = 4 gh gw (row, weight) pairs in a bin's bag.
RoIs are (K, 5) [batch_index, x1, y1, x2, y2].

Every output bin is a weighted sum of map cells: each of its gh x gw bilinear samples reads four
cells, with the bilinear weights divided by gh * gw. So a bin is a *bag* of (row, weight) pairs
over the map laid out as (N * H * W, C) rows, and RoIAlign is
`torch.nn.functional.embedding_bag(..., mode="sum", per_sample_weights=...)`: a compiled
gather-and-sum that never materialises the gathered rows, whose backward (compiled too) hands
each bin's gradient back to its cells with the same weights. `sample_bags` builds the bags --
all of RoIAlign's geometry -- with no loop over RoIs: one group when sampling_ratio > 0, one
group per (gh, gw) when sampling is adaptive (bags of one group have one size). On a GPU the
adaptive groups are padded to powers of two (`pad_groups`): fewer, bigger calls, the same sums.
"""
import torch
import torch.nn.functional as F

from .fpn_levels import assign_fpn_levels

CHUNK_ELEMENTS = 1 << 23  # (row, weight) pairs in one bag table: 64 MB of int64 + 32-64 MB of weights
GPU_CHUNK_ELEMENTS = 1 << 24  # on a GPU, fewer and bigger tables: each call waits for the host
HALF = (torch.float16, torch.bfloat16)


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


def as_rows(features):
    """(N, C, H, W) -> (N * H * W, C): one contiguous row per map cell, the table the bags
    index. A view when the map is channels_last, else one copy. Contiguous matters: for N = 1
    the plain reshape is a view whose row holds C values H * W apart, and gathering such rows
    was 3.6x slower (0.65 against 0.18 s for 512 RoIs at 14 x 14 on a 256-channel map)."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).contiguous()


def size_chunks(sizes, budget=None):
    """Consecutive slices of items of `sizes` (K,) elements, each slice <= budget elements
    (CHUNK_ELEMENTS by default); an item bigger than the budget gets a slice of its own."""
    budget = budget or CHUNK_ELEMENTS
    slices, start, total = [], 0, 0
    for i, size in enumerate(sizes.tolist()):
        if i > start and total + size > budget:
            slices.append(slice(start, i))
            start, total = i, 0
        total += size
    return slices + ([slice(start, len(sizes))] if start < len(sizes) else [])


def divide(values, n):
    """values / n rounded as one IEEE division on every device, as the C++ and CUDA kernels
    divide. CUDA turns a division by a Python number into a multiplication by its reciprocal,
    which can round to the other side of an integer (in float32 6 / 7 * 7 is 6, but
    6 * (1 / 7) * 7 is just above it), and a ceil or floor then picks another cell or sample
    count; a divisor tensor of the same shape keeps it one division."""
    return values / torch.full_like(values, n)


def _roi_geometry(rois, h, w, spatial_scale, sampling_ratio, aligned, map_size):
    """Per-RoI start, bin size, sample counts and map size: a dict of (K,) tensors (the
    reference's rules). spatial_scale and map_size's (H, W) are numbers, or (K,) tensors when
    the RoIs sit on different maps (the FPN levels)."""
    offset = 0.5 if aligned else 0.0
    scale = spatial_scale[:, None] if torch.is_tensor(spatial_scale) else spatial_scale
    boxes = rois[:, 1:] * scale - offset  # (K, 4) on the map
    roi_w = boxes[:, 2] - boxes[:, 0]  # (K,)
    roi_h = boxes[:, 3] - boxes[:, 1]  # (K,)
    if not aligned:  # the legacy kernel never lets a RoI be thinner than one cell
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h, bin_w = divide(roi_h, h), divide(roi_w, w)  # (K,)
    if sampling_ratio > 0:
        grid_h = torch.full((len(rois),), sampling_ratio, dtype=torch.long, device=rois.device)
        grid_w = grid_h
    else:  # ceil(bin size); RoIs of no size get no samples
        grid_h = torch.ceil(bin_h).long().clamp(min=0)  # (K,)
        grid_w = torch.ceil(bin_w).long().clamp(min=0)
    height, width = (torch.as_tensor(n, device=rois.device).expand(len(rois))
                     for n in map_size)  # (K,) each RoI's map
    return {"batch": rois[:, 0].long(), "start_y": boxes[:, 1], "start_x": boxes[:, 0],
            "bin_h": bin_h, "bin_w": bin_w, "grid_h": grid_h, "grid_w": grid_w,
            "height": height, "width": width}


def axis_samples(start, bin_size, pooled, grid, limit, counts=None):
    """Sample positions along one axis for a group of RoIs sharing `grid` samples per bin.

    start, bin_size (G,) -> (low, high, weight_low, weight_high), each (G, pooled, grid):
    the two cells a sample falls between and their bilinear weights, both 0 beyond [-1, limit];
    `limit` is the map's side, a number or (G,) (each RoI's level).
    `counts` (G,), default `grid` for every RoI: RoI k really has counts[k] <= grid samples per
    bin; its samples are placed for that count and the slots past it get weight 0 (a padded
    group, on a GPU).
    """
    counts = (torch.full_like(start, grid) if counts is None
              else counts.to(start.dtype))[:, None, None]  # (G, 1, 1)
    if torch.is_tensor(limit):
        limit = limit.to(start.dtype)[:, None, None]  # (G, 1, 1)
    bins = torch.arange(pooled, dtype=start.dtype, device=start.device)  # (pooled,)
    steps = torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5  # (grid,)
    pos = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
           + steps[None, None, :] * bin_size[:, None, None] / counts)  # (G, pooled, grid)
    inside = (pos >= -1.0) & (pos <= limit) & (steps[None, None, :] < counts)  # not padding
    pos = pos.clamp(min=0)
    low = pos.floor().clamp(max=limit - 1)  # past the last cell centre both neighbours are it
    pos = torch.where(low >= limit - 1, low, pos)
    frac = pos - low
    high = (low + 1).clamp(max=limit - 1)
    weight_low = (1.0 - frac) * inside
    weight_high = frac * inside
    return low.long(), high.long(), weight_low, weight_high


def _group_bags(g, gh, gw, output_hw):
    """The bags of G RoIs sharing (gh, gw): index, weight (G, h, w, L) with L = 4 * gh * gw.

    Bag (k, py, px) lists, for each of the bin's gh x gw samples, its four neighbours (low/high
    row x low/high column) as rows of the (N * H * W, C) map, with the bilinear weights divided
    by the RoI's number of samples; a sample outside the map has weight 0, and so has a slot
    past the RoI's own counts in a padded group.
    """
    H, W, (h, w) = g["height"], g["width"], output_hw  # (G,), (G,): each RoI's map
    # each RoI's own sample counts: below (gh, gw) only in a padded group
    y_low, y_high, wy_low, wy_high = axis_samples(g["start_y"], g["bin_h"], h, gh, H,
                                                  g["grid_h"])  # (G, h, gh)
    x_low, x_high, wx_low, wx_high = axis_samples(g["start_x"], g["bin_w"], w, gw, W,
                                                  g["grid_w"])  # (G, w, gw)
    rows = torch.stack([y_low, y_high], -1) * W[:, None, None, None]  # (G, h, gh, 2) row starts
    cols = torch.stack([x_low, x_high], -1)  # (G, w, gw, 2)
    wy = torch.stack([wy_low, wy_high], -1)  # (G, h, gh, 2)
    samples = (g["grid_h"] * g["grid_w"]).to(wx_low.dtype)[:, None, None, None]  # (G, 1, 1, 1)
    wx = torch.stack([wx_low, wx_high], -1) / samples  # (G, w, gw, 2) the mean over samples
    base = (g["batch"] * H * W)[:, None, None, None, None, None, None]  # image's first row
    # broadcast (G, h, 1, gh, 1, 2, 1) against (G, 1, w, 1, gw, 1, 2): (G, h, w, gh, gw, 2, 2)
    index = base + rows[:, :, None, :, None, :, None] + cols[:, None, :, None, :, None, :]
    weight = wy[:, :, None, :, None, :, None] * wx[:, None, :, None, :, None, :]
    G = len(g["batch"])
    return index.reshape(G, h, w, -1), weight.reshape(G, h, w, -1)


def sample_bags(rois, output_size, map_size, spatial_scale, sampling_ratio=-1, aligned=True):
    """RoIAlign as bags of (row, weight) pairs, one bag per output bin.

    rois (K, 5) float; map_size (H, W) and spatial_scale: numbers, or (K,) tensors for RoIs on
    maps of different sizes (the FPN levels, each RoI's index then counting rows of its own
    level's map). Returns a list of (members, index, weight): members (G,)
    are RoIs sharing their sample counts (gh, gw) -- all of them, in order, when sampling_ratio
    > 0 -- and index, weight (G, h, w, L), L = 4 * gh * gw, say that output bin (k, py, px) of
    RoI members[k] is sum(weight[k, py, px, l] * rows[index[k, py, px, l]] for l < L) with
    rows = features laid out as (N * H * W, C). RoIs with no samples are in no group: their bins
    are 0. Groups are cut so that each holds at most CHUNK_ELEMENTS pairs.
    """
    h, w = _output_hw(output_size)
    g = _roi_geometry(rois, h, w, spatial_scale, sampling_ratio, aligned, map_size)
    padded = sampling_ratio <= 0 and pad_groups(rois.device)  # groups of power-of-two counts
    if sampling_ratio > 0:  # one group: every RoI, in order
        groups = [(torch.arange(len(rois), device=rois.device), sampling_ratio, sampling_ratio)]
    else:
        groups = _count_groups(g["grid_h"], g["grid_w"], padded)
    budget = GPU_CHUNK_ELEMENTS if padded else CHUNK_ELEMENTS
    bags = []
    for members, gh, gw in groups:
        if gh == 0 or gw == 0 or len(members) == 0:
            continue  # no samples: the bins stay 0
        for part in size_chunks(torch.full((len(members),), 4 * gh * gw * h * w), budget):
            picked = members[part]
            every = len(picked) == len(rois) and sampling_ratio > 0  # all RoIs, in order
            index, weight = _group_bags(g if every else {k: v[picked] for k, v in g.items()},
                                        gh, gw, (h, w))
            bags.append((picked, index, weight))
    return bags


def pad_groups(device):
    """Whether adaptive sampling pads its groups (on a GPU). One group per distinct (gh, gw)
    costs a few dozen small ops and a host sync each, which a GPU waits for and a CPU does
    not; padded to powers of two, RoIs of similar size share a group, at up to 4x the pairs
    (the padding slots have weight 0, so the sums are the same)."""
    return device.type == "cuda"


def _count_groups(grid_h, grid_w, padded):
    """[(members (G,), gh, gw)]: the RoIs of each distinct sample count (gh, gw), in RoI order,
    groups ordered by (gh, gw); when `padded`, by the counts rounded up to powers of two."""
    if len(grid_h) == 0:
        return []
    if padded:
        grid_h, grid_w = (torch.where(c > 1, 2 ** torch.ceil(torch.log2(c.double())).long(), c)
                          for c in (grid_h, grid_w))
    width = int(grid_w.max()) + 1
    key = grid_h * width + grid_w  # (K,) one number per (gh, gw)
    order = torch.sort(key, stable=True).indices  # (K,) by count, then by RoI
    keys, sizes = torch.unique_consecutive(key[order], return_counts=True)
    return [(members, k // width, k % width)
            for members, k in zip(order.split(sizes.tolist()), keys.tolist())]


def roi_align(features, rois, output_size, spatial_scale, sampling_ratio=-1, aligned=True):
    """Torch twin of `mrcnn_edu.reference.roi_align.roi_align`: same contract.

    features (N, C, H, W) on any device, float32 or float64; rois (K, 5) on the same device.
    Returns (K, C, h, w), differentiable with respect to features (not with respect to rois):
    one `embedding_bag` call per group of `sample_bags`, whose compiled backward computes what
    `roi_align_backward` does (checked by gradcheck and against it). Memory: the output, the map
    as rows (a view when the map is channels_last) and the bags; no gathered copy of the
    features.
    """
    if features.dtype in HALF:
        # Under autocast the maps arrive in half precision, but sample positions in pixels do
        # not survive it (float16 steps are 0.5 px above 512): compute in float32 and return
        # the input's dtype, as torchvision's autocast rule for roi_align does.
        out = roi_align(features.float(), rois.float(), output_size, spatial_scale,
                        sampling_ratio, aligned)
        return out.to(features.dtype)
    features, rois, h, w = _check_inputs(features, rois, output_size)
    return _align_on_maps([features], rois, None, (h, w), [float(spatial_scale)],
                          int(sampling_ratio), bool(aligned))


def _align_on_maps(maps, rois, levels, output_hw, scales, sampling_ratio, aligned):
    """RoIAlign of RoI k on maps[levels[k]] (on maps[0] when levels is None): (K, C, h, w).

    The bags of every RoI come from one `sample_bags` call, whatever its map: the RoIs are put
    in level order first, so each group's bags split by level into views, one `embedding_bag`
    per (group, level) on that level's rows.
    """
    (h, w), C, device = output_hw, maps[0].shape[1], rois.device
    rows = [as_rows(m) for m in maps]  # [(N*H_l*W_l, C)] one row per cell
    if levels is None:  # one map: its size and scale are numbers
        order, map_size, scale = None, tuple(maps[0].shape[-2:]), scales[0]
    else:
        order = torch.sort(levels, stable=True).indices  # (K,) RoIs by level, then by index
        rois, levels = rois[order], levels[order]
        sizes = torch.tensor([m.shape[-2:] for m in maps], device=device)  # (L, 2)
        map_size = (sizes[levels, 0], sizes[levels, 1])  # (K,), (K,) each RoI's map
        scale = torch.tensor(scales, dtype=rois.dtype, device=device)[levels]  # (K,)
    bags = sample_bags(rois.detach(), (h, w), map_size, scale, sampling_ratio, aligned)
    if levels is None:
        counts = [[len(group)] for group, _, _ in bags]
    else:  # RoIs per (group, level), read in one wait for the device
        counts = [torch.bincount(levels[group], minlength=len(maps)) for group, _, _ in bags]
        counts = torch.stack(counts).tolist() if counts else []
    parts, members = [], []
    for (group, index, weight), group_counts in zip(bags, counts):
        for level_rows, i, wt in zip(rows, index.split(group_counts), weight.split(group_counts)):
            if len(i):
                parts.append(F.embedding_bag(i.reshape(-1, i.shape[-1]), level_rows, mode="sum",
                                             per_sample_weights=wt.reshape(-1, i.shape[-1])))
        members.append(group if order is None else order[group])  # (G,) in the caller's order
    if order is None and sampling_ratio > 0 and parts:  # one map, fixed sampling: in order
        cells = parts[0] if len(parts) == 1 else torch.cat(parts)  # (K * h * w, C)
    else:  # put every RoI's bins back in its row, 0 for RoIs with no samples
        cells = rows[0].new_zeros((len(rois) * h * w, C))
        if parts:
            at = torch.cat(members)[:, None] * (h * w) + torch.arange(h * w, device=device)
            cells = cells.index_copy(0, at.reshape(-1), torch.cat(parts))
    return cells.reshape(len(rois), h, w, C).permute(0, 3, 1, 2)


def roi_align_backward(grad_output, rois, input_shape, spatial_scale, sampling_ratio=-1,
                       aligned=True):
    """Torch twin of `mrcnn_edu.reference.roi_align.roi_align_backward`: same contract.

    grad_output (K, C, h, w); input_shape (N, C, H, W). Returns (N, C, H, W): each bag hands its
    bin's gradient to its rows with the forward's weights (`index_add_`).
    """
    N, C, H, W = (int(s) for s in input_shape)
    if grad_output.ndim != 4 or grad_output.shape[1] != C:
        raise ValueError(f"grad_output must have shape (K, {C}, h, w), "
                         f"got {tuple(grad_output.shape)}")
    if len(rois) != len(grad_output):
        raise ValueError(f"grad_output has {len(grad_output)} rows but rois has {len(rois)}")
    dtype = grad_output.dtype if grad_output.is_floating_point() else torch.float64
    grad_bins = grad_output.to(dtype).permute(0, 2, 3, 1)  # (K, h, w, C)
    grad_rows = grad_bins.new_zeros((N * H * W, C))
    for members, index, weight in sample_bags(rois.to(dtype), grad_output.shape[2:], (H, W),
                                              spatial_scale, sampling_ratio, aligned):
        grad = grad_bins[members].reshape(-1, C)  # (G * h * w, C) one row per bag
        for pair in range(index.shape[-1]):  # the l-th pair of every bag at once
            grad_rows.index_add_(0, index[..., pair].reshape(-1),
                                 grad * weight[..., pair].reshape(-1, 1))
    return grad_rows.reshape(N, H, W, C).permute(0, 3, 1, 2).contiguous()


def multiscale_roi_align(features_by_level, rois, output_size, spatial_scales=None,
                         sampling_ratio=2, aligned=True, k_min=2, k_max=5, canonical_size=224,
                         canonical_level=4):
    """Torch twin of `mrcnn_edu.reference.roi_align.multiscale_roi_align`: same contract.

    Where the reference pools level by level, the twin builds the bags of every RoI at once,
    each with its own level's scale and map size, and calls `embedding_bag` once per level:
    no loop over RoIs, and the geometry is computed once. Differentiable in every level.
    """
    levels_count = k_max - k_min + 1
    if len(features_by_level) != levels_count:
        raise ValueError(f"features_by_level must hold {levels_count} maps (levels "
                         f"{k_min}..{k_max}), got {len(features_by_level)}")
    if spatial_scales is None:
        spatial_scales = [2.0 ** -k for k in range(k_min, k_max + 1)]
    if features_by_level[0].dtype in HALF:  # in float32, as `roi_align` explains
        out = multiscale_roi_align([f.float() for f in features_by_level], rois.float(),
                                   output_size, spatial_scales, sampling_ratio, aligned, k_min,
                                   k_max, canonical_size, canonical_level)
        return out.to(features_by_level[0].dtype)
    features, rois, h, w = _check_inputs(features_by_level[0], rois, output_size)
    maps = [features] + [f if f.is_floating_point() else f.to(features.dtype)
                         for f in features_by_level[1:]]
    levels = assign_fpn_levels(rois[:, 1:], k_min, k_max, canonical_size, canonical_level)  # (K,)
    return _align_on_maps(maps, rois, levels - k_min, (h, w), [float(x) for x in spatial_scales],
                          int(sampling_ratio), bool(aligned))


def _multiscale_level_by_level(features_by_level, rois, output_size, spatial_scales=None,
                               sampling_ratio=2, aligned=True, k_min=2, k_max=5,
                               canonical_size=224, canonical_level=4):
    """`multiscale_roi_align` computed as the reference does, one `roi_align` call per level:
    what `exercises.use` runs when a learner's roi_align replaces this module's, so that the
    model pools with it."""
    if spatial_scales is None:
        spatial_scales = [2.0 ** -k for k in range(k_min, k_max + 1)]
    h, w = _output_hw(output_size)
    levels = assign_fpn_levels(rois[:, 1:], k_min, k_max, canonical_size, canonical_level)  # (K,)
    out = features_by_level[0].new_zeros((len(rois), features_by_level[0].shape[1], h, w))
    for i, (feats, scale) in enumerate(zip(features_by_level, spatial_scales)):
        picked = torch.nonzero(levels == k_min + i).flatten()
        if len(picked):
            out = out.index_copy(0, picked, roi_align(feats, rois[picked], (h, w), scale,
                                                      sampling_ratio, aligned))
    return out
