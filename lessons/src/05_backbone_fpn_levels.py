# %% [markdown]
# # 05 · Backbone, FPN levels, and which level pools each RoI
#
# Mask R-CNN does not look at pixels when it classifies a proposal: it looks at a small window
# of **features**. This lesson is about where those features come from and which of several
# feature maps a proposal reads.
#
# - A **ResNet stage** is a group of residual blocks working at one resolution. The stages
#   `conv2_x .. conv5_x` end at strides 4, 8, 16, 32: their outputs are called **C2 .. C5**.
# - An **FPN level** Pk is a map at stride 2**k with the same 256 channels everywhere: a 1 x 1
#   projection of Ck plus the 2x-upsampled sum from the coarser level, smoothed by a 3 x 3 conv
#   (P6 is P5 subsampled; Lin et al. 2017).
# - Each RoI is pooled from **one** level, chosen by its size (the FPN paper's equation 1).
#
# Code: `mrcnn_edu/reference/fpn_levels.py` and its twin `mrcnn_edu/ops/fpn_levels.py`; the
# networks themselves are `mrcnn_edu/model/backbone.py` and `mrcnn_edu/model/fpn.py`.

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=5, compact=True)
plt.show()

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrcnn_edu import ops, reference as ref, viz
from mrcnn_edu.data import CocoDataset, resolve_data_root

np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## 1. Shapes, by arithmetic
#
# ResNet-50 on a 1024 x 1024 image. The stem (7 x 7 conv with stride 2, then a stride-2 max-pool)
# brings the image to stride 4; `conv2_x` keeps it there and each later stage halves it.
# A bottleneck block outputs 4 x its width, and the widths are 64, 128, 256, 512:
#
# | map | stride | channels | size for 1024 |
# |-----|--------|----------|---------------|
# | C2  | 4      | 256      | 256 x 256     |
# | C3  | 8      | 512      | 128 x 128     |
# | C4  | 16     | 1024     | 64 x 64       |
# | C5  | 32     | 2048     | 32 x 32       |
#
# The FPN projects every Ck to 256 channels (1 x 1 conv), adds the 2x nearest-upsampled coarser
# level, smooths with a 3 x 3 conv, and gets P2 .. P5 at the same strides; P6 is P5 subsampled
# by 2 (used only by the RPN for the largest anchors).

