# %% [markdown]
# # 02 · Anchors
#
# The region proposal network does not predict boxes from nothing. It starts from a fixed set of
# reference boxes, **anchors**, tiled over the image, and for each one predicts "is there an
# object?" and "how should this box move to fit it?". From the FPN paper (Lin et al., 2017):
#
# > Formally, we define the anchors to have areas of {32², 64², 128², 256², 512²} pixels on
# > {P2, P3, P4, P5, P6} respectively. [...] we also use anchors of multiple aspect ratios
# > {1:2, 1:1, 2:1} at each level. So in total there are 15 anchors over the pyramid.
#
# Code: `mrcnn_edu/reference/anchors.py` and its twin `mrcnn_edu/ops/anchors.py`.

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=2, compact=True)
plt.show()

# %%
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrcnn_edu import ops, reference as ref, viz
from mrcnn_edu.data import CocoDataset, resolve_data_root

np.set_printoptions(precision=2, suppress=True)

# %% [markdown]
# ## 1. The anchors of one cell
#
# An anchor has a **size** s (its area is s²) and an **aspect ratio** r = h / w. Solving
# w · h = s² and h / w = r gives w = s / √r and h = s · √r. (d2l.ai writes the ratio as w / h:
# the opposite. Here, and in torchvision, r = 2 is a tall box.)
#
# Hand example for s = 32: r = 0.5 gives 45.25 × 22.63 (wide), r = 1 gives 32 × 32,
# r = 2 gives 22.63 × 45.25 (tall). Centred on (0, 0):

# %%
(cell,) = ref.generate_anchors((1, 1), strides=(4,), sizes=(32,), aspect_ratios=(0.5, 1.0, 2.0))
print(cell)
widths, heights = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
print("w:", widths, " h:", heights, " h / w:", heights / widths, " area:", widths * heights)

# %% [markdown]
# We do **not** round these to whole pixels. torchvision rounds its base anchors (so its 0.5-ratio
# anchor of size 32 is 46 × 22 rather than 45.25 × 22.63); keeping them exact means every number
# in this lesson is the number in the formula, and one convention holds throughout the model.

# %% [markdown]
# ## 2. Tiling: strides and the grid
#
# Level Pk of the FPN has stride s = 2^k: one feature-map cell per s × s pixels, so an H × W
# image gives a ceil(H/s) × ceil(W/s) grid (a stride-2 convolution with padding rounds up).
# Cell (i, j) places its anchors' centre at (x, y) = (j · s, i · s), torchvision's grid
# (offset 0). The A anchors of a cell come together ("location-major"), cells row by row, which
# is exactly how an RPN output of shape (A, h, w) reads once permuted to (h, w, A) and flattened.

# %%
(tiny,) = ref.generate_anchors((8, 8), strides=(4,), sizes=(32,), aspect_ratios=(1.0,))
print("an 8 x 8 image, stride 4, one square anchor per cell -> centres (0,0) (4,0) (0,4) (4,4):")
print(tiny)

# %%
print(inspect.getsource(ref.generate_anchors))

# %% [markdown]
# ## 3. How many anchors? 1024 × 1024 over P2–P6
#
# | level | stride | size | grid | anchors (× 3 ratios) |
# |---|---|---|---|---|
# | P2 | 4 | 32 | 256 × 256 | 196,608 |
# | P3 | 8 | 64 | 128 × 128 | 49,152 |
# | P4 | 16 | 128 | 64 × 64 | 12,288 |
# | P5 | 32 | 256 | 32 × 32 | 3,072 |
# | P6 | 64 | 512 | 16 × 16 | 768 |
#
# In total 3 · (256² + 128² + 64² + 32² + 16²) = **261,888** anchors, three quarters of them on P2.

# %%
levels = ref.generate_anchors((1024, 1024))
for name, anchors in zip(["P2", "P3", "P4", "P5", "P6"], levels):
    print(f"{name}: {anchors.shape}")
print("total:", sum(len(a) for a in levels))

# %% [markdown]
# ## 4. Anchors on a real image
#
# A subset image with its ground truth (green) and, for three levels, the three anchors of a few
# cells (grey) with every cell centre of that level as a dot. Big objects are found by the coarse
# levels, small ones by the fine levels.

