# %% [markdown]
# # 01 · Boxes and IoU
#
# Every stage of Mask R-CNN talks about rectangles: anchors, proposals, detections, ground truth.
# And every decision about two rectangles — is this anchor a positive? does this detection
# duplicate that one? is this prediction a true positive for COCO? — is made with one number,
# the **intersection over union**:
#
# $$\mathrm{IoU}(A, B) = \frac{|A \cap B|}{|A \cup B|} = \frac{|A \cap B|}{|A| + |B| - |A \cap B|}$$
#
# This lesson fixes the box format, computes IoU by hand, then vectorised over all pairs, and
# checks the numpy reference against its torch twin.
#
# Code: `mrcnn_edu/reference/boxes.py` (numpy) and `mrcnn_edu/ops/boxes.py` (torch).

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=1, compact=True)
plt.show()

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from mrcnn_edu import ops, reference as ref, viz
from mrcnn_edu.data import CocoDataset, resolve_data_root

np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## 1. Box formats
#
# COCO stores a box as `(x, y, w, h)`: top-left corner, width, height. We convert once, when the
# data is loaded, to **`(x1, y1, x2, y2)`** and use that everywhere. The conventions:
#
# - coordinates are float pixels of the input image; pixel (row i, col j) covers
#   $[j, j+1) \times [i, i+1)$, so an object covering columns 10..19 has x1 = 10, x2 = 20;
# - width = x2 - x1, **no +1** (old Detectron code used x2 - x1 + 1: see the pitfall below);
# - sizes are (height, width).
#
# Here is one real annotation, as COCO wrote it and as our dataset gives it.

# %%
dataset = CocoDataset(resolve_data_root(), split="train2017")
image, target = dataset[4]
first = dataset.coco.anns[dataset.coco.getAnnIds(imgIds=[dataset.image_ids[4]])[0]]
print("COCO (x, y, w, h):    ", np.round(first["bbox"], 1))
print("ours (x1, y1, x2, y2):", target["boxes"][0].numpy().round(1))
print("image (C, H, W):      ", tuple(image.shape))

# %%
ax = viz.show_sample(image, target, class_names=dataset.class_names)
ax.set_title("ground truth boxes (green) and masks")
plt.show()

# %% [markdown]
# ## 2. IoU of two boxes, by hand
#
# Take A = (1, 1, 5, 4) and B = (3, 2, 7, 6).
#
# - |A| = 4 × 3 = 12, |B| = 4 × 4 = 16
# - the intersection is the box of the larger top-left and the smaller bottom-right corner:
#   (max(1, 3), max(1, 2), min(5, 7), min(4, 6)) = (3, 2, 5, 4), area 2 × 2 = 4
# - the union is 12 + 16 - 4 = 24, so IoU = 4 / 24 = 1/6 ≈ 0.167.

# %%
a = np.array([[1.0, 1, 5, 4]])
b = np.array([[3.0, 2, 7, 6]])
fig, ax = plt.subplots(figsize=(4, 3.5))
viz.draw_boxes(a, ax=ax, color=viz.GT_COLOR, labels=[0], class_names=["A"])
viz.draw_boxes(b, ax=ax, color=viz.PROPOSAL_COLOR, labels=[0], class_names=["B"])
ax.add_patch(Rectangle((3, 2), 2, 2, color="black", alpha=0.25))  # the intersection (3, 2, 5, 4)
ax.set_xlim(0, 8); ax.set_ylim(7, 0); ax.set_aspect("equal"); ax.grid(alpha=0.3)
ax.set_title("A ∩ B = (3, 2, 5, 4), IoU = 4 / 24")
plt.show()

# %%
print("area A, B:", ref.box_area(a), ref.box_area(b))
print("IoU(A, B):", ref.box_iou(a, b))

# %% [markdown]
# ## 3. All pairs at once
#
# Matching anchors to ground truth needs the IoU of every anchor with every object: some
# 260,000 anchors of a 1024 × 1024 image (lesson 02) × tens of objects. `box_iou(boxes1,
# boxes2)` broadcasts `(N, 1, 2)` corners against `(1, M, 2)` corners to get the `(N, M, 2)`
# intersection corners in one go; a negative extent means the boxes do not overlap and is
# clamped to 0. The union is never 0 unless both boxes have zero area; then the IoU is defined
# as 0 rather than 0/0 = NaN.

# %%
print(inspect.getsource(ref.box_iou))

# %%
boxes = target["boxes"].numpy().astype(np.float64)  # (N, 4) the horses
print("pairwise IoU of the ground truth boxes:")
print(ref.box_iou(boxes, boxes))

# %% [markdown]
# Boxes of one image overlap little — ground-truth objects are mostly separate. Shifting a box
# shows how fast IoU falls: sliding a box by a third of its width already drops it to 0.5.

# %%
box = boxes[:1]  # (1, 4)
width = box[0, 2] - box[0, 0]
shifts = np.linspace(0, 1.2, 13) * width
moved = box + np.stack([shifts, 0 * shifts, shifts, 0 * shifts], axis=1)  # (13, 4)
ious = ref.box_iou(box, moved)[0]
for s, v in zip(shifts / width, ious):
    print(f"shift {s:4.1f} x width -> IoU {v:.3f}")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
viz.show_image(image, ax=left)
viz.draw_boxes(box, ax=left, color=viz.GT_COLOR)
viz.draw_boxes(moved[[3, 5]], ax=left, color=viz.PROPOSAL_COLOR, scores=ious[[3, 5]])
left.set_title("a box and two shifted copies (caption: IoU)")
x1, y1, x2, y2 = box[0]
left.set_xlim(x1 - 0.5 * width, x2 + 1.2 * width); left.set_ylim(y2 + 0.8 * width, y1 - 0.8 * width)  # zoom in
right.plot(shifts / width, ious, marker="o")
right.set_xlabel("shift / width"); right.set_ylabel("IoU"); right.grid(alpha=0.3)
right.set_title("IoU of a box with its shifted copy")
plt.show()

