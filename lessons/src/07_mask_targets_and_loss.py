# %% [markdown]
# # 07 · Mask targets, the losses, and pasting masks back
#
# The mask branch predicts, for every positive RoI, an M x M grid (M = 28) per class. The Mask
# R-CNN paper (He et al. 2017, section 3):
#
# > The mask target is the intersection between an RoI and its associated ground-truth mask.
# > ... we apply a per-pixel sigmoid, and define L_mask as the average binary cross-entropy
# > loss. For an RoI associated with ground-truth class k, L_mask is only defined on the k-th
# > mask (other mask outputs do not contribute to the loss).
#
# Three pieces: cutting the ground truth to the RoI's 28 x 28 grid (training), the losses of
# all heads, and pasting a predicted 28 x 28 mask back into the image (inference).
# Code: `mrcnn_edu/reference/masks.py`, `mrcnn_edu/reference/losses.py` and their torch twins.

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=7, compact=True)
plt.show()

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from mrcnn_edu import ops, reference as ref, viz
from mrcnn_edu.data import CocoDataset, resolve_data_root
from mrcnn_edu.reference.masks import mask_coordinate

np.set_printoptions(precision=2, suppress=True)

# %% [markdown]
# ## 1. Mask targets
#
# `mask_targets(gt_masks, matched_gt_index, rois, size)`: RoIAlign the binary ground-truth mask
# of each RoI's matched object over the RoI, to size x size, then threshold at 0.5. Each output
# value is the fraction of the object under that grid cell (a bilinear estimate), so >= 0.5
# means "mostly object". We use `aligned=True` and `sampling_ratio=-1` (ceil(bin) samples).
#
# Hand example: a 10 x 10 image with an L-shaped object, one RoI that covers its upper-left
# 8 x 8 pixels, cut to 4 x 4 (every target cell covers 2 x 2 pixels):

# %%
gt = np.zeros((1, 10, 10), np.uint8)
gt[0, 1:9, 1:4] = 1  # the L's upright
gt[0, 6:9, 1:9] = 1  # the L's foot
roi = np.array([[0.0, 0, 8, 8]])
soft = ref.roi_align(gt[:, None].astype(float), np.array([[0.0, 0, 0, 8, 8]]), 4, 1.0)
print(gt[0])
print("fraction of object per target cell:\n", soft[0, 0])
print("target (>= 0.5):\n", ref.mask_targets(gt, np.array([0]), roi, size=4)[0])

# %% [markdown]
# The cells of 2 x 2 pixels holding 2 object pixels (0.5) stay on, those with 1 (0.25) go off.
#
# On a real image: proposals are jittered copies of the ground-truth boxes (as the RPN would
# give), so each target shows its object where the proposal put it -- shifted, cut off at the
# proposal's edge, or with background around it.

# %%
dataset = CocoDataset(resolve_data_root(), split="train2017")
image, target = dataset[4]  # five horses
masks, boxes = target["masks"].numpy(), target["boxes"].numpy().astype(np.float64)
rng = np.random.default_rng(0)
size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, 1)
proposals = boxes + rng.normal(0, 0.12, boxes.shape) * size  # (G, 4)
targets = ref.mask_targets(masks, np.arange(len(masks)), proposals, 28)
print(f"{len(masks)} objects, targets {targets.shape}, on-fraction per target:",
      targets.mean((1, 2)).round(2))

# %%
shown = min(len(masks), 5)
fig, axes = plt.subplots(1, shown + 1, figsize=(3.2 * (shown + 1), 3))
viz.show_image(image, ax=axes[0])
viz.draw_boxes(boxes[:shown], ax=axes[0], color=viz.GT_COLOR)
viz.draw_boxes(proposals[:shown], ax=axes[0], color=viz.PROPOSAL_COLOR)
for k in range(shown):
    axes[k + 1].imshow(targets[k], cmap="Greys", vmin=0, vmax=1)
    axes[k + 1].set_title(f"target {k}: {dataset.class_names[int(target['labels'][k])]}")
    axes[k + 1].axis("off")
axes[0].axis("off")
plt.show()