# %%
dataset = CocoDataset(resolve_data_root(), split="train2017")
image, target = dataset[4]
height, width = image.shape[1:]
strides, sizes = (4, 8, 16, 32, 64), (32, 64, 128, 256, 512)
levels = ref.generate_anchors((height, width), strides, sizes)

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, level in zip(axes, [1, 2, 3]):
    stride, anchors = strides[level], levels[level]
    rows, cols = math.ceil(height / stride), math.ceil(width / stride)
    grid = anchors.reshape(rows, cols, 3, 4)  # (h, w, A, 4) location-major
    viz.show_image(image, ax=ax, title=f"P{level + 2}: stride {stride}, size {sizes[level]}")
    viz.draw_boxes(target["boxes"], ax=ax, color=viz.GT_COLOR)
    centres = (grid[..., 0, :2] + grid[..., 0, 2:]) / 2  # (h, w, 2)
    ax.scatter(centres[..., 0].ravel(), centres[..., 1].ravel(), s=1, color=viz.ANCHOR_COLOR)
    for i, j in [(rows // 4, cols // 4), (rows // 2, cols // 2), (3 * rows // 4, 3 * cols // 4)]:
        viz.draw_boxes(grid[i, j], ax=ax, color=viz.ANCHOR_COLOR, linewidth=1.2)
    ax.set_xlim(-sizes[level] / 2, width + sizes[level] / 2)
    ax.set_ylim(height + sizes[level] / 2, -sizes[level] / 2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. The torch twin
#
# `mrcnn_edu.ops.generate_anchors` takes the same arguments plus the keyword-only `dtype` and
# `device` of the tensors it makes (there is no input tensor to take them from).

# %%
twin = ops.generate_anchors((height, width), strides, sizes, dtype=torch.float64)
print("levels:", len(twin), "| all equal:",
      all(np.allclose(t.numpy(), r, rtol=1e-15, atol=1e-12) for t, r in zip(twin, levels)))

# %% [markdown]
# ## 6. Do my anchors fit my objects?
#
# The question users ask most. An object can only become a positive RPN training example through
# an anchor that overlaps it well: at IoU >= 0.7 it is matched by the threshold, below that only
# by the "low-quality" rule that hands every object its best anchor anyway (lesson 04).
# So for every ground-truth box of the subset we compute its **best anchor IoU**, at the size the
# model sees the image: `resized_size` of the model's transform (lesson 10) makes the shorter side
# 800 and the longer at most 1333 (the paper's model, preset `r50_fpn`), and the boxes are
# scaled in x and in y as the model scales them. (The model also pads the batch to a multiple
# of 32, which only adds anchors beyond the bottom and right edges.) Crowd regions are not
# training targets and are left out.
#
# Every box against every anchor of its image (about 160,000 to 267,000) would be 327 million
# IoUs for the subset's 1430 boxes. One observation brings it down to 15 candidate anchors per
# box. The overlap of two intervals of fixed lengths can only shrink as their centres move apart,
# and a box's intersection with an anchor is the overlap in x times the overlap in y. All
# anchors of one level and one ratio have the same shape, so no anchor of that level and ratio
# has a larger intersection, and hence a larger IoU, than the one centred on the grid point
# nearest the box's centre (others may tie with it): row i = round(cy / s), column
# j = round(cx / s), each chosen on its own axis and clamped to the grid. Section 2's
# location-major order says where it sits: `anchors.reshape(h, w, A, 4)[i, j]`.

# %%
from mrcnn_edu.config import preset
from mrcnn_edu.model.transforms import resized_size
from mrcnn_edu.reference.anchors import grid_shape

cfg = preset("r50_fpn")  # the paper's model: min_size 800, max_size 1333
aspect_ratios = (0.5, 1.0, 2.0)  # with strides and sizes of section 4: the paper's anchors


def model_boxes(index):
    """Image `index`'s non-crowd boxes (G, 4) as the model sees them, and its size (h, w) there."""
    info, tgt = dataset.image_info(index), dataset.load_target(index)
    size = resized_size(info["height"], info["width"], cfg.min_size, cfg.max_size)  # (h, w)
    scale = np.array([size[1] / info["width"], size[0] / info["height"]] * 2)  # (4,) x, y apart
    gt = tgt["boxes"].numpy().astype(np.float64)[tgt["iscrowd"].numpy() == 0]  # (G, 4)
    return gt * scale, size


def nearest_anchors(boxes, image_size, levels, strides):
    """For each box, level and ratio, the anchor centred on the grid point nearest the box's
    centre: boxes (G, 4) -> (G * levels * A, 4), the candidates for every box's best anchor."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2  # (G,), (G,)
    picked = []
    for stride, anchors in zip(strides, levels):
        rows, cols = grid_shape(image_size, stride)
        grid = anchors.reshape(rows, cols, -1, 4)  # (h, w, A, 4) location-major
        i = np.clip(np.round(cy / stride).astype(int), 0, rows - 1)  # (G,) nearest row
        j = np.clip(np.round(cx / stride).astype(int), 0, cols - 1)  # (G,) nearest column
        picked.append(grid[i, j].reshape(-1, 4))  # (G * A, 4)
    return np.concatenate(picked)

# %% [markdown]
# The best IoU over these candidates is the best over all anchors (the candidates of the other
# boxes of the image are real anchors too, so they cannot beat it). Checked against the full
# IoU matrix on the first images; "same" allows for float rounding (1e-12) where two anchors
# tie: a box's centre exactly between two grid points, or an anchor lying wholly inside the box
# (or the box inside it) along one axis.

# %%
for index in range(5):
    gt, size = model_boxes(index)
    levels = ref.generate_anchors(size, strides, sizes, aspect_ratios)
    every = ref.box_iou(gt, np.concatenate(levels)).max(axis=1)  # (G,) all anchors
    near = ref.box_iou(gt, nearest_anchors(gt, size, levels, strides)).max(axis=1)  # (G,)
    print(f"image {index}: {len(gt):2d} boxes, {sum(map(len, levels)):,} anchors, "
          f"same best IoU: {np.allclose(near, every, rtol=0, atol=1e-12)}")

# %%
best_ious, box_sides = [], []
for index in range(len(dataset)):
    gt, size = model_boxes(index)
    if len(gt) == 0:
        continue
    levels = ref.generate_anchors(size, strides, sizes, aspect_ratios)
    best_ious.append(ref.box_iou(gt, nearest_anchors(gt, size, levels, strides)).max(axis=1))  # (G,)
    box_sides.append(np.sqrt(ref.box_area(gt)))  # (G,)
best_ious, box_sides = np.concatenate(best_ious), np.concatenate(box_sides)
print(f"{len(best_ious)} ground-truth boxes")
print(f"best IoU >= 0.7 (positive by threshold): {np.mean(best_ious >= 0.7):.1%}")
print(f"0.3 <= best IoU < 0.7 (low-quality only): {np.mean((best_ious >= 0.3) & (best_ious < 0.7)):.1%}")
print(f"best IoU < 0.3:                          {np.mean(best_ious < 0.3):.1%}")
print(f"median best IoU: {np.median(best_ious):.3f}")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
left.hist(best_ious, bins=np.linspace(0, 1, 41), color=viz.ANCHOR_COLOR)
for t in (0.3, 0.7):
    left.axvline(t, color="black", linestyle="--", linewidth=1)
left.set_xlabel("best anchor IoU"); left.set_ylabel("ground-truth boxes")
left.set_title("best-anchor IoU of the subset's objects")
right.scatter(box_sides, best_ious, s=4, color=viz.GT_COLOR)
right.set_xscale("log"); right.axhline(0.7, color="black", linestyle="--", linewidth=1)
right.set_xlabel("sqrt(box area) in pixels, after resizing"); right.set_ylabel("best anchor IoU")
right.set_title("small objects fit worst")
plt.show()

# %%
for name, lo, hi in [("side < 32 px", 0, 32), ("32 <= side < 96", 32, 96), ("side >= 96 px", 96, np.inf)]:
    sel = (box_sides >= lo) & (box_sides < hi)
    print(f"{name:>16}: {sel.sum():4d} boxes, median best IoU {np.median(best_ious[sel]):.3f}, "
          f"share >= 0.7: {np.mean(best_ious[sel] >= 0.7):.1%}")

# %% [markdown]
# Reading the numbers: fewer than half of the objects have an anchor at IoU >= 0.7. Most of the
# others sit between 0.3 and 0.7, and get a positive anchor only through the low-quality rule.
# Two reasons. Sizes double from level to level, so a square object of side 45 (midway between
# 32 and 64 on a log scale) reaches at most 32² / 45² ≈ 0.51 with the smaller anchor and
# 45² / 64² ≈ 0.49 with the larger. And anchor centres sit on a grid of the level's stride, so
# an object is off-centre by up to half a stride in x and y. Small and very elongated objects
# fit worst: a 10-pixel object has IoU at most 100 / 1024 ≈ 0.1 with a 32 × 32 anchor. If your
# own data is dominated by such objects, change `sizes` or `aspect_ratios` (one size per level,
# all ratios at every level) and re-run these cells before training.

# %% [markdown]
# ## 7. Pitfalls
#
# - **Ratio convention.** r = h / w here; w / h elsewhere. With {0.5, 1, 2} the set is the same,
#   but anchor i of a cell is not: a head trained with one convention reads the other's outputs
#   in the wrong slots.
# - **Grid offset.** We centre anchors at j · s (torchvision). Centring at j · s + s / 2 (the
#   cell's middle) is just as reasonable, but a model trained with one must be run with the same.
# - **Order.** The flattened anchors must be in the order of the flattened RPN outputs: per
#   level, cells row by row, the A anchors of a cell together.

# %% [markdown]
# ## Your turn: the anchors of one level
#
# Write the anchors of **one** level, `level_anchors(image_size, stride, size,
# aspect_ratios)`: what `generate_anchors` does for each level, so the same as
# `ref.generate_anchors(image_size, (stride,), (size,), aspect_ratios)[0]`. Replace the
# stub's `raise NotImplementedError` with your code and run the check below it: the cell
# of section 1, the 8 x 8 image of section 2, image sizes that are not a multiple of the
# stride, and real image sizes. A failing case shows the smallest failing input and, for
# a classic slip (h and w swapped, centres at the cell's middle, rounded anchors, the
# wrong order), names it. `hint("level_anchors")` helps, more at each call; the last one is the solution.

# %%
def level_anchors(image_size, stride, size, aspect_ratios=(0.5, 1.0, 2.0)):
    """The anchors of one FPN level. image_size (H, W); the level has ceil(H / stride) x
    ceil(W / stride) cells; cell (i, j) is centred at (x, y) = (j * stride, i * stride).
    Each cell has one anchor per aspect ratio r = h / w, of area size**2:
    w = size / sqrt(r), h = size * sqrt(r), not rounded.
    Returns anchors (cells * A, 4) float64 (x1, y1, x2, y2): the A anchors of cell (0, 0) in the
    order of aspect_ratios, then those of cell (0, 1), ... row by row.
    """
    raise NotImplementedError  # replace this line with your code

# %%
from mrcnn_edu.exercises import check, hint

check("level_anchors", level_anchors)


# %% [markdown]
# ## Summary
#
# - An anchor of size s and ratio r = h / w is s / √r wide and s · √r tall (area s²).
# - Level k has stride s_k; anchors sit at (j · s, i · s) for a ceil(H/s) × ceil(W/s) grid,
#   A per cell, location-major. For 1024 × 1024 over P2–P6 with 3 ratios: 261,888 anchors.
# - Check that your anchors fit your objects with the best-anchor-IoU histogram.
#
# ## Exercises
#
# 1. How many anchors does an 800 × 1216 image get? Check with `generate_anchors`.
# 2. Add a fourth ratio, 3.0, and recompute the histogram. Which objects gain?
# 3. Replace the sizes with (16, 32, 64, 128, 256) (the `tiny` preset) and explain the change in
#    the share of boxes at IoU >= 0.7.
# 4. What is the largest IoU a 100 × 10 object can have with any anchor of the default set?
