# %% [markdown]
# # 03 · Box deltas: encode and decode
#
# The RPN and the box head never output box corners. They output four numbers that say how to
# move and stretch a reference box (an anchor, or a proposal) onto the object. Faster R-CNN
# (Ren et al., 2015, eq. 2):
#
# $$t_x = (x - x_a) / w_a,\quad t_y = (y - y_a) / h_a,\quad t_w = \log(w / w_a),\quad t_h = \log(h / h_a)$$
#
# where (x, y) is a box centre and (w, h) its size, subscript a for the anchor. We call the
# direction anchor + target → deltas **encode** and anchor + deltas → box **decode**, and follow
# torchvision's BoxCoder exactly: w = x2 - x1, centre = x1 + w / 2, optional weights
# (wx, wy, ww, wh) multiplying the four deltas, and a clamp on dw, dh before `exp`.
#
# Code: `mrcnn_edu/reference/box_coder.py` and its twin `mrcnn_edu/ops/box_coder.py`.

# %%
# You are here: this lesson's stages in the pipeline map of lesson 00.
import matplotlib.pyplot as plt

from mrcnn_edu import viz

viz.pipeline_map(highlight=3, compact=True)
plt.show()

# %%
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrcnn_edu import ops, reference as ref, viz
from mrcnn_edu.data import CocoDataset, resolve_data_root

np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## 1. A hand example
#
# Anchor (0, 0, 10, 10): centre (5, 5), 10 × 10. Target (5, 0, 25, 40): centre (15, 20), 20 × 40.
#
# - dx = (15 - 5) / 10 = 1, dy = (20 - 5) / 10 = 1.5
# - dw = log(20 / 10) = log 2 ≈ 0.693, dh = log(40 / 10) = log 4 ≈ 1.386

# %%
anchor = np.array([[0.0, 0, 10, 10]])
target = np.array([[5.0, 0, 25, 40]])
deltas = ref.encode_boxes(anchor, target)
print("deltas:", deltas)
print("decoded:", ref.decode_boxes(anchor, deltas))

# %%
fig, ax = plt.subplots(figsize=(4, 5))
viz.draw_boxes(anchor, ax=ax, color=viz.ANCHOR_COLOR, labels=[0], class_names=["anchor"])
viz.draw_boxes(target, ax=ax, color=viz.GT_COLOR, labels=[0], class_names=["target"])
ax.annotate("", xy=(15, 20), xytext=(5, 5), arrowprops=dict(arrowstyle="->"))
ax.text(10.5, 11, "(dx, dy) = (1, 1.5)\nin anchor widths", fontsize=8)
ax.set_xlim(-2, 28); ax.set_ylim(42, -2); ax.set_aspect("equal"); ax.grid(alpha=0.3)
ax.set_title("dw = log 2, dh = log 4")
plt.show()

# %%
print(inspect.getsource(ref.encode_boxes))

# %%
print(inspect.getsource(ref.decode_boxes))

# %% [markdown]
# ## 2. Why log space for widths?
#
# The offsets are divided by the anchor's size, so a scene scaled up 2× has the same deltas.
# For the size, a ratio is the natural measure — "twice as wide" and "half as wide" should be
# equally far from "same width", in opposite directions. The log does exactly that, and its
# inverse, `exp`, can only give a positive width whatever the network predicts. The linear
# alternative (w - w_a) / w_a is lopsided (-0.5 for half, +1 for double), bounded below by -1,
# and a prediction below -1 decodes to a negative width.

# %%
ratios = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
targets = np.stack([np.zeros(5), np.zeros(5), 10 * ratios, np.full(5, 10.0)], axis=1)  # widths 2.5..40
log_dw = ref.encode_boxes(np.repeat(anchor, 5, axis=0), targets)[:, 2]
for r, d in zip(ratios, log_dw):
    print(f"w / w_a = {r:4.2f}:  log-space dw = {d:+.3f}   linear (w - w_a) / w_a = {r - 1:+.3f}")