# %% [markdown]
# The twin gives the same targets by another route. A bilinear sample weighs rows and columns
# independently, so the mean over a bin's samples splits into a mean over rows and a mean over
# columns, and a RoI's whole 28 x 28 grid is two matrix products, `Ay @ crop @ Ax.T`: `Ay`
# (28, h) holds each bin's row weights over the h mask rows the RoI touches, `Ax` (28, w) its
# column weights, `crop` (h, w) is the mask there. For a one-channel mask at full resolution
# that is far cheaper than lesson 06's table of (row, weight) pairs per bin
# (`mrcnn_edu/ops/masks.py`):

# %%
twin_targets = ops.mask_targets(torch.from_numpy(masks), torch.arange(len(masks)),
                                torch.from_numpy(proposals), 28)
print("twin == reference:", np.array_equal(twin_targets.numpy(), targets))

# %% [markdown]
# **Pitfall: small objects lose their corners.** A box smaller than 28 px is *upsampled* to
# 28 x 28; bilinear upsampling rounds the object's corners, and the 0.5 threshold cuts them off.
# A 6 x 6 square cut to 28 x 28 with its own box as the RoI: a border cell reads about 0.6 (its
# single sample lies 0.39 pixel from the last object pixel's centre, towards the background), so
# it stays on; a corner cell reads about 0.6 x 0.6 = 0.37 and goes off, and so do its two
# neighbours along the border (about 0.6 x 0.82 = 0.498):

# %%
square = np.zeros((1, 12, 12), np.uint8)
square[0, 3:9, 3:9] = 1
corner = ref.mask_targets(square, np.array([0]), np.array([[3.0, 3, 9, 9]]), 28)[0]
print(f"on-fraction {corner.mean():.3f} (1.0 would be the full square); corner cell {corner[27, 27]:.0f}")
print("top-left corner of the target:\n", corner[:3, :3])

# %% [markdown]
# **`aligned=True`, where torchvision uses `aligned=False`.** torchvision builds its mask targets
# in `roi_heads.project_masks_on_boxes` with `roi_align(gt_masks, rois, (M, M), 1.)`: the
# defaults `sampling_ratio=-1` and **`aligned=False`**, the legacy half-pixel convention of
# lesson 06; its `maskrcnn_loss` then trains on those soft values without a threshold.
# Detectron2 (`BitMasks.crop_and_resize`) uses `aligned=True` and `>= 0.5`, as we do. Why it
# matters: `aligned=False` reads the mask half an image pixel to the right of and below each
# sample, so the object shifts half a pixel up and left in its target. In target cells that is
# M / (2 w) for an RoI w pixels wide: 2.3 cells for the 6-pixel square above, under one cell for
# the horses. The same RoIAlign call with either flag (with `aligned=True` it *is* `mask_targets`):

# %%
def roi_align_targets(gt_masks, rois, aligned, size=28):
    """(K, size, size) targets of RoI k over gt mask k: RoIAlign with `aligned`, then >= 0.5."""
    with_batch = np.concatenate([np.arange(len(rois))[:, None], rois], 1)  # (K, 5)
    soft = ref.roi_align(gt_masks[:, None].astype(np.float64), with_batch, size, 1.0,
                         sampling_ratio=-1, aligned=aligned)[:, 0]  # (K, size, size)
    return (soft >= 0.5).astype(np.float64)


print("aligned=True is mask_targets:", np.array_equal(roi_align_targets(masks, proposals, True), targets))
legacy_square = roi_align_targets(square, np.array([[3.0, 3, 9, 9]]), aligned=False)[0]
for name, t in (("aligned=True ", corner), ("aligned=False", legacy_square)):
    row = lambda r: "".join(str(int(v)) for v in r)  # noqa: E731
    print(f"{name}: {int(t.sum())} of 784 on; first row {row(t[0])}, last row {row(t[27])}, "
          f"first column {row(t[:, 0])}")

# %% [markdown]
# With `aligned=False` the square's target loses its bottom rows and right columns and fills the
# top row and left column: a 6 x 6 square learnt that way is predicted up and to the left. On
# the horses, paste each target back over its proposal (section 4) and compare it with the
# ground truth inside that proposal: the `aligned=True` targets describe the object better; the
# RoIs under 60 pixels lose 0.03-0.07 IoU with `aligned=False`, the two over 110 pixels at most 0.01.