# %%
side = 1024
c_shapes = [(64 * 2 ** i * 4, side // 2 ** (i + 2), side // 2 ** (i + 2)) for i in range(4)]
p_shapes = [(256, side // 2 ** k, side // 2 ** k) for k in range(2, 7)]
for name, shape in zip(["C2", "C3", "C4", "C5", "P2", "P3", "P4", "P5", "P6"], c_shapes + p_shapes):
    print(f"{name}: {shape}")

# %% [markdown]
# The same shapes from the real modules. We build them on PyTorch's `meta` device, which tracks
# shapes and dtypes but stores no numbers, so a ResNet-50 forward pass on a 1024 x 1024 image
# costs nothing here.

# %%
from mrcnn_edu.model.backbone import ResNet  # noqa: E402
from mrcnn_edu.model.fpn import FPN  # noqa: E402

with torch.device("meta"):
    backbone = ResNet(50)
    fpn = FPN(backbone.out_channels, 256)
    c_maps = backbone(torch.zeros(1, 3, side, side))
    p_maps = fpn(c_maps)
print("C2..C5:", [tuple(m.shape[1:]) for m in c_maps])
print("P2..P6:", [tuple(m.shape[1:]) for m in p_maps])
assert [tuple(m.shape[1:]) for m in c_maps] == c_shapes
assert [tuple(m.shape[1:]) for m in p_maps] == p_shapes

# %% [markdown]
# Drawn to scale (square side = map width): the bottom-up pathway on top, the pyramid the heads
# read below. Channels grow as the maps shrink in the backbone; in the FPN they
# are all 256, so one RoI head can read any level.

# %%
fig, axes = plt.subplots(2, 1, figsize=(10, 6))
viz.draw_feature_pyramid(c_shapes, ["C2", "C3", "C4", "C5"], ax=axes[0], color=viz.ANCHOR_COLOR)
viz.draw_feature_pyramid(p_shapes, ["P2", "P3", "P4", "P5", "P6"], ax=axes[1])
axes[0].set_title("ResNet-50 stages (1024 x 1024 input)")
axes[1].set_title("FPN levels")
plt.show()

# %% [markdown]
# How the pyramid is wired, as `FPN.forward` in `mrcnn_edu/model/fpn.py` does it: each Ck goes
# through a 1 x 1 **lateral** conv to the same F channels (256; 64 in the tiny preset). The
# **top-down** path starts at C5's projection; at each finer level the running sum is upsampled
# 2x by nearest neighbour and added to that level's lateral. A 3 x 3 conv on each sum gives Pk.
# P6 is P5 max-pooled with a 1 x 1 window and stride 2: every other cell of P5, no new weights.
# The top-down path carries C5's strong semantics down to the fine maps; the laterals bring back
# the fine maps' precise positions.

# %%
viz.fpn_diagram()
plt.show()

# %% [markdown]
# ## 2. The level formula
#
# The FPN paper (Lin et al. 2017, section 4.2, equation 1): a RoI of width w and height h (in
# input-image pixels) is assigned to level
#
# $$k = \lfloor k_0 + \log_2(\sqrt{wh} / 224) \rfloor, \qquad k_0 = 4,$$
#
# "224 is the canonical ImageNet pre-training size, and k0 is the target level on which an RoI
# with w x h = 224^2 should be mapped into". The paper sets k0 = 4 by analogy with the
# single-scale Faster R-CNN, which pools every RoI from C4. P6 serves only the RPN, so
# implementations clamp k to the levels the RoI heads read, P2..P5.
#
# **Settling the constants.** Write-ups you will meet repeat a few slips in this equation:
#
# - **"244" for 224**, a transposed digit. The paper, torchvision and Detectron all use 224,
#   the side of the ImageNet training crop.
# - **k0 = 5**, or a canonical size of **256**: each moves every boundary, by a whole level or
#   by log2(256 / 224) ≈ 0.19 of one.
# - **round instead of floor**: matterport's widely copied Mask_RCNN computes
#   `4 + round(log2(sqrt(wh) / 224))`, which moves every boundary down by half a level (a 160 px
#   RoI reads P4 instead of P3), so an RoI is 10 to 20 cells wide on its level instead of 14 to 28.
#
# The paper's floor with k0 = 4 and 224 is what torchvision's `LevelMapper` and Detectron use
# (`ROI_CANONICAL_LEVEL: 4`, `ROI_CANONICAL_SCALE: 224`), and torchvision adds an epsilon of
# 1e-6 inside the floor. What matters is the pairing it produces: a 224 px RoI reads P4
# (stride 16), so it becomes 14 cells wide -- twice the 7 x 7 output of the box head.
# Every RoI lands on the level where it is 14 to 28 cells wide (unless clamped). Here are the
# variants side by side:

# %%
sides = np.array([32, 64, 100, 111, 112, 150, 160, 224, 300, 447, 448, 600, 900], float)
boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], 1)
paper = ref.assign_fpn_levels(boxes)  # k0 = 4, 224
k0_5 = ref.assign_fpn_levels(boxes, canonical_level=5)
c256 = ref.assign_fpn_levels(boxes, canonical_size=256)
rounded = np.clip(4 + np.round(np.log2(sides / 224)), 2, 5).astype(int)  # round, not floor
print(" side  k0=4,224  k0=5,224  k0=4,256  round  cells wide on the paper's level")
for s, a, b, c, r in zip(sides, paper, k0_5, c256, rounded):
    print(f"{s:5.0f}  {a:8d}  {b:8d}  {c:8d}  {r:5d}  {s / 2 ** a:6.1f}")

# %% [markdown]
# Hand example: a 100 x 50 box. sqrt(5000) = 70.7; 70.7 / 224 = 0.316; log2(0.316) = -1.66;
# 4 - 1.66 = 2.34, floor 2: **P2**. A 448 x 112 box has the area of 224 x 224: **P4**. It is
# the area, not the shape, that decides.

# %%
hand = np.array([[0.0, 0, 100, 50], [0, 0, 448, 112], [0, 0, 224, 224]])
print("by hand:", 4 + np.log2(np.sqrt(100 * 50) / 224))
print("reference:", ref.assign_fpn_levels(hand))
print("twin:     ", ops.assign_fpn_levels(torch.tensor(hand)))

# %% [markdown]
# The reference is five lines of numpy:

# %%
print(inspect.getsource(ref.assign_fpn_levels))

# %% [markdown]
# **Pitfall: the epsilon.** A 112 x 112 box sits exactly on the boundary between P2 and P3:
# log2(112 / 224) = -1, so it belongs to P3. But boxes live at arbitrary positions, and
# x2 - x1 of a box stored in float32 (as the model's boxes are) is rarely exactly 112. Slide a
# 112 x 112 box along the diagonal, x1 = y1 = 0 .. 500 in steps of 0.1, and count levels:

# %%
starts = np.linspace(0, 500, 5001)
sliding = np.stack([starts, starts, starts + 112, starts + 112], 1).astype(np.float32)
as_f64 = sliding.astype(np.float64)
scale = np.sqrt((as_f64[:, 2] - as_f64[:, 0]) * (as_f64[:, 3] - as_f64[:, 1]))
without_eps = np.floor(4 + np.log2(scale / 224)).astype(int)
print("without epsilon:", dict(zip(*map(np.ndarray.tolist, np.unique(without_eps, return_counts=True)))))
print("with epsilon:   ", dict(zip(*map(np.ndarray.tolist, np.unique(ref.assign_fpn_levels(sliding),
                                                                   return_counts=True)))))

# %% [markdown]
# Without the 1e-6 about one box in six would drop to P2 only because of where it sits.

# %% [markdown]
# ## 3. Levels of the subset's boxes
#
# Which levels do real objects use? The subset's ground-truth boxes at the images' own size
# (about 640 x 480), and after the resize the model applies (shorter side 800, longer at most
# 1333), which moves every box up by log2(scale) levels.

# %%
data_root = resolve_data_root()
boxes_at, boxes_resized = [], []
for split in ("train2017", "val2017"):
    dataset = CocoDataset(data_root, split=split)
    for i in range(len(dataset)):
        info = dataset.image_info(i)
        target = dataset.load_target(i)
        b = target["boxes"].numpy().astype(np.float64)
        scale = min(800 / min(info["height"], info["width"]), 1333 / max(info["height"], info["width"]))
        boxes_at.append(b)
        boxes_resized.append(b * scale)
boxes_at, boxes_resized = np.concatenate(boxes_at), np.concatenate(boxes_resized)
levels_at = ref.assign_fpn_levels(boxes_at)
levels_resized = ref.assign_fpn_levels(boxes_resized)
print(f"{len(boxes_at)} boxes")
for k in range(2, 6):
    print(f"P{k}: {np.mean(levels_at == k):6.1%} at the original size, "
          f"{np.mean(levels_resized == k):6.1%} after the resize")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
bins = np.arange(1.5, 6.5)
ax.hist([levels_at, levels_resized], bins=bins, label=["original size", "resized (800)"],
        color=[viz.ANCHOR_COLOR, viz.PROPOSAL_COLOR])
ax.set_xticks([2, 3, 4, 5], ["P2", "P3", "P4", "P5"])
ax.set_ylabel("ground-truth boxes")
ax.set_title("FPN level of the subset's boxes")
ax.legend()
plt.show()

# %% [markdown]
# Most COCO objects are small: even after the resize to 800, about half of the boxes are pooled
# from P2, the finest level, where a stride of 4 px keeps their details. Few reach P5.

# %% [markdown]
# ## Your turn: the FPN level of a RoI
#
# Write `assign_fpn_levels` yourself, replacing the stub's `raise NotImplementedError`,
# and run the check below it: the boxes of section 2, tiny and huge RoIs that need the
# clamp, the sliding boxes a hair under 112 and 448 pixels that need the 1e-6, a
# zero-area box, other levels and canonical sizes, and random RoIs. A failing case
# shows the smallest failing input and names a classic slip when it recognises one
# (round instead of floor, say). `hint("assign_fpn_levels")` helps, more at each call; the last one is the solution.

# %%
def assign_fpn_levels(boxes, k_min=2, k_max=5, canonical_size=224, canonical_level=4):
    """The FPN level that pools each RoI (FPN paper, eq. 1; torchvision's LevelMapper).
    boxes (K, 4) float (x1, y1, x2, y2). With w = x2 - x1 and h = y2 - y1 (negative counts as 0):
    k = floor(canonical_level + log2(sqrt(w * h) / canonical_size) + 1e-6), clamped to
    [k_min, k_max]; a zero-area box goes to k_min.
    Returns levels (K,) int64.
    """
    raise NotImplementedError  # replace this line with your code

# %%
from mrcnn_edu.exercises import check, hint

check("assign_fpn_levels", assign_fpn_levels)


# %% [markdown]
# ## Summary
# - C2..C5 are the outputs of ResNet stages 2-5 at strides 4..32 (256..2048 channels for
#   ResNet-50); P2..P5 are FPN maps at the same strides with 256 channels each, and P6 = P5
#   subsampled.
# - A RoI reads level floor(4 + log2(sqrt(w h) / 224) + 1e-6), clamped to [2, 5]: the level where
#   it is 14 to 28 cells wide. The paper's constants are k0 = 4 and 224 with a floor: not
#   "244", not k0 = 5, not round.
# - The area decides, not the shape; most COCO boxes land on P2 and P3.
#
# ## Exercises
# 1. With k0 = 5, which level would a 224 px box read, and how many cells wide would it be?
#    Why would the 7 x 7 box head then see a coarser summary than intended?
# 2. Compute the level histogram for the resize to a shorter side of 600 instead of 800.
# 3. `assign_fpn_levels` clamps at P5. How many subset boxes would want a "P6" at 800 px?