# %% [markdown]
# ## 3. The weights (10, 10, 5, 5)
#
# The RPN encodes with weights (1, 1, 1, 1). The box head refines *proposals* that already
# overlap their object (IoU >= 0.5), so its raw deltas are small: around 0.1 for the centre,
# 0.2 for the log-size. Multiplying by (10, 10, 5, 5) brings them to roughly unit scale, which
# suits the smooth-L1 loss and a randomly initialised linear layer. The numbers have a history:
# Fast R-CNN normalised its regression targets to zero mean and unit variance, py-faster-rcnn
# fixed the standard deviations at (0.1, 0.1, 0.2, 0.2), and Detectron and torchvision write
# their inverses as the weights (10, 10, 5, 5). Here are jittered copies of the subset's
# ground-truth boxes, kept when IoU >= 0.5 as the head's positives are:

# %%
dataset = CocoDataset(resolve_data_root(), split="train2017")
gt = np.concatenate([dataset.load_target(i)["boxes"].numpy() for i in range(40)]).astype(np.float64)
rng = np.random.default_rng(0)
gt = np.repeat(gt, 20, axis=0)  # (G * 20, 4)
wh = np.concatenate([gt[:, 2:] - gt[:, :2]] * 2, axis=1)  # (G * 20, 4) box sizes
proposals = gt + rng.normal(0, 0.12, gt.shape) * wh  # each corner moved by ~12% of the size
proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 1)  # keep x1 < x2, y1 < y2
iou = np.diag(ref.box_iou(proposals[:2000], gt[:2000]))  # only the pairs themselves
keep = iou >= 0.5
print(f"{keep.sum()} proposal / ground-truth pairs with IoU >= 0.5")
raw = ref.encode_boxes(proposals[:2000][keep], gt[:2000][keep])
weighted = ref.encode_boxes(proposals[:2000][keep], gt[:2000][keep], weights=(10.0, 10.0, 5.0, 5.0))
print("std of raw deltas (dx, dy, dw, dh):     ", raw.std(axis=0))
print("std with weights (10, 10, 5, 5):        ", weighted.std(axis=0))

# %% [markdown]
# `decode_boxes` divides by the same weights, so encode and decode must always be called with
# the same weights: `decode_boxes(anchors, encode_boxes(anchors, targets, w), w)` is `targets`.

# %% [markdown]
# ## 4. The clamp
#
# torchvision's BoxCoder, like Detectron before it, caps dw / ww and dh / wh at
# log(1000 / 16) ≈ 4.135 before the `exp`, so a decoded box is at most 62.5 times as wide or as
# tall as its anchor (or proposal). Therefore decode undoes encode **except** where the target is
# more than 62.5 times bigger than its anchor. What the clamp is for, precisely:
#
# - **Not the losses.** The box losses compare predicted deltas with encoded targets (smooth L1,
#   lesson 07); no decoded box enters them, so the clamp changes no loss and no gradient. It acts
#   only where boxes are decoded: the RPN's proposals and the final detections. (A loss computed
#   on decoded boxes, such as the GIoU option of detectron2, does go through it.)
# - **Keeping `exp` finite.** That is the reason the sources give: "prevent np.exp from
#   overflowing" (Detectron's config), "Prevent sending too large values into torch.exp()"
#   (torchvision's BoxCoder). `exp` overflows to inf only above ≈ 88.7 in float32 — exp(20) ≈
#   4.9 × 10⁸ is a perfectly finite float32 — but already above ≈ 11.1 in float16, in a model
#   run in half precision. (Under `torch.autocast`, `exp` itself runs in float32, and our model
#   decodes in float32 anyway.) An infinite width puts the corners at -inf and +inf, and the
#   first step that combines them gives NaN: the centre x1 + (x2 - x1) / 2 = -inf + inf, which
#   encode computes for a proposal, or an area inf · 0 for a box of zero height. Clipping to the
#   image right after decoding, as the RPN does, happens to turn ±inf back into 0 and W; any
#   step that combines the corners first gets NaN, and NaN then spreads through IoU and NMS.
# - **The value is a size heuristic.** Detectron's comment: "Heuristic choice based on that would
#   scale a 16 pixel anchor up to 1000 pixels". 16 px is the base anchor size and the feature
#   stride of the original Faster R-CNN code, 1000 px the longest image side it used (shorter
#   side 600, longer at most 1000). No real object is more than 62.5 times the size of the box
#   regressed onto it; a larger factor comes only from a wild prediction (a diverging step, a
#   learning rate that is too high), and the clamp turns it into a large but finite box. Any
#   clamp below 11 keeps `exp` itself finite in float16, but the width aw * exp(dw) must fit too:
#   for a 512-pixel anchor that needs a clamp below log(65504 / 512) ~ 4.85. log(1000 / 16) ~ 4.14
#   passes, and it also keeps the box meaningful.