# %%
legacy = roi_align_targets(masks, proposals, aligned=False)  # (G, 28, 28)
inside = ref.paste_masks(np.ones_like(targets), proposals, masks.shape[1:])  # (G, H, W) proposal pixels
truth = (masks > 0) & inside  # the part of each object that its proposal can show
print("proposal widths (px):", (proposals[:, 2] - proposals[:, 0]).round(1))
print("target cells that differ:", (legacy != targets).sum((1, 2)))
for name, t in (("aligned=True ", targets), ("aligned=False", legacy)):
    back = ref.paste_masks(t, proposals, masks.shape[1:])  # (G, H, W)
    iou = (back & truth).sum((1, 2)) / (back | truth).sum((1, 2))
    print(f"{name}: IoU with the ground truth inside the proposal {iou.round(3)}")
k = int((legacy != targets).sum((1, 2)).argmax())
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, t, title in ((axes[0], targets[k], "aligned=True"), (axes[1], legacy[k], "aligned=False"),
                     (axes[2], legacy[k] - targets[k], "blue gained, red lost")):
    difference = title.startswith("blue")
    ax.imshow(t, cmap="RdBu" if difference else "Greys", vmin=-1 if difference else 0, vmax=1)
    ax.set_title(f"target {k}: {title}")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. The losses
#
# All heads' losses, with torchvision's conventions:
#
# - **Smooth L1** for box deltas: 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta, summed;
#   beta = 1/9 for both the RPN and the box head.
# - **RPN objectness**: mean binary cross-entropy over the *sampled* anchors (labels 0 or 1;
#   -1 means not sampled); **RPN boxes**: smooth L1 over positive anchors / number sampled.
# - **Box head**: mean cross-entropy over the K RoIs' C + 1 class scores; smooth L1 on the
#   positive RoIs' deltas *for their ground-truth class* (the head predicts 4 deltas per class),
#   divided by K.
# - **Mask**: mean binary cross-entropy with logits over the 28 x 28 pixels of the ground-truth
#   class's channel only.
#
# Smooth L1 is quadratic near 0 (gentle on small errors) and linear beyond beta (bounded
# gradients for outliers):

# %%
d = np.linspace(-1, 1, 201)
fig, ax = plt.subplots(figsize=(5, 3))
for beta, color in ((1 / 9, viz.PROPOSAL_COLOR), (0.5, viz.DETECTION_COLOR), (0.0, viz.ANCHOR_COLOR)):
    ax.plot(d, ref.smooth_l1_loss(d, np.zeros_like(d), beta, reduction="none"), color=color,
            label=f"beta = {beta:.3g}")
ax.set_xlabel("pred - target")
ax.legend()
plt.show()

# %% [markdown]
# Hand example for the box head: K = 2 RoIs, C = 2 classes. RoI 0 is background (label 0), so
# only its classification counts; RoI 1 is class 1 and its loss reads the 4 deltas of class 1
# (columns 4..7), ignoring class 2's wild deltas.

# %%
class_logits = np.log(np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]))
box_regression = np.zeros((2, 12))
box_regression[0] = 7.0  # background RoI: ignored
box_regression[1, 4:8] = [0.05, 0.0, 0.0, 0.0]  # class 1: |0.05| < 1/9, quadratic
box_regression[1, 8:12] = 9.0  # class 2: ignored
cls_loss, box_loss = ref.fast_rcnn_loss(class_logits, box_regression, np.array([0, 1]), np.zeros((2, 4)))
print(f"classification: {cls_loss:.4f} = -log(0.5) = {-np.log(0.5):.4f}")
print(f"box: {box_loss:.6f} = 0.5 * 0.05^2 / (1/9) / 2 = {0.5 * 0.05 ** 2 * 9 / 2:.6f}")
twin = ops.fast_rcnn_loss(torch.tensor(class_logits), torch.tensor(box_regression),
                          torch.tensor([0, 1]), torch.zeros(2, 4, dtype=torch.float64))