# %% [markdown]
# The curve for a shift of t widths is (1 - t) / (1 + t): IoU is harsh. This is why a
# 0.5 IoU threshold (COCO AP50) is already a fairly loose match.

# %% [markdown]
# ## 4. The torch twin
#
# The model trains with `mrcnn_edu.ops.box_iou`: the same lines with `torch` in place of `np`,
# on any device. On random boxes in float64 the two agree to the last bits.

# %%
rng = np.random.default_rng(0)
xy = rng.uniform(0, 500, (200, 2))
random_boxes = np.concatenate([xy, xy + rng.uniform(1, 200, (200, 2))], axis=1)  # (200, 4)
want = ref.box_iou(random_boxes, random_boxes[:50])
got = ops.box_iou(torch.tensor(random_boxes), torch.tensor(random_boxes[:50]))
print("shape:", tuple(got.shape), "| allclose:", np.allclose(got.numpy(), want, rtol=1e-12, atol=0))
print("max |difference|:", float(np.abs(got.numpy() - want).max()))

# %% [markdown]
# ## 5. Clipping and tiny boxes
#
# Predicted boxes can leave the image. `clip_boxes(boxes, (H, W))` clamps x to [0, W] and y to
# [0, H]; boxes that end up thinner than `min_size` are removed with `remove_small_boxes`, which
# returns the indices to keep (width >= min_size and height >= min_size).

# %%
h, w = image.shape[1:]
proposals = np.array([[-20.0, 30, 100, 90], [600, 400, 700, 500], [630, 10, 700, 40]])
clipped = ref.clip_boxes(proposals, (h, w))
print("clipped:\n", clipped)
print("keep (min_size 16):", ref.remove_small_boxes(clipped, 16))

# %% [markdown]
# ## 6. Pitfalls
#
# **The +1 convention.** Some older code measured width as x2 - x1 + 1, treating coordinates as
# inclusive pixel indices. Mixing the two conventions inside one model shifts every IoU, most
# for small boxes:

# %%
small_a, small_b = np.array([[0.0, 0, 4, 4]]), np.array([[2.0, 0, 6, 4]])
plus_one = lambda bx: bx + np.array([0, 0, 1, 1])  # what "+1" areas amount to
print("IoU, width = x2 - x1:    ", ref.box_iou(small_a, small_b)[0, 0].round(3))
print("IoU, width = x2 - x1 + 1:", ref.box_iou(plus_one(small_a), plus_one(small_b))[0, 0].round(3))

# %% [markdown]
# **NaN from empty boxes.** Two zero-area boxes have union 0, and inter / union = 0/0 = NaN,
# which would poison a `max` over a row of the matching matrix. Our `box_iou` returns 0 there:

# %%
points = np.array([[5.0, 5, 5, 5], [5.0, 5, 5, 5]])
print(ref.box_iou(points, points))

# %% [markdown]
# ## Your turn: `box_iou`
#
# Now write `box_iou` yourself, in numpy as in section 3 (torch works too): replace the stub's
# `raise NotImplementedError` in the next cell with your code and run the cell after it.
# `check` runs your function and the reference on the same inputs: the hand example of
# section 2 (IoU 1/6), boxes that touch along an edge or at a corner, disjoint, nested and
# zero-area boxes, empty sets, and random boxes. It prints one line per case; when a case
# fails it shows the smallest failing input, the expected and the actual output, and names
# the mistake when it is a classic one (a `+1` in the widths, say). `hint("box_iou")`
# gives a hint, and more at each call; the last one is the solution. With the stub in
# place, the check says that the exercise has not been attempted yet.

# %%
def box_iou(boxes1, boxes2):
    """Pairwise intersection over union.
    boxes1 (N, 4) and boxes2 (M, 4): float (x1, y1, x2, y2) with x1 <= x2, y1 <= y2;
    width = x2 - x1 (no +1). Returns iou (N, M) float, iou[i, j] = IoU(boxes1[i], boxes2[j])
    = inter / (area1 + area2 - inter). Disjoint, touching or zero-area pairs give 0, never NaN.
    N or M may be 0.
    """
    raise NotImplementedError  # replace this line with your code

# %%
from mrcnn_edu.exercises import check, hint

check("box_iou", box_iou)


# %% [markdown]
# ## Summary
#
# - Boxes are `(x1, y1, x2, y2)` float pixels, width = x2 - x1; COCO's `(x, y, w, h)` is
#   converted once at loading.
# - IoU = intersection / union, in [0, 1]; disjoint or empty pairs give 0, never NaN.
# - `box_iou(boxes1, boxes2)` gives the `(N, M)` matrix by broadcasting; the torch twin is the
#   same code and agrees in float64.
# - `clip_boxes` keeps boxes inside the image, `remove_small_boxes` drops slivers.
#
# ## Exercises
#
# 1. Show that for two boxes of equal size shifted by t widths along x, IoU = (1 - t) / (1 + t).
# 2. What is the largest IoU a 32 × 32 box can have with a 64 × 64 box? With a 32 × 64 box?
# 3. `box_iou` builds an `(N, M, 2)` intermediate. How much memory does it take for 200,000
#    anchors and 50 objects in float32? Write a version that processes anchors in chunks.
# 4. Write `generalized_iou` (GIoU): IoU minus the fraction of the smallest enclosing box not
#    covered by the union. Why is it useful as a loss when boxes do not overlap?