# %%
print("clamp: log(1000 / 16) =", round(math.log(1000 / 16), 3))
wild = np.array([[0.0, 0.0, 20.0, 0.0]])
box = ref.decode_boxes(anchor, wild)
print("dw = 20 decodes to width", (box[0, 2] - box[0, 0]).round(1), "= 62.5 x the anchor's 10")
with np.errstate(over="ignore", invalid="ignore"):  # the overflows are the point here
    for dtype in (np.float16, np.float32):
        print(f"{dtype.__name__}: exp overflows above {math.log(np.finfo(dtype).max):.2f};  "
              f"exp(12) = {np.exp(dtype(12)):.4g}, exp(20) = {np.exp(dtype(20)):.4g}, "
              f"exp(100) = {np.exp(dtype(100))}")
    # decode's formula without the clamp, in float32, for dw = 100 on the anchor (0, 0, 10, 10)
    w = np.float32(10) * np.exp(np.float32(100))  # inf
    x1, x2 = np.float32(5) - w / 2, np.float32(5) + w / 2  # -inf, inf
    print(f"unclamped: x1 = {x1}, x2 = {x2}, centre x1 + (x2 - x1) / 2 = {x1 + (x2 - x1) / 2}")
half = ops.decode_boxes(torch.tensor([[0.0, 0, 512, 512]], dtype=torch.float16),
                        torch.tensor([[0.0, 0, 12, 12]], dtype=torch.float16))  # the largest anchor
print("float16, dw = dh = 12 on a 512 px anchor, clamped: finite box:", bool(torch.isfinite(half).all()))

# %%
rng = np.random.default_rng(1)
xy = rng.uniform(0, 500, (1000, 2))
anchors = np.concatenate([xy, xy + rng.uniform(8, 64, (1000, 2))], axis=1)  # (1000, 4)
xy = rng.uniform(0, 500, (1000, 2))
targets = np.concatenate([xy, xy + rng.uniform(8, 1500, (1000, 2))], axis=1)  # some > 62.5 x
round_trip = ref.decode_boxes(anchors, ref.encode_boxes(anchors, targets))
clamped = ((targets[:, 2] - targets[:, 0]) / (anchors[:, 2] - anchors[:, 0]) > 62.5) | \
          ((targets[:, 3] - targets[:, 1]) / (anchors[:, 3] - anchors[:, 1]) > 62.5)
same = np.isclose(round_trip, targets, rtol=1e-9).all(axis=1)
print(f"round trip exact for {same.sum()} of 1000 pairs; {clamped.sum()} pairs need > 62.5 x;")
print("the inexact ones are exactly the clamped ones:", np.array_equal(~same, clamped))

# %% [markdown]
# ## 5. The torch twin
#
# The model uses `mrcnn_edu.ops.encode_boxes` / `decode_boxes`, the same lines in torch. In
# float64 they agree with the reference to rounding. `decode_boxes` also accepts one box per
# class: deltas of shape (N, 4 · C) give boxes (N, 4 · C), as the box head needs.

# %%
twin_deltas = ops.encode_boxes(torch.tensor(anchors), torch.tensor(targets), (10.0, 10.0, 5.0, 5.0))
want = ref.encode_boxes(anchors, targets, (10.0, 10.0, 5.0, 5.0))
print("encode allclose:", np.allclose(twin_deltas.numpy(), want, rtol=1e-13, atol=1e-13))
twin_boxes = ops.decode_boxes(torch.tensor(anchors), twin_deltas, (10.0, 10.0, 5.0, 5.0))
print("decode allclose:", np.allclose(twin_boxes.numpy(), ref.decode_boxes(anchors, want, (10.0, 10.0, 5.0, 5.0)),
                                      rtol=1e-13))
per_class = ops.decode_boxes(torch.tensor(anchors), torch.zeros(1000, 4 * 3, dtype=torch.float64))
print("per-class decode shape:", tuple(per_class.shape))