print("twin:", [round(t.item(), 6) for t in twin])

# %% [markdown]
# ## 3. Per-class sigmoid vs per-pixel softmax
#
# A semantic-segmentation FCN puts a softmax over classes at every pixel: the classes compete,
# and a pixel that looks like "dog" is pushed away from "cat". Mask R-CNN decouples the two
# jobs: the box head decides the class; the mask head only answers "is this pixel part of the
# object?" for that class, with an independent sigmoid per class. Only the ground-truth class's
# channel gets any gradient:

# %%
gen = torch.Generator().manual_seed(0)
logits = torch.randn(1, 4, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)  # C + 1 = 4
labels, mask_target = torch.tensor([2]), torch.ones(1, 3, 3, dtype=torch.float64)
ops.mask_loss(logits, labels, mask_target).backward()
print("sigmoid, gradient norm per channel:", logits.grad.norm(dim=(2, 3))[0].numpy().round(3))
logits.grad = None
# the softmax alternative: each pixel classifies itself among the channels, target = class 2
F.cross_entropy(logits, torch.full((1, 3, 3), 2)).backward()
print("softmax, gradient norm per channel:", logits.grad.norm(dim=(2, 3))[0].numpy().round(3))

# %% [markdown]
# The paper's ablation (Table 2b, ResNet-50-C4, COCO mask AP): multinomial softmax masks
# 24.8 AP / 44.1 AP50 / 25.1 AP75; independent sigmoid masks 30.3 / 51.2 / 31.5 -- a gain of
# 5.5 AP from decoupling alone. The class-agnostic variant (one sigmoid mask for all classes)
# is nearly as good (29.7 AP), which says the same thing: the mask need not know the class.
#
# Our `mask_loss` keeps torchvision's layout -- C + 1 channels, indexed by label, channel 0 never
# used -- and the reference agrees with the twin:

# %%
print(inspect.getsource(ref.mask_loss))
mask_logits = rng.normal(size=(6, 4, 28, 28)) * 2
pos_labels, mask_targets = rng.integers(1, 4, 6), (rng.uniform(size=(6, 28, 28)) > 0.5).astype(float)
print("reference:", round(ref.mask_loss(mask_logits, pos_labels, mask_targets), 6),
      " twin:", round(ops.mask_loss(torch.tensor(mask_logits), torch.tensor(pos_labels),
                                    torch.tensor(mask_targets)).item(), 6))

# %% [markdown]
# ## 4. Pasting masks back at 0.5
#
# At inference each detection's 28 x 28 probabilities go back into the image. `paste_masks`
# defines the inverse map exactly: an image pixel whose centre (x + 0.5, y + 0.5) lies inside
# the box reads the mask at
#
# $$u = \frac{x + 0.5 - x_1}{x_2 - x_1} M - 0.5, \qquad v = \frac{y + 0.5 - y_1}{y_2 - y_1} M - 0.5$$
#
# (clamped to [0, M - 1], bilinear), and is on when the value is >= 0.5. Hand example: a 3 x 3
# mask whose left column is 1, pasted into the box (2, 3, 6, 8) of a 10 x 10 image, M = 3. The
# box covers pixel columns 2..5 (centres 2.5 .. 5.5) and rows 3..7; along x the formula gives
# u = (x + 0.5 - 2) / 4 x 3 - 0.5 = -0.125 (clamped to 0), 0.625, 1.375, 2.125 (clamped to 2),
# so the mask values read are 1, 0.375, 0, 0: only column 2 is on. `mask_coordinate` is the
# package's map from a pixel to (low cell, high cell, fraction):

# %%
left = np.zeros((1, 3, 3))
left[0, :, 0] = 1
for x in range(2, 6):
    u = (x + 0.5 - 2.0) / (6.0 - 2.0) * 3 - 0.5
    low, high, frac = mask_coordinate(x, 2.0, 6.0, 3)
    value = (1 - frac) * left[0, 0, low] + frac * left[0, 0, high]
    print(f"column {x}: u = {u:6.3f} -> cells {low}, {high}, fraction {frac:.3f} -> reads {value:.3f}")