# %% [markdown]
# ## 6. Pitfall: dw = log((w - w') / w')
#
# Some write-ups give the width delta as log((w - w') / w'), w' the anchor's width. That mixes
# the linear and the log forms, and it breaks on the most common case of all: a target as wide
# as its anchor gives log 0 = -∞, and any narrower target takes the log of a negative number.

# %%
widths = np.array([5.0, 10.0, 20.0])  # anchor width w' = 10
with np.errstate(divide="ignore", invalid="ignore"):
    wrong = np.log((widths - 10) / 10)
right = np.log(widths / 10)
for w, bad, good in zip(widths, wrong, right):
    print(f"w = {w:4.1f}:  log((w - w') / w') = {bad:+.3f}   log(w / w') = {good:+.3f}")

# %% [markdown]
# Even where it is defined, it is not what decode inverts: decode computes w = w' · exp(dw),
# so feeding it log((w - w') / w') = log 1 = 0 for a target twice as wide returns the anchor's
# width, not the target's.

# %% [markdown]
# ## Your turn: encode and decode
#
# Write `encode_boxes` and then `decode_boxes` yourself, replacing each stub's
# `raise NotImplementedError`, and run the check after each. The cases include the hand
# example of section 1, the head's weights (10, 10, 5, 5), targets smaller than their
# anchor, deltas that need the clamp (and one that does not, because of the weights),
# several classes per row, and random proposals. `hint("encode_boxes")` and
# `hint("decode_boxes")` give hints, more at each call; the last one is the solution.

# %%
def encode_boxes(anchors, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    """The deltas that move each anchor onto its target (torchvision's BoxCoder.encode).
    anchors (N, 4) and targets (N, 4): (x1, y1, x2, y2) with positive widths and heights;
    weights (wx, wy, ww, wh). With w = x2 - x1, cx = x1 + 0.5 * w (same for h, cy):
    dx = wx * (gx - ax) / aw, dy = wy * (gy - ay) / ah, dw = ww * log(gw / aw),
    dh = wh * log(gh / ah), where a is the anchor and g its target.
    Returns deltas (N, 4) float: columns (dx, dy, dw, dh).
    """
    raise NotImplementedError  # replace this line with your code

# %%
from mrcnn_edu.exercises import check, hint

check("encode_boxes", encode_boxes)

# %%
def decode_boxes(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Apply deltas to anchors: the inverse of encode_boxes (torchvision's BoxCoder.decode).
    anchors (N, 4) (x1, y1, x2, y2); deltas (N, 4 * C): C boxes per anchor, columns
    (dx, dy, dw, dh) repeated; weights (wx, wy, ww, wh). With aw = x2 - x1,
    ax = x1 + 0.5 * aw: cx = dx / wx * aw + ax, w = aw * exp(min(dw / ww, log(1000 / 16)))
    (same for y and h); the box is (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2).
    Returns boxes (N, 4 * C) float, laid out like deltas.
    """
    raise NotImplementedError  # replace this line with your code

# %%
check("decode_boxes", decode_boxes)


# %% [markdown]
# ## Summary
#
# - encode: dx = wx (gx - ax) / aw, dy likewise, dw = ww log(gw / aw), dh likewise; centres at
#   x1 + w / 2, widths x2 - x1. decode inverts it.
# - Log space makes size changes symmetric and decoded widths positive; dividing by the anchor's
#   size makes deltas scale-invariant.
# - RPN weights (1, 1, 1, 1); box head (10, 10, 5, 5) to bring small refinements to unit scale.
# - decode clamps dw / ww, dh / wh at log(1000 / 16): decode undoes encode except there. The
#   clamp keeps `exp` finite (float16 overflows above 11.1, float32 above 88.7) and a box
#   within 62.5 times its anchor; the losses, on deltas, never see it.
#
# ## Exercises
#
# 1. Prove that the deltas are unchanged when anchor and target are both scaled by s > 0 and
#    both shifted by the same (tx, ty).
# 2. With weights (10, 10, 5, 5), what raw network output is needed to move a proposal by half
#    its width?
# 3. Why does the clamp act only on dw and dh, not on dx and dy?
# 4. Detectron (v1) used w = x2 - x1 + 1 and x2 = cx + w / 2 - 1. Encode the hand example with
#    that convention and compare.