pasted = ref.paste_masks(left, np.array([[2.0, 3, 6, 8]]), (10, 10))
print(pasted[0].astype(int))
print("twin equal:", np.array_equal(pasted, ops.paste_masks(torch.tensor(left),
                                                            torch.tensor([[2.0, 3, 6, 8]]), (10, 10)).numpy()))

# %% [markdown]
# Round trip on the real image: ground-truth masks -> 28 x 28 targets over their own boxes ->
# pasted back. What is lost is what 28 x 28 cannot hold: fine structure of large objects.

# %%
own = ref.mask_targets(masks, np.arange(len(masks)), boxes, 28)
back = ref.paste_masks(own, boxes, masks.shape[1:])
iou = (back & (masks > 0)).sum((1, 2)) / np.maximum((back | (masks > 0)).sum((1, 2)), 1)
print("mask IoU after the round trip per object:", iou.round(3))
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
viz.draw_masks(masks, ax=viz.show_image(image, ax=axes[0], title="ground truth"))
viz.draw_masks(back, ax=viz.show_image(image, ax=axes[1], title="28 x 28 and pasted back"))
plt.show()

# %% [markdown]
# ## Your turn: the mask target of one RoI, and the mask loss
#
# Write `mask_target_single`, section 1's recipe for one RoI (you may call `ref.roi_align`), and
# `mask_loss`, sections 2-3's per-class sigmoid loss. `check` compares them with the package on the
# hand examples, on edge cases (cells exactly half covered, boxes that leave the image, a box on
# background only, logits of +-100) and on random inputs, and names the most likely slip when a
# case fails. `hint("mask_target_single")` gives a hint, and one more each time you call it.

# %%
def mask_target_single(gt_mask, box, size=28):
    """The size x size mask target of ONE RoI.
    gt_mask (H, W) uint8 0/1: the matched object's mask in the image; box (4,) float
    (x1, y1, x2, y2): the RoI in image pixels. Returns target (size, size) float of 0.0 / 1.0:
    RoIAlign of the mask over the box to size x size (spatial_scale 1, aligned=True,
    sampling_ratio=-1, i.e. ceil(bin size) samples per bin side), then >= 0.5.
    """
    raise NotImplementedError

# %%
from mrcnn_edu.exercises import check, hint

check("mask_target_single", mask_target_single)

# %%
def mask_loss(mask_logits, labels, mask_targets):
    """The Mask R-CNN mask loss: per-class sigmoids, only the ground-truth class's channel counts.
    mask_logits (K, C + 1, M, M) float, one channel per class (channel 0, background, unused);
    labels (K,) int in 1..C, the class of each positive RoI; mask_targets (K, M, M) of 0.0 / 1.0.
    Returns a float: the mean over the K * M * M pixels of the channel labels[k] of
    BCE(x, z) = -z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x)), computed stably
    (no inf or NaN for |x| of 100). 0.0 when K = 0.
    """
    raise NotImplementedError

# %%
check("mask_loss", mask_loss)

# %% [markdown]
# ## Summary
# - Mask targets: RoIAlign (`aligned=True`) of the ground-truth mask over the RoI to 28 x 28,
#   threshold 0.5. Objects smaller than 28 px lose their corners. torchvision's legacy
#   `aligned=False` shifts every target half an image pixel up and left.
# - Losses: smooth L1 with beta 1/9 on positives' deltas (RPN: / sampled anchors; box head: on
#   the true class's deltas, / K), BCE for objectness, cross-entropy for classes, and per-class
#   sigmoid BCE for masks on the true class's channel only.
# - Decoupling classes from masks (sigmoid, not softmax) was worth 5.5 mask AP in the paper.
# - Pasting: pixel centres inside the box sample the mask bilinearly at the formula above.
#
# ## Exercises
# 1. Repeat the `aligned=True` / `aligned=False` comparison of section 1 with `size=14` and
#    `size=56`. How does the number of changed target cells grow with M, and why?
# 2. Paste the targets back with threshold 0.3 and 0.7. How does the mean IoU move, and why is
#    0.5 the natural choice for targets made at 0.5?
# 3. Write the class-agnostic mask loss (one channel) and check that it equals `mask_loss` when
#    all RoIs share one label.
